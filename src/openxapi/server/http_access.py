"""Who may use an HTTP transfer endpoint, and the task it reports on — as the reference.

Credentials are taken in the reference's order: a ``session_id`` cookie, the
``session_id`` query parameter, then HTTP Basic auth (a session made for the one request
and closed after it); on the unix socket a request without credentials is the local
superuser. Each endpoint names its permission (``http/<action>``) with the roles that
hold it, checked like an RPC's. A ``task_id`` query parameter names a task the client
made to follow the transfer; without one the server makes its own. Refusals answer 401 or
403 and, where a task was named, fail it with the reference's error.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.dispatch import Dispatcher
from openxapi.api.tasks import Tasks
from openxapi.errors import ApiError
from openxapi.http.message import BodyStream, Request, Response, text_response
from openxapi.storage.xva_format import premature_end

#: Roles holding each HTTP permission (the reference's minimum role and those above it).
VM_ADMIN_AND_UP = frozenset({"pool-admin", "pool-operator", "vm-power-admin", "vm-admin"})
HTTP_PERMISSIONS: dict[str, frozenset[str]] = {
    "put_import_raw_vdi": VM_ADMIN_AND_UP,
    "get_export_raw_vdi": VM_ADMIN_AND_UP,
    "put_import": VM_ADMIN_AND_UP,
    "get_export": VM_ADMIN_AND_UP,
}


@dataclass
class HttpCall:
    """An authorised transfer: the caller's context (``ctx.task`` is its task)."""

    ctx: CallContext
    temporary_session: bool

    @property
    def task(self) -> str:
        return self.ctx.task


class Refused(Exception):
    """A request refused before any transfer; ``response`` is the reply to send."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def named_object(state: Any, req: Request, cls: str, ref_key: str, uuid_key: str) -> str | None:
    """The object a transfer names by ref (``ref_key``) or uuid (``uuid_key``) in its query,
    None when it names none; HANDLE_INVALID / UUID_INVALID as the reference for bad ones."""
    ref = req.query.get(ref_key, "")
    if ref:
        if state.store.get(cls, ref) is None:
            raise ApiError("HANDLE_INVALID", cls, ref)
        return ref
    uuid = req.query.get(uuid_key, "")
    if uuid:
        found = state.store.ref_of_uuid(cls, uuid)
        if found is None:
            raise ApiError("UUID_INVALID", cls, uuid)
        return str(found)
    return None


def _cookie_session(req: Request) -> str:
    raw = req.headers.get("cookie", "")
    if not raw:
        return ""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return ""
    morsel = jar.get("session_id")
    return morsel.value if morsel is not None else ""


def _basic(req: Request) -> tuple[str, str] | None:
    value = req.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        text = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = text.partition(":")
    return (user, password) if sep else None


class HttpAccess:
    """Session, role and task handling shared by the transfer endpoints."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.state = dispatcher.state

    @property
    def tasks(self) -> Tasks:
        return self.dispatcher.tasks

    def _named_task(self, req: Request) -> str:
        task = req.query.get("task_id", "")
        if task and self.state.store.get("task", task) is None:
            raise Refused(text_response(404, f"task {task} not found"))
        return task

    def fail(self, task: str, error: ApiError) -> None:
        if task:
            self.tasks.fail(task, error)

    async def begin(self, req: Request, action: str, label: str) -> HttpCall:
        """Authenticate and authorise ``req`` for ``http/<action>`` and settle its task;
        raises :class:`Refused` with the reply to send otherwise."""
        task = self._named_task(req)
        ctx = CallContext(
            transport=req.transport,
            peer=req.peer,
            user_agent=req.headers.get("user-agent", ""),
        )
        temporary = False
        session = _cookie_session(req) or req.query.get("session_id", "")
        sessions = self.dispatcher.sessions
        try:
            if session:
                sessions.check(session, ctx)
            else:
                creds = _basic(req)
                if creds is None and req.transport == "unix":
                    creds = ("root", "")
                if creds is None:
                    raise ApiError("SESSION_AUTHENTICATION_FAILED")
                login_ctx = CallContext(transport=req.transport, peer=req.peer)
                ref = await self.dispatcher.call(
                    "session.login_with_password",
                    [creds[0], creds[1], "1.0", "openxapi-http"],
                    login_ctx,
                )
                sessions.check(ref, ctx)
                temporary = True
        except ApiError:
            self.fail(task, ApiError("SESSION_AUTHENTICATION_FAILED"))
            await self.state.store.sync()
            resp = text_response(401, "Unauthorized")
            resp.headers.append(("WWW-Authenticate", 'Basic realm="xapi"'))
            raise Refused(resp) from None
        call = HttpCall(ctx, temporary)
        permission = f"http/{action}"
        allowed = HTTP_PERMISSIONS.get(action, frozenset())
        if not ctx.is_superuser and not ctx.roles.intersection(allowed):
            roles = ", ".join(sorted(allowed))
            self.fail(
                task,
                ApiError(
                    "RBAC_PERMISSION_DENIED",
                    permission,
                    f"No permission in user session. (Roles with this permission: {roles})",
                ),
            )
            self.end(call)
            await self.state.store.sync()
            raise Refused(text_response(403, "Forbidden"))
        ctx.task = task or self.tasks.create(label, "", ctx)
        await self.state.store.sync()
        return call

    def end(self, call: HttpCall) -> None:
        """Close the session made for a Basic-auth request."""
        if call.temporary_session and call.ctx.session:
            self.dispatcher.sessions.close(call.ctx.session)

    def succeed(self, call: HttpCall, result: Any) -> None:
        self.tasks.succeed(call.task, result)

    def refuse(self, call: HttpCall, status: int, error: ApiError) -> Response:
        """Fail the call's task with ``error`` and answer ``status``."""
        self.fail(call.task, error)
        self.end(call)
        resp = text_response(status, " ".join(error.description()))
        resp.headers.append(("task-id", call.task))
        return resp


class UploadBody:
    """An upload's body as a byte source (for the XVA and migration readers); one cut
    short is a premature end, not a clean one."""

    def __init__(self, stream: BodyStream) -> None:
        self.stream = stream

    async def read(self, n: int = 65536) -> bytes:
        data = await self.stream.read(n)
        if not data and self.stream.truncated:
            raise premature_end()
        return data
