"""VM memory setters: the lifecycle's power-state rules, then the ordering constraint.

Every setter keeps static_min ≤ dynamic_min ≤ dynamic_max ≤ static_max, failing with the
reference's MEMORY_CONSTRAINT_VIOLATION message otherwise; static limits change only while
the VM is halted, the dynamic range also while it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError

ORDER_CONSTRAINT = (
    "Memory limits must satisfy: static_min \u2264 dynamic_min \u2264 dynamic_max \u2264 static_max"
)
FIELDS = ("memory_static_min", "memory_dynamic_min", "memory_dynamic_max", "memory_static_max")


def assert_memory_order(limits: Mapping[str, Any]) -> None:
    """MEMORY_CONSTRAINT_VIOLATION unless the four limits are in order (and not negative)."""
    values = [int(limits[f]) for f in FIELDS]
    if values[0] < 0 or values != sorted(values):
        raise ApiError("MEMORY_CONSTRAINT_VIOLATION", ORDER_CONSTRAINT)


async def _change(state: ServerState, vm: str, op: str, changes: dict[str, int]) -> Any:
    domains = domains_of(state)
    rec = domains.check(vm, op)
    merged = {f: int(changes.get(f, rec[f])) for f in FIELDS}
    assert_memory_order(merged)
    update: dict[str, Any] = dict(merged)
    if "memory_dynamic_max" in changes:
        update["memory_target"] = merged["memory_dynamic_max"]
    state.store.update("VM", vm, update)
    await state.store.sync()
    return ""


@handler("VM.set_memory_static_range")
async def set_memory_static_range(
    state: ServerState, ctx: CallContext, self: str, min: int, max: int
) -> Any:
    changes = {"memory_static_min": min, "memory_static_max": max}
    return await _change(state, self, "changing_static_range", changes)


@handler("VM.set_memory_dynamic_range")
async def set_memory_dynamic_range(
    state: ServerState, ctx: CallContext, self: str, min: int, max: int
) -> Any:
    changes = {"memory_dynamic_min": min, "memory_dynamic_max": max}
    return await _change(state, self, "changing_dynamic_range", changes)


@handler("VM.set_memory_limits")
async def set_memory_limits(
    state: ServerState,
    ctx: CallContext,
    self: str,
    static_min: int,
    static_max: int,
    dynamic_min: int,
    dynamic_max: int,
) -> Any:
    changes = {
        "memory_static_min": static_min,
        "memory_static_max": static_max,
        "memory_dynamic_min": dynamic_min,
        "memory_dynamic_max": dynamic_max,
    }
    return await _change(state, self, "changing_memory_limits", changes)


@handler("VM.set_memory")
async def set_memory(state: ServerState, ctx: CallContext, self: str, value: int) -> Any:
    """static_max, dynamic_min and dynamic_max all become ``value``; static_min stays."""
    changes = {
        "memory_static_max": value,
        "memory_dynamic_min": value,
        "memory_dynamic_max": value,
    }
    return await _change(state, self, "changing_memory_limits", changes)


@handler("VM.set_memory_static_min", "VM.set_memory_static_max")
async def set_memory_static(state: ServerState, ctx: CallContext, self: str, value: int) -> Any:
    field = "memory_" + ctx.wire_name.removeprefix("VM.set_memory_")
    return await _change(state, self, "changing_static_range", {field: value})


@handler("VM.set_memory_dynamic_min", "VM.set_memory_dynamic_max")
async def set_memory_dynamic(state: ServerState, ctx: CallContext, self: str, value: int) -> Any:
    field = "memory_" + ctx.wire_name.removeprefix("VM.set_memory_")
    return await _change(state, self, "changing_dynamic_range", {field: value})
