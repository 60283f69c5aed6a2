"""VM.retrieve_wlb_recommendations on a pool without Workload Balancing."""

from __future__ import annotations

from tests.api.handlers.vm_kit import new_vm
from tests.api.world import World


async def test_recommendations_need_an_initialised_and_enabled_wlb(world: World) -> None:
    w = world
    vm = await new_vm(w)
    assert await w.fail("VM.retrieve_wlb_recommendations", w.root, vm) == ["WLB_NOT_INITIALIZED"]
    w.store.update("pool", w.state.pool_ref, {"wlb_url": "wlb.example:8012"})
    assert await w.fail("VM.retrieve_wlb_recommendations", w.root, vm) == ["WLB_DISABLED"]
    w.store.update("pool", w.state.pool_ref, {"restrictions": {"restrict_wlb": "true"}})
    assert await w.fail("VM.retrieve_wlb_recommendations", w.root, vm) == [
        "LICENCE_RESTRICTION",
        "WLB",
    ]
    assert await w.fail("VM.retrieve_wlb_recommendations", w.root, "OpaqueRef:x") == [
        "HANDLE_INVALID",
        "VM",
        "OpaqueRef:x",
    ]
