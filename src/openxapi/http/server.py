"""The HTTP server: listeners (TCP, TLS, unix socket) sharing one router and one set of limits.

Built directly on asyncio protocols rather than a framework because xapi's clients need
things frameworks refuse (an HTTP/1.0 PUT whose body runs to end-of-connection, CONNECT
tunnels routed by path) and because the RPC path must stay cheap per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import ssl as _ssl
import stat
from pathlib import Path

from openxapi.http.connection import HttpConnection, Shared
from openxapi.http.limits import Limits, RateLimiter
from openxapi.http.router import Router

_BACKLOG = 1024


class HttpServer:
    """Serves one router on any number of listeners until `close()`."""

    def __init__(self, router: Router, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.router = router
        self._shared = Shared(
            router, self.limits, RateLimiter(self.limits.rate_per_second, self.limits.rate_burst)
        )
        self._servers: list[asyncio.AbstractServer] = []
        self._tcp_ports: list[int] = []
        self._unix_files: list[tuple[Path, int]] = []

    @property
    def ports(self) -> list[int]:
        """Bound TCP ports, in the order the listeners were started."""
        return list(self._tcp_ports)

    @property
    def connections(self) -> int:
        """Open connections, counting one a handler took over until that handler returns."""
        return len(self._shared.connections)

    async def start_tcp(self, host: str, port: int, ssl: _ssl.SSLContext | None = None) -> int:
        """Listen on `host`:`port` ("" or "::" for every address, IPv4 and IPv6); TLS if
        `ssl` is given. Returns the bound port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        kind = "https" if ssl is not None else "http"
        shared = self._shared

        def factory() -> HttpConnection:
            return HttpConnection(shared, kind)

        handshake = self.limits.header_total_timeout if ssl is not None else None
        if host in ("", "::"):
            sock = _listen_all(port)
            server = await loop.create_server(
                factory, sock=sock, ssl=ssl, backlog=_BACKLOG, ssl_handshake_timeout=handshake
            )
        else:
            server = await loop.create_server(
                factory,
                host,
                port,
                ssl=ssl,
                backlog=_BACKLOG,
                reuse_address=True,
                ssl_handshake_timeout=handshake,
            )
        self._servers.append(server)
        bound = int(server.sockets[0].getsockname()[1])
        self._tcp_ports.append(bound)
        return bound

    async def start_unix(self, path: str, mode: int = 0o600) -> None:
        """Listen on a unix socket at `path` with permissions `mode`, replacing a stale
        socket file left by an earlier run (but never a live one)."""
        loop = asyncio.get_running_loop()
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_socket(target)
        sock = _bind_unix(target, mode)
        shared = self._shared

        def factory() -> HttpConnection:
            return HttpConnection(shared, "unix")

        try:
            server = await loop.create_unix_server(factory, sock=sock, backlog=_BACKLOG)
        except BaseException:
            sock.close()
            raise
        self._servers.append(server)
        self._unix_files.append((target, os.stat(target).st_ino))

    async def close(self, grace: float | None = None) -> None:
        """Stop listening, close idle connections, give running handlers `grace` seconds
        (default `Limits.shutdown_grace`) to finish, then cancel what is left."""
        shared = self._shared
        shared.closing = True
        for server in self._servers:
            server.close()
        for conn in list(shared.connections):
            conn.close_if_idle()
        tasks = {c.task for c in shared.connections if c.task is not None}
        if tasks:
            wait = self.limits.shutdown_grace if grace is None else grace
            _, still_running = await asyncio.wait(tasks, timeout=wait)
            for task in still_running:
                task.cancel()
            if still_running:
                await asyncio.gather(*still_running, return_exceptions=True)
        for conn in list(shared.connections):
            conn.abort()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        for target, inode in self._unix_files:
            with contextlib.suppress(OSError):
                if os.stat(target).st_ino == inode:
                    target.unlink()
        self._unix_files.clear()


def _listen_all(port: int) -> socket.socket:
    """One dual-stack socket for every IPv4 and IPv6 address (IPv4 only if IPv6 is off)."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address: tuple[str, int] = ("0.0.0.0", port)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        address = ("::", port)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _remove_stale_socket(target: Path) -> None:
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a socket", str(target))
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(target))
    except OSError:
        target.unlink()
    else:
        raise OSError(errno.EADDRINUSE, "a server is already listening", str(target))
    finally:
        probe.close()


def _bind_unix(target: Path, mode: int) -> socket.socket:
    """Bind under a temporary name, set `mode`, then rename into place, so the socket is
    never reachable with looser permissions."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    temporary = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        if len(os.fsencode(temporary)) < 100:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            sock.bind(str(temporary))
            os.chmod(temporary, mode)
            os.rename(temporary, target)
        else:
            sock.bind(str(target))
            os.chmod(target, mode)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return sock
