"""message: alerts for the administrator (storage-network-http.md §3.1).

Results list the newest message first, as the reference's do.
"""

from __future__ import annotations

from typing import Any

from openxapi.api import messages as M
from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.db.where import UnknownColumnError, WhereSyntaxError, compile_for_class
from openxapi.errors import ApiError
from openxapi.spec.values import DateTime, parse_datetime


def _unix(value: str) -> float:
    stamp = value if isinstance(value, DateTime) else parse_datetime(value)
    return stamp.to_datetime().timestamp()


def _records(state: ServerState, ctx: CallContext, refs: list[str]) -> dict[str, Any]:
    table = state.store.table(M.MESSAGE)
    enc = state.cache.encoded
    return {ref: enc(ref, table[ref], ctx.codec) for ref in refs}


@handler("message.create")
async def create(
    state: ServerState,
    ctx: CallContext,
    name: str,
    priority: int,
    cls: str,
    obj_uuid: str,
    body: str,
) -> Any:
    ref = M.raise_alert(state, name, priority, cls, obj_uuid, body)
    await state.store.sync()
    return ref


@handler("message.destroy")
async def destroy(state: ServerState, ctx: CallContext, self: str) -> Any:
    M.destroy(state, self)
    await state.store.sync()
    return ""


@handler("message.destroy_many")
async def destroy_many(state: ServerState, ctx: CallContext, messages: list[str]) -> Any:
    try:
        for ref in messages:
            M.destroy(state, ref)
    finally:
        await state.store.sync()
    return ""


@handler("message.destroy_all")
async def destroy_all(state: ServerState, ctx: CallContext, filters: dict[str, str]) -> Any:
    """Filters ``before`` / ``after`` (ISO 8601) and ``priority``, all optional."""
    try:
        before = _unix(filters["before"]) if "before" in filters else None
        after = _unix(filters["after"]) if "after" in filters else None
    except ValueError:
        raise ApiError("INVALID_VALUE", "filters", str(filters)) from None
    priority: int | None = None
    if "priority" in filters:
        try:
            priority = int(filters["priority"])
        except ValueError:
            raise ApiError("INVALID_VALUE", "priority", filters["priority"]) from None
    msgs = M.messages_of(state)
    doomed = []
    for ref, rec in state.store.table(M.MESSAGE).items():
        t = msgs.stamp(ref, rec)
        if before is not None and not t < before:
            continue
        if after is not None and not t > after:
            continue
        if priority is not None and rec["priority"] != priority:
            continue
        doomed.append(ref)
    for ref in doomed:
        M.destroy(state, ref)
    await state.store.sync()
    return ""


@handler("message.get")
async def get(state: ServerState, ctx: CallContext, cls: str, obj_uuid: str, since: str) -> Any:
    if not M.object_exists(state, cls, obj_uuid):
        raise ApiError("UUID_INVALID")
    return _records(state, ctx, M.newer_than(state, _unix(since), cls, obj_uuid))


@handler("message.get_since")
async def get_since(state: ServerState, ctx: CallContext, since: str) -> Any:
    return _records(state, ctx, M.newer_than(state, _unix(since)))


@handler("message.get_all")
async def get_all(state: ServerState, ctx: CallContext) -> Any:
    return M.newest_first(state)


@handler("message.get_all_records")
async def get_all_records(state: ServerState, ctx: CallContext) -> Any:
    return _records(state, ctx, M.newest_first(state))


@handler("message.get_record")
async def get_record(state: ServerState, ctx: CallContext, self: str) -> Any:
    rec = state.store.get(M.MESSAGE, self)
    if rec is None:
        raise ApiError("HANDLE_INVALID", M.MESSAGE, self)
    return state.cache.encoded(self, rec, ctx.codec)


@handler("message.get_by_uuid")
async def get_by_uuid(state: ServerState, ctx: CallContext, uuid: str) -> Any:
    ref = state.store.ref_of_uuid(M.MESSAGE, uuid)
    if ref is None:
        raise ApiError("UUID_INVALID", M.MESSAGE, uuid)
    return ref


@handler("message.get_all_records_where")
async def get_all_records_where(state: ServerState, ctx: CallContext, expr: str) -> Any:
    try:
        match = compile_for_class(expr, state.cls(M.MESSAGE))
        refs = [r for r, rec in state.store.table(M.MESSAGE).items() if match(r, rec)]
    except (WhereSyntaxError, UnknownColumnError) as e:
        raise e.api_error() from None
    return _records(state, ctx, M.newest_first(state, refs))
