"""``CONNECT /console``: a VM's graphical console (RFB) tunnelled through the API port.

As in the reference, the console is named by ``ref`` or ``uuid`` of a console or of a VM
(then its ``rfb`` console); credentials are a ``session_id`` cookie or query parameter or
HTTP Basic auth. A guest console needs vm-operator or a higher role, the control domain's
pool-admin. The VM must be running on this host. The server answers ``200 OK`` and from
then on relays bytes both ways between the client and the domain's RFB server until one
side closes, which closes the other. Refusals are plain HTTP statuses: 400 without a
console named, 401 without a valid session, 403 for a role too weak, 404 for a console
that is unknown or not running here, 503 when the pool limits console sessions to one per
VM and another is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass

from openxapi.api.consoles import console_target, default_console
from openxapi.api.context import CallContext
from openxapi.api.dispatch import Dispatcher
from openxapi.errors import ApiError
from openxapi.http.message import Request, Response, text_response
from openxapi.http.router import Router
from openxapi.server.http_access import _basic, _cookie_session

log = logging.getLogger("openxapi.console")

#: Roles allowed ``http/connect_console`` (vm-operator and every role above it).
CONSOLE_ROLES = frozenset(
    {"pool-admin", "pool-operator", "vm-power-admin", "vm-admin", "vm-operator"}
)
#: Roles allowed ``http/connect_console/host_console`` (the control domain's consoles).
HOST_CONSOLE_ROLES = frozenset({"pool-admin"})
CHUNK = 65536


class _Refusal(Exception):
    """The request is refused with ``response`` before any tunnel exists."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _refuse(status: int, text: str) -> _Refusal:
    resp = text_response(status, text)
    resp.headers.append(("Connection", "close"))
    return _Refusal(resp)


@dataclass(frozen=True, slots=True)
class _Caller:
    ctx: CallContext
    temporary_session: bool


async def _open(target: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to an RFB server at ``unix:PATH`` or ``HOST:PORT``."""
    if target.startswith("unix:"):
        return await asyncio.open_unix_connection(target[len("unix:") :])
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise OSError(f"bad console address {target!r}")
    return await asyncio.open_connection(host.strip("[]") or "127.0.0.1", int(port))


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    while data := await src.read(CHUNK):
        dst.write(data)
        await dst.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


async def relay(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    console: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Copy bytes both ways until either side ends; then both are closed."""
    pumps = [
        asyncio.create_task(_pump(client[0], console[1])),
        asyncio.create_task(_pump(console[0], client[1])),
    ]
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        await _close(console[1])
        await _close(client[1])


class ConsoleTunnel:
    """The ``/console`` handler bound to one dispatcher."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.state = dispatcher.state
        #: Open tunnels per VM, for the pool's limit_console_sessions.
        self.open_sessions: Counter[str] = Counter()

    def install(self, router: Router) -> None:
        router.add("/console", self.connect, methods={"CONNECT"})

    async def connect(self, req: Request) -> Response:
        try:
            caller = await self._authenticate(req)
        except _Refusal as e:
            return e.response
        try:
            return await self._serve(req, caller.ctx)
        except _Refusal as e:
            return e.response
        finally:
            if caller.temporary_session and caller.ctx.session:
                self.dispatcher.sessions.close(caller.ctx.session)
                await self.state.store.sync()

    # ---- who is asking --------------------------------------------------------------------
    async def _authenticate(self, req: Request) -> _Caller:
        ctx = CallContext(
            transport=req.transport, peer=req.peer, user_agent=req.headers.get("user-agent", "")
        )
        sessions = self.dispatcher.sessions
        session = _cookie_session(req) or req.query.get("session_id", "")
        try:
            if session:
                sessions.check(session, ctx)
                return _Caller(ctx, False)
            creds = _basic(req)
            if creds is None and req.transport == "unix":
                creds = ("root", "")
            if creds is None:
                raise ApiError("SESSION_AUTHENTICATION_FAILED")
            ref = await self.dispatcher.call(
                "session.login_with_password",
                [creds[0], creds[1], "1.0", "openxapi-console"],
                CallContext(transport=req.transport, peer=req.peer),
            )
            sessions.check(ref, ctx)
            return _Caller(ctx, True)
        except ApiError:
            resp = text_response(401, "Unauthorized")
            resp.headers.append(("WWW-Authenticate", 'Basic realm="xapi"'))
            resp.headers.append(("Connection", "close"))
            raise _Refusal(resp) from None
        finally:
            await self.state.store.sync()

    @staticmethod
    def _authorise(ctx: CallContext, roles: frozenset[str]) -> None:
        if not ctx.is_superuser and not ctx.roles.intersection(roles):
            raise _refuse(403, "Forbidden")

    # ---- which console ----------------------------------------------------------------------
    def _console(self, req: Request) -> str:
        """The console the request names (a VM's name stands for its rfb console)."""
        st = self.state
        uuid = req.query.get("uuid", "")
        ref = req.query.get("ref", "")
        if uuid:
            vm = st.store.ref_of_uuid("VM", uuid)
            if vm is not None:
                return self._vm_console(vm)
            console = st.store.ref_of_uuid("console", uuid)
            if console is None:
                raise _refuse(404, f"no VM or console has uuid {uuid}")
            return console
        if ref:
            if st.store.get("VM", ref) is not None:
                return self._vm_console(ref)
            if st.store.get("console", ref) is None:
                raise _refuse(404, f"{ref} is neither a VM nor a console")
            return ref
        raise _refuse(400, "the request names no console: give ref or uuid")

    def _vm_console(self, vm: str) -> str:
        console = default_console(self.state, vm)
        if not console:
            raise _refuse(404, f"VM {vm} has no graphical console")
        return console

    # ---- the tunnel -------------------------------------------------------------------------
    async def _serve(self, req: Request, ctx: CallContext) -> Response:
        st = self.state
        self._authorise(ctx, CONSOLE_ROLES)
        console = self._console(req)
        vm_ref = st.record("console", console)["VM"]
        vm = st.store.get("VM", vm_ref)
        if vm is None:
            raise _refuse(404, f"console {console} belongs to no VM")
        if vm["is_control_domain"]:
            self._authorise(ctx, HOST_CONSOLE_ROLES)
        if vm["power_state"] != "Running" or vm["resident_on"] != st.host_ref:
            raise _refuse(404, f"VM {vm['uuid']} is not running on this host")
        target = await console_target(st, console)
        if not target:
            raise _refuse(404, f"VM {vm['uuid']} has no console to connect to")
        if self._limited() and self.open_sessions[vm_ref] > 0:
            raise _refuse(503, "Connection Limit Exceeded")
        try:
            upstream = await _open(target)
        except OSError as e:
            log.warning("console of VM %s at %s is unreachable: %s", vm["uuid"], target, e)
            raise _refuse(404, f"the console of VM {vm['uuid']} is unreachable") from None
        self.open_sessions[vm_ref] += 1
        try:
            try:
                client = await req.take_over(200)
            except ConnectionError:  # the client left before the tunnel opened
                await _close(upstream[1])
                return Response(200)
            log.debug("console tunnel to VM %s opened", vm["uuid"])
            await relay(client, upstream)
            log.debug("console tunnel to VM %s closed", vm["uuid"])
        finally:
            self.open_sessions[vm_ref] -= 1
            if self.open_sessions[vm_ref] <= 0:
                del self.open_sessions[vm_ref]
        return Response(200)

    def _limited(self) -> bool:
        pool = self.state.store.get("pool", self.state.pool_ref)
        return bool(pool is not None and pool.get("limit_console_sessions"))


def install(router: Router, dispatcher: Dispatcher) -> None:
    """Route ``CONNECT /console``."""
    ConsoleTunnel(dispatcher).install(router)
