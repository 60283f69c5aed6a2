"""Call dispatch: name → message → arity → parameters → session → RBAC → behaviour.

The order of checks is the reference's, so a client sees the same error for the same
mistake. Every failure leaves as an :class:`ApiError`; anything unexpected becomes
INTERNAL_ERROR and is logged, never a traceback on the wire.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from openxapi.api.coerce import CoercionError, coerce
from openxapi.api.context import CallContext
from openxapi.api.events import EventHub
from openxapi.api.generic import Generic
from openxapi.api.registry import Handler, handlers, not_implemented
from openxapi.api.sessions import sessions_of
from openxapi.api.state import ServerState
from openxapi.api.tasks import Tasks
from openxapi.errors import ApiError
from openxapi.spec import types as T
from openxapi.spec.model import Message

log = logging.getLogger("openxapi.api")

ASYNC_PREFIX = "Async."

# Classes whose hand-written behaviour needs the storage and domain backends attached.
BACKEND_CLASSES = frozenset(
    {"VM", "VDI", "VBD", "SR", "PBD", "SM", "VIF", "network", "PIF", "VLAN", "Bond", "tunnel"}
)


@dataclass(slots=True)
class Bound:
    """A message with its behaviour and precomputed parameter converters."""

    msg: Message
    handler: Handler | None
    converters: list[Callable[[Any], Any]]
    defaults: list[Any]
    required: int
    total: int
    waits_for_backends: bool = False


def _converter(t: T.Type, name: str, enums: dict[str, list[str]]) -> Callable[[Any], Any]:
    if t == T.STRING or isinstance(t, T.Ref):

        def conv_str(v: Any) -> Any:
            if type(v) is str:
                return v
            if isinstance(v, str):
                return str(v)
            raise ApiError("FIELD_TYPE_ERROR", name)

        return conv_str

    def conv(v: Any) -> Any:
        try:
            return coerce(v, t, enums)
        except (CoercionError, RecursionError):
            raise ApiError("FIELD_TYPE_ERROR", name) from None

    return conv


class Dispatcher:
    """Routes wire calls to behaviour; one per server."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        api = state.api
        self.generic = Generic(api)
        state.extras["generic"] = self.generic
        generic = self.generic.build()
        custom = handlers()
        missing = not_implemented()
        self.bound: dict[str, Bound] = {}
        unhandled: list[str] = []
        for wire, msg in api.messages.items():
            h = custom.get(wire) or generic.get(wire)
            if h is None and msg.lifecycle != "removed" and wire not in missing:
                unhandled.append(wire)
            convs = [_converter(p.type, p.name, api.enums) for p in msg.params]
            self.bound[wire] = Bound(
                msg,
                h,
                convs,
                [p.default for p in msg.params],
                msg.required_count,
                len(msg.params),
                waits_for_backends=wire in custom and msg.cls in BACKEND_CLASSES,
            )
        stray = [w for w in custom if w not in api.messages]
        if stray:
            raise RuntimeError(f"handlers for messages not in the description: {stray}")
        self.unhandled = sorted(unhandled)
        self.aliases: dict[str, str] = {}
        for wire in api.messages:
            alias = wire.replace(".", "_", 1)
            self.aliases.setdefault(alias, wire)
        self.method_list = sorted(api.messages)
        self.sessions = sessions_of(state)
        self.tasks = Tasks(state)
        state.extras["tasks"] = self.tasks
        self.events = EventHub(state)
        # Set by the server while its storage and domain backends start in the background:
        # behaviour that needs them waits; logins, reads and events do not.
        self.backends_ready: asyncio.Event | None = None

    def lookup(self, name: str) -> Bound | None:
        b = self.bound.get(name)
        if b is None:
            alias = self.aliases.get(name)
            if alias is not None:
                b = self.bound[alias]
        return b

    async def call(self, name: str, params: list[Any], ctx: CallContext) -> Any:
        """Run one call; returns the result value or raises ApiError."""
        try:
            return await self._call(name, params, ctx)
        except ApiError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug must not reach the client as a traceback
            log.exception("internal error in %s", name)
            raise ApiError("INTERNAL_ERROR", f"{type(e).__name__}: {e}") from None

    async def _call(self, name: str, params: list[Any], ctx: CallContext) -> Any:
        if name.startswith("system."):
            return self._system(name, params)
        is_async = name.startswith(ASYNC_PREFIX)
        sync_name = name[len(ASYNC_PREFIX) :] if is_async else name
        b = self.bound.get(sync_name) if is_async else self.lookup(sync_name)
        if b is None:
            if params:
                self.sessions.check(params[0], ctx)
                from openxapi.api.handlers.host_plugins import call_unknown_message

                return await call_unknown_message(self.state, ctx, name, params)
            raise ApiError("MESSAGE_METHOD_UNKNOWN", name)
        msg = b.msg
        if is_async and not msg.is_async:
            raise ApiError("Fault", f"No async mode for this operation (rpc: {sync_name})")
        args = params[1:] if msg.session else params
        n = len(args)
        if (msg.session and not params) or n < b.required or n > b.total:
            raise ApiError("MESSAGE_PARAMETER_COUNT_MISMATCH", msg.wire_name, b.required, max(n, 0))
        values = [conv(v) for conv, v in zip(b.converters, args, strict=False)]
        if n < b.total:
            for d in b.defaults[n:]:
                values.append(d.copy() if isinstance(d, (dict, list)) else d)
        ctx.wire_name = msg.wire_name
        if msg.session:
            self.sessions.check(params[0], ctx)
            self.sessions.authorise(msg, ctx, msg.wire_name)
        if msg.lifecycle == "removed":
            raise ApiError("MESSAGE_REMOVED")
        h = b.handler
        if h is None:
            raise ApiError("NOT_IMPLEMENTED", msg.wire_name)
        router = self.state.extras.get("session_router")  # database sessions (DR)
        if router is not None and msg.session:
            h = router(ctx, msg, h)
        ready = self.backends_ready
        if ready is not None and b.waits_for_backends and not ready.is_set():
            await ready.wait()
        if is_async:
            return await self.tasks.run_async(f"Async.{msg.wire_name}", h, values, ctx)
        if msg.is_async:
            # As the reference: a real, transient task row for the length of the call.
            return await self.tasks.run_sync(msg.wire_name, h, values, ctx)
        return await h(self.state, ctx, *values)

    def _system(self, name: str, params: list[Any]) -> Any:
        if name == "system.listMethods":
            return self.method_list
        if name.startswith("system.isAlive"):
            return params[0] if params else ""
        raise ApiError("MESSAGE_METHOD_UNKNOWN", name)
