"""The deprecated live-memory messages, answered as the reference answers them.

VM.set_memory_target_live checks the changing_memory_live operation and then changes
nothing (the reference made it a no-op in favour of set_memory_dynamic_range);
VM.get_cooperative always answers true; VM.wait_memory_target_live waits for the domain's
memory to reach its balloon target and records the memory it has.
"""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError


@handler("VM.set_memory_target_live")
async def set_memory_target_live(
    state: ServerState, ctx: CallContext, self: str, target: int
) -> Any:
    async with domains_of(state).operation(self, "changing_memory_live", ctx):
        pass
    await state.store.sync()
    return ""


@handler("VM.wait_memory_target_live")
async def wait_memory_target_live(state: ServerState, ctx: CallContext, self: str) -> Any:
    """The awaiting_memory_live operation (running VMs).

    Our backends never move a domain's balloon target after it is built, so the target is
    the memory the domain runs with: it is reached at once, and VM_metrics.memory_actual
    takes the domain's current figure, as the reference records it on success.
    """
    domains = domains_of(state)
    async with domains.operation(self, "awaiting_memory_live", ctx) as rec:
        if not rec["is_control_domain"]:  # the host's own domain is not the backend's
            backend = await domains.ready()
            info = await backend.info(rec["uuid"])
            if info is None:
                raise ApiError(
                    "INTERNAL_ERROR", f"Object with type VM and id {rec['uuid']} does not exist"
                )
            metrics = rec["metrics"]
            if metrics and state.store.get("VM_metrics", metrics) is not None:
                state.store.update("VM_metrics", metrics, {"memory_actual": info.memory_actual})
    await state.store.sync()
    return ""


@handler("VM.get_cooperative")
async def get_cooperative(state: ServerState, ctx: CallContext, self: str) -> Any:
    """Always true, whatever ``self`` is: the reference never looks at the VM."""
    return True
