"""event: event.from with durable tokens, inject, and the legacy register / next API."""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.events import events_of
from openxapi.api.registry import handler
from openxapi.api.state import ServerState


@handler("event.from")
async def event_from(
    state: ServerState, ctx: CallContext, classes: list[str], token: str, timeout: float
) -> Any:
    return await events_of(state).event_from(ctx, classes, token, timeout)


@handler("event.inject")
async def inject(state: ServerState, ctx: CallContext, cls: str, ref: str) -> Any:
    return await events_of(state).inject(cls, ref)


@handler("event.get_current_id")
async def get_current_id(state: ServerState, ctx: CallContext) -> Any:
    return events_of(state).current_id


@handler("event.register")
async def register(state: ServerState, ctx: CallContext, classes: list[str]) -> Any:
    events_of(state).register(ctx.session, classes)
    return ""


@handler("event.unregister")
async def unregister(state: ServerState, ctx: CallContext, classes: list[str]) -> Any:
    events_of(state).unregister(ctx.session, classes)
    return ""


@handler("event.next")
async def next_events(state: ServerState, ctx: CallContext) -> Any:
    return await events_of(state).next(ctx)
