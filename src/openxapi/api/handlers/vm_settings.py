"""VM fields that only custom setters change, where the setter has no rules of its own."""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.errors import ApiError


async def _set(state: ServerState, vm: str, field: str, value: Any) -> Any:
    state.record("VM", vm)
    state.store.update("VM", vm, {field: value})
    await state.store.sync()
    return ""


@handler("VM.set_actions_after_crash")
async def set_actions_after_crash(
    state: ServerState, ctx: CallContext, self: str, value: str
) -> Any:
    """What happens when the guest crashes (the enum is checked on decoding)."""
    return await _set(state, self, "actions_after_crash", value)


@handler("VM.set_start_delay", "VM.set_shutdown_delay", "VM.set_order")
async def set_ordering(state: ServerState, ctx: CallContext, self: str, value: int) -> Any:
    """Appliance start/stop ordering: non-negative integers, as the reference requires."""
    field = ctx.wire_name.removeprefix("VM.set_")
    if value < 0:
        raise ApiError("INVALID_VALUE", field, str(value))
    return await _set(state, self, field, value)


async def _set_blocked(state: ServerState, vm: str, blocked: dict[str, str]) -> Any:
    from openxapi.api.vm_domains import domains_of

    state.record("VM", vm)
    state.store.update("VM", vm, {"blocked_operations": blocked})
    domains_of(state).refresh(vm)
    await state.store.sync()
    return ""


@handler("VM.set_blocked_operations")
async def set_blocked_operations(
    state: ServerState, ctx: CallContext, self: str, value: dict[str, str]
) -> Any:
    """Blocked operations leave allowed_operations at once (clients see it as an event)."""
    return await _set_blocked(state, self, dict(value))


@handler("VM.add_to_blocked_operations")
async def add_to_blocked_operations(
    state: ServerState, ctx: CallContext, self: str, key: str, value: str
) -> Any:
    rec = state.record("VM", self)
    if key in rec["blocked_operations"]:
        raise ApiError("MAP_DUPLICATE_KEY", "VM", "blocked_operations", rec["uuid"], key)
    return await _set_blocked(state, self, {**rec["blocked_operations"], key: value})


@handler("VM.remove_from_blocked_operations")
async def remove_from_blocked_operations(
    state: ServerState, ctx: CallContext, self: str, key: str
) -> Any:
    rec = state.record("VM", self)
    rest = {k: v for k, v in rec["blocked_operations"].items() if k != key}
    return await _set_blocked(state, self, rest)


@handler("VM.set_is_a_template")
async def set_is_a_template(state: ServerState, ctx: CallContext, self: str, value: bool) -> Any:
    """Turning a VM into a template follows the make_into_template rules (halted, ...)."""
    from openxapi.api.vm_domains import domains_of

    domains = domains_of(state)
    rec = state.record("VM", self)
    if value and not rec["is_a_template"]:
        domains.check(self, "make_into_template")
    if value and rec["groups"]:  # templates belong to no VM group
        from openxapi.api.handlers.vm import _leave_groups

        _leave_groups(state, self, rec)
    state.store.update("VM", self, {"is_a_template": bool(value)})
    domains.refresh(self)
    await state.store.sync()
    return ""
