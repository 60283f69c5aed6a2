"""VM.pool_migrate within the one-host pool (the reference's localhost migration)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from openxapi.api.vm_domains import stop_domains
from tests.api.handlers.vm_kit import bad_power, new_vm, rec, running_vm
from tests.api.world import World


@pytest.fixture
async def w(world: World) -> AsyncIterator[World]:
    yield world
    await stop_domains(world.state)


async def test_a_running_vm_moves_to_a_new_domain_on_this_host(w: World) -> None:
    vm = await running_vm(w)
    before = rec(w, "VM", vm)
    host = before["resident_on"]
    await w.call("VM.pool_migrate", w.root, vm, host, {"live": "true"})
    after = rec(w, "VM", vm)
    assert after["power_state"] == "Running" and after["resident_on"] == host
    assert after["domid"] != before["domid"]
    assert after["current_operations"] == {}


async def test_only_a_running_vm_migrates(w: World) -> None:
    halted = await new_vm(w)
    host = rec(w, "pool", next(iter(w.state.store.table("pool"))))["master"]
    assert await w.fail("VM.pool_migrate", w.root, halted, host, {}) == bad_power(
        halted, "running", "halted"
    )
    assert await w.fail("VM.pool_migrate", w.root, halted, "OpaqueRef:nope", {}) == [
        "HANDLE_INVALID",
        "host",
        "OpaqueRef:nope",
    ]
