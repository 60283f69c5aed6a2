"""Where a VM may run: the single host's admission checks (enabled, memory, CPUs)."""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.handlers.vm_memory import assert_memory_order
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError


async def assert_fits(state: ServerState, vm: str, host: str) -> None:
    """The reference's boot checks that apply here, in its order."""
    rec = state.record("VM", vm)
    hrec = state.record("host", host)
    if host != state.host_ref:
        raise ApiError("HOST_NOT_LIVE")
    if not hrec["enabled"]:
        raise ApiError("HOST_DISABLED", host)
    assert_memory_order(rec)
    cap = await (await domains_of(state).ready()).host_capacity()
    if int(rec["VCPUs_max"]) > cap.cpus:
        raise ApiError("HOST_NOT_ENOUGH_PCPUS", str(rec["VCPUs_max"]), str(cap.cpus))
    needed = int(rec["memory_dynamic_max"])
    if rec["power_state"] == "Halted" and needed > cap.memory_free:
        raise ApiError("HOST_NOT_ENOUGH_FREE_MEMORY", str(needed), str(cap.memory_free))


@handler("VM.assert_can_boot_here")
async def assert_can_boot_here(state: ServerState, ctx: CallContext, self: str, host: str) -> Any:
    await assert_fits(state, self, host)
    return ""


@handler("VM.get_possible_hosts")
async def get_possible_hosts(state: ServerState, ctx: CallContext, vm: str) -> Any:
    try:
        await assert_fits(state, vm, state.host_ref)
    except ApiError:
        return []
    return [state.host_ref]
