"""The deprecated live-memory messages: set_memory_target_live, wait_memory_target_live,
get_cooperative."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from openxapi.api.vm_domains import stop_domains
from tests.api.handlers.vm_kit import MIB, bad_power, dom0, new_vm, rec, running_vm
from tests.api.world import World


@pytest.fixture
async def w(world: World) -> AsyncIterator[World]:
    yield world
    await stop_domains(world.state)


async def test_set_memory_target_live_checks_and_changes_nothing(w: World) -> None:
    halted = await new_vm(w)
    assert await w.fail("VM.set_memory_target_live", w.root, halted, 128 * MIB) == bad_power(
        halted, "running", "halted"
    )
    vm = await running_vm(w)
    before = {k: v for k, v in rec(w, "VM", vm).items() if k.startswith("memory_")}
    await w.call("VM.set_memory_target_live", w.root, vm, 128 * MIB)
    after = rec(w, "VM", vm)
    assert {k: v for k, v in after.items() if k.startswith("memory_")} == before
    assert after["current_operations"] == {}
    await w.call("VM.set_memory_target_live", w.root, dom0(w), 128 * MIB)
    template = await new_vm(w, is_a_template=True)
    assert (await w.fail("VM.set_memory_target_live", w.root, template, 1))[0] == (
        "VM_BAD_POWER_STATE"
    )


async def test_wait_memory_target_live_records_the_domains_memory(w: World) -> None:
    halted = await new_vm(w)
    assert await w.fail("VM.wait_memory_target_live", w.root, halted) == bad_power(
        halted, "running", "halted"
    )
    vm = await running_vm(w)
    metrics = rec(w, "VM", vm)["metrics"]
    w.store.update("VM_metrics", metrics, {"memory_actual": 0})
    await w.call("VM.wait_memory_target_live", w.root, vm)
    assert rec(w, "VM_metrics", metrics)["memory_actual"] == 256 * MIB
    assert rec(w, "VM", vm)["current_operations"] == {}
    await w.call("VM.wait_memory_target_live", w.root, dom0(w))
    await w.call("VM.add_to_blocked_operations", w.root, vm, "awaiting_memory_live", "x")
    assert await w.fail("VM.wait_memory_target_live", w.root, vm) == [
        "OPERATION_BLOCKED",
        vm,
        "x",
    ]


async def test_get_cooperative_is_always_true(w: World) -> None:
    assert await w.call("VM.get_cooperative", w.root, await new_vm(w)) is True
    assert await w.call("VM.get_cooperative", w.root, "OpaqueRef:whatever") is True
