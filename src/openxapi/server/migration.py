"""``/services/xenops/<action>``: this host's side of a cross-pool migration, for senders.

Reached through the ``xenops`` URL of host.migrate_receive's dest map, with its session;
the caller needs a role that may call host.migrate_receive. Actions (query ``vm`` names the
VM made here): ``check`` (POST, the sender's description of the VM as JSON: the dry run),
``import`` (PUT, the XVA stream, query ``restore``), ``image`` (PUT, a suspended VM's
memory image its backend keeps aside from the VDI), ``incoming``, ``finish``,
``complete`` and ``abort`` (POST). Answers are JSON: ``{"value": ...}`` or, with status
500, ``{"error": [code, params...]}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from openxapi.api import migrate_receiver
from openxapi.api.context import CallContext
from openxapi.api.dispatch import Dispatcher
from openxapi.errors import ApiError
from openxapi.http.message import Request, Response
from openxapi.http.router import Router
from openxapi.server.http_access import UploadBody

log = logging.getLogger("openxapi.migrate")

PREFIX = "/services/xenops"
#: Largest JSON body a POST action takes.
BODY_LIMIT = 1 << 20
JSON = [("Content-Type", "application/json")]


def _answer(status: int, doc: dict[str, Any]) -> Response:
    return Response(status, list(JSON), json.dumps(doc).encode())


class MigrationService:
    """The actions, bound to one dispatcher."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.state = dispatcher.state
        self.actions: dict[str, Callable[[Request], Awaitable[Any]]] = {
            "check": self._check,
            "import": self._import,
            "image": self._image,
            "incoming": self._incoming,
            "finish": self._finish,
            "complete": self._complete,
            "abort": self._abort,
        }

    def install(self, router: Router) -> None:
        router.add(PREFIX, self.handle, methods={"POST", "PUT"}, stream=True)

    def _authorise(self, req: Request) -> None:
        ctx = CallContext(transport=req.transport, peer=req.peer)
        self.dispatcher.sessions.check(req.query.get("session_id", ""), ctx)
        roles = self.state.api.messages["host.migrate_receive"].roles
        if not ctx.is_superuser and not ctx.roles.intersection(roles):
            raise ApiError(
                "RBAC_PERMISSION_DENIED",
                "host.migrate_receive",
                f"No permission in user session. (Roles with this permission: {', '.join(roles)})",
            )

    async def handle(self, req: Request) -> Response:
        action = req.path[len(PREFIX) :].strip("/")
        run = self.actions.get(action)
        if run is None:
            return _answer(404, {"error": ["MESSAGE_METHOD_UNKNOWN", f"{PREFIX}/{action}"]})
        try:
            self._authorise(req)
            ready = self.dispatcher.backends_ready
            if ready is not None:
                await ready.wait()
            value = await run(req)
        except ApiError as e:
            return _answer(500, {"error": e.description()})
        except Exception as e:
            log.exception("migration service: %s failed", action)
            return _answer(500, {"error": ["INTERNAL_ERROR", f"{type(e).__name__}: {e}"]})
        return _answer(200, {"value": value})

    def _vm(self, req: Request) -> str:
        vm = req.query.get("vm", "")
        self.state.record("VM", vm)
        return vm

    async def _json(self, req: Request) -> dict[str, Any]:
        assert req.stream is not None
        try:
            doc = json.loads(await req.stream.read_all(BODY_LIMIT))
        except ValueError:
            raise ApiError("INTERNAL_ERROR", "a malformed migration request") from None
        if not isinstance(doc, dict):
            raise ApiError("INTERNAL_ERROR", "a malformed migration request")
        return doc

    async def _check(self, req: Request) -> Any:
        await migrate_receiver.check(self.state, await self._json(req))
        return ""

    async def _import(self, req: Request) -> Any:
        assert req.stream is not None
        restore = req.query.get("restore", "") == "true"
        return await migrate_receiver.receive(self.state, UploadBody(req.stream), restore)

    async def _image(self, req: Request) -> Any:
        assert req.stream is not None
        data = await req.stream.read_all()
        await migrate_receiver.image(self.state, self._vm(req), data)
        return ""

    async def _incoming(self, req: Request) -> Any:
        return await migrate_receiver.incoming(self.state, self._vm(req))

    async def _finish(self, req: Request) -> Any:
        return await migrate_receiver.finish(self.state, self._vm(req))

    async def _complete(self, req: Request) -> Any:
        await migrate_receiver.complete(self.state, self._vm(req))
        return ""

    async def _abort(self, req: Request) -> Any:
        vm = req.query.get("vm", "")
        if self.state.store.get("VM", vm) is not None:
            await migrate_receiver.abort(self.state, vm)
        return ""


def install(router: Router, dispatcher: Dispatcher) -> None:
    """Route ``/services/xenops``."""
    MigrationService(dispatcher).install(router)
