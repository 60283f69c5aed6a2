"""VM maps that the lifecycle rules read (``platform``: nomigrate, nested-virt;
``other_config``: default_template, is_system_domain): their setters behave as the generic
ones and then recompute allowed_operations, so clients see the change as an event."""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError


async def _write(state: ServerState, vm: str, field: str, value: dict[str, str]) -> Any:
    state.store.update("VM", vm, {field: value})
    domains_of(state).refresh(vm)
    await state.store.sync()
    return ""


@handler("VM.set_platform", "VM.set_other_config")
async def set_map(state: ServerState, ctx: CallContext, self: str, value: dict[str, str]) -> Any:
    state.record("VM", self)
    return await _write(state, self, ctx.wire_name.removeprefix("VM.set_"), dict(value))


@handler("VM.add_to_platform", "VM.add_to_other_config")
async def add_to_map(state: ServerState, ctx: CallContext, self: str, key: str, value: str) -> Any:
    field = ctx.wire_name.removeprefix("VM.add_to_")
    rec = state.record("VM", self)
    if key in rec[field]:
        column = state.cls("VM").field_map[field].column
        raise ApiError("MAP_DUPLICATE_KEY", "VM", column, rec["uuid"], key)
    return await _write(state, self, field, {**rec[field], key: value})


@handler("VM.remove_from_platform", "VM.remove_from_other_config")
async def remove_from_map(state: ServerState, ctx: CallContext, self: str, key: str) -> Any:
    field = ctx.wire_name.removeprefix("VM.remove_from_")
    rec = state.record("VM", self)
    if key not in rec[field]:
        return ""
    return await _write(state, self, field, {k: v for k, v in rec[field].items() if k != key})
