"""Start and stop one openxapi server: store, API state, listeners, background duties.

Start-up does only what logins need (store load, first-start objects, listeners), so the
server answers within seconds; slow probing belongs to background tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openxapi.api.bootstrap import ensure_world, sync_subjects
from openxapi.api.dispatch import Dispatcher
from openxapi.api.gc import collect_periodically
from openxapi.api.sessions import sessions_of
from openxapi.api.state import ServerState
from openxapi.api.vm_domains import start_domains, stop_domains
from openxapi.auth.accounts import AccountBook
from openxapi.config import Config
from openxapi.db.store import Store
from openxapi.http.limits import Limits
from openxapi.http.router import Router
from openxapi.http.server import HttpServer
from openxapi.http.tls import ensure_self_signed, server_context
from openxapi.server import console_tunnel
from openxapi.server.memory import release_free_memory
from openxapi.server.rpc import RpcEndpoints
from openxapi.spec.model import load

log = logging.getLogger("openxapi")


async def _start_storage(state: ServerState) -> None:
    """Attach the SRs plugged on this host (and scan them) before answering calls."""
    from openxapi.api.storage_setup import start_storage

    await start_storage(state)


async def _start_network(state: ServerState) -> None:
    """Real VMs get real host networking: bridges and taps inside network namespaces, and
    the NAT network restricted unless the administrator allows guests out."""
    import dataclasses

    from openxapi.api.handlers.network import POLICY_KEY, policy_of, use_linux_backend
    from openxapi.api.vm_domains import domains_of

    if domains_of(state).backend.name != "qemu":
        return
    await use_linux_backend(state)
    policy = dataclasses.replace(policy_of(state), restrict_nat=not state.config.guest_nat)
    state.extras[POLICY_KEY] = policy


def _install_storage_routes(router: Router, dispatcher: Dispatcher) -> None:
    """``/import_raw_vdi``, ``/export_raw_vdi``, ``/import`` and ``/export``; and
    ``/services/xenops`` (receiving migrations)."""
    from openxapi.server import migration, raw_vdi, xva

    raw_vdi.install(router, dispatcher)
    xva.install(router, dispatcher)
    migration.install(router, dispatcher)


class AlreadyRunning(RuntimeError):
    """Another server holds this data directory."""


@dataclass
class Listener:
    kind: str  # "http" | "https" | "unix"
    address: str
    port: int = 0


@dataclass
class App:
    """One server instance. ``start()`` returns once it accepts calls."""

    config: Config
    root_password: str | None = None
    generated_password: str | None = None
    listeners: list[Listener] = field(default_factory=list)
    state: ServerState | None = None
    _lock_fd: int | None = None
    _http: HttpServer | None = None
    _store: Store | None = None
    _background: list[asyncio.Task[None]] = field(default_factory=list)
    _backends: asyncio.Task[None] | None = None

    async def start(self) -> None:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock()
        api = load()
        self._store = store = Store(api, cfg.db_path, durable=cfg.durable)
        await store.open()
        gc.freeze()  # loaded records live for the process: keep them out of GC passes
        book = AccountBook(cfg.data_dir)
        loop = asyncio.get_running_loop()
        self.generated_password = await loop.run_in_executor(
            None, book.ensure_root, self.root_password
        )
        state = ServerState(api, store, cfg)
        state.extras["accounts"] = book
        state.extras["sync_subjects"] = lambda: sync_subjects(state, book)
        dispatcher = Dispatcher(state)
        ensure_world(state, book)
        dispatcher.tasks.fail_interrupted()
        await store.sync()
        self.state = state
        self._ensure_pool_secret()
        router = Router()
        RpcEndpoints(dispatcher).install(router)
        _install_storage_routes(router, dispatcher)
        console_tunnel.install(router, dispatcher)
        limits = Limits(
            max_connections_per_address=cfg.max_connections_per_address,
            rate_per_second=cfg.request_rate,
            rate_burst=cfg.request_burst,
        )
        self._http = http = HttpServer(router, limits)
        # Logins and reads are answered at once; SRs are attached and surviving domains
        # re-adopted in the background, and calls that need them wait (Dispatcher).
        dispatcher.backends_ready = ready = asyncio.Event()
        await self._listen(http)
        self._backends = asyncio.create_task(self._start_backends(state, ready))
        self._background.append(self._backends)
        self._background.append(asyncio.create_task(self._housekeeping(state, book)))
        self._background.append(asyncio.create_task(collect_periodically(state)))

    async def _start_backends(self, state: ServerState, ready: asyncio.Event) -> None:
        try:
            await _start_storage(state)
            await _start_network(state)
            await start_domains(state)
            from openxapi.api.dr_replication import resume_replication

            await resume_replication(state)
        except Exception:
            log.exception("starting the storage and domain backends failed")
        finally:
            ready.set()
        await state.store.sync()
        release_free_memory()  # the re-adoption burst's record copies are garbage now

    async def wait_backends(self) -> None:
        """Return once the background start of storage and domains has finished."""
        if self._backends is not None:
            await asyncio.shield(self._backends)

    async def _listen(self, http: HttpServer) -> None:
        cfg = self.config
        if cfg.https_port:
            hostname = socket.gethostname()
            created = ensure_self_signed(
                cfg.tls_cert, cfg.tls_key, [hostname, "localhost"], ["127.0.0.1", "::1"]
            )
            if created:
                log.info("created a self-signed certificate at %s", cfg.tls_cert)
            ctx = server_context(cfg.tls_cert, cfg.tls_key)
            port = await http.start_tcp(cfg.listen, cfg.https_port, ssl=ctx)
            self.listeners.append(Listener("https", cfg.listen or "*", port))
        if cfg.http_port:
            host = cfg.http_listen if cfg.http_listen is not None else (cfg.listen or "127.0.0.1")
            port = await http.start_tcp(host, cfg.http_port)
            self.listeners.append(Listener("http", host or "*", port))
        sock = cfg.socket_path
        sock.parent.mkdir(parents=True, exist_ok=True)
        await http.start_unix(str(sock), mode=0o600)
        self.listeners.append(Listener("unix", str(sock)))

    def _lock(self) -> None:
        path = self.config.data_dir / "server.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(f"another openxapi server uses {self.config.data_dir}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _ensure_pool_secret(self) -> None:
        path = self.config.pool_secret_path
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))

    async def _housekeeping(self, state: ServerState, book: AccountBook) -> None:
        """Expire idle sessions and mirror account changes made by the command line."""
        interval = min(self.config.session_gc_interval, 5.0)
        elapsed = 0.0
        while True:
            await asyncio.sleep(interval)
            elapsed += interval
            try:
                if book.reload():
                    sync_subjects(state, book)
                if elapsed >= self.config.session_gc_interval:
                    elapsed = 0.0
                    sessions_of(state).expire_idle()
                    release_free_memory()
                await state.store.sync()
            except Exception:
                log.exception("housekeeping failed")

    async def stop(self) -> None:
        for t in self._background:
            t.cancel()
        for t in self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._background.clear()
        if self.state is not None:
            events: Any = self.state.extras.get("events")
            if events is not None:
                events.release_all()  # long polls answer now instead of holding up the stop
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self.state is not None:
            tasks: Any = self.state.extras.get("tasks")
            if tasks is not None:
                for t in list(tasks.running.values()):
                    t.cancel()
        if self.state is not None:
            from openxapi.api.dr_replication import stop_replication

            await stop_replication(self.state)
            await stop_domains(self.state)
        if self._store is not None:
            await self._store.close()
            self._store = None
        with contextlib.suppress(OSError):
            Path(self.config.socket_path).unlink()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
