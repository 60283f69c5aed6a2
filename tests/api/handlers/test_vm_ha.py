"""VM.set_ha_restart_priority, VM.set_ha_always_run and VM.assert_agile."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from openxapi.api.vm_domains import stop_domains
from tests.api.handlers.vm_kit import MIB, new_vm, rec, running_vm
from tests.api.network_helpers import TWO_NICS, new_network, new_vif, pif, world_on
from tests.api.storage_kit import new_sr, new_vbd, new_vdi
from tests.api.world import World


@pytest.fixture
async def w(world: World) -> AsyncIterator[World]:
    yield world
    await stop_domains(world.state)


async def test_restart_priority_values(w: World) -> None:
    vm = await new_vm(w)
    assert await w.fail("VM.set_ha_restart_priority", w.root, vm, "always") == [
        "INVALID_VALUE",
        "ha_restart_priority",
        "always",
    ]
    assert await w.fail("VM.set_ha_restart_priority", w.root, "OpaqueRef:x", "always") == [
        "INVALID_VALUE",
        "ha_restart_priority",
        "always",
    ]
    for value in ("restart", "best-effort", ""):
        await w.call("VM.set_ha_restart_priority", w.root, vm, value)
        r = rec(w, "VM", vm)
        assert r["ha_restart_priority"] == value and r["ha_always_run"] is False


async def test_a_running_vm_is_protected_at_once(w: World) -> None:
    vm = await running_vm(w)
    await w.call("VM.set_ha_restart_priority", w.root, vm, "restart")
    assert rec(w, "VM", vm)["ha_always_run"] is True
    await w.call("VM.set_ha_restart_priority", w.root, vm, "best-effort")
    assert rec(w, "VM", vm)["ha_always_run"] is False
    # unchanged priority: ha_always_run is left as it is
    w.store.update("VM", vm, {"ha_always_run": True})
    await w.call("VM.set_ha_restart_priority", w.root, vm, "best-effort")
    assert rec(w, "VM", vm)["ha_always_run"] is True


async def test_ha_always_run_maps_to_a_priority(w: World) -> None:
    vm = await running_vm(w)
    await w.call("VM.set_ha_always_run", w.root, vm, True)
    r = rec(w, "VM", vm)
    assert r["ha_restart_priority"] == "restart" and r["ha_always_run"] is True
    await w.call("VM.set_ha_always_run", w.root, vm, False)
    r = rec(w, "VM", vm)
    assert r["ha_restart_priority"] == "" and r["ha_always_run"] is False
    halted = await new_vm(w)
    await w.call("VM.set_ha_always_run", w.root, halted, True)
    r = rec(w, "VM", halted)
    assert r["ha_restart_priority"] == "restart" and r["ha_always_run"] is False


async def test_agility_of_devices(w: World) -> None:
    vm = await new_vm(w)
    await w.call("VM.assert_agile", w.root, vm)
    w.store.update("VM", vm, {"VUSBs": ["OpaqueRef:usb"], "VGPUs": ["OpaqueRef:gpu"]})
    assert await w.fail("VM.assert_agile", w.root, vm) == ["VM_HAS_VGPU", vm]
    w.store.update("VM", vm, {"VGPUs": []})
    assert await w.fail("VM.assert_agile", w.root, vm) == ["VM_HAS_VUSBS", vm]


async def test_agility_needs_shared_srs(w: World) -> None:
    vm = await new_vm(w)
    sr = await new_sr(w, "dummy")
    await new_vbd(w, vm, await new_vdi(w, sr, MIB))
    assert await w.fail("VM.assert_agile", w.root, vm) == [
        "HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED",
        sr,
    ]
    w.store.update("SR", sr, {"shared": True})
    await w.call("VM.assert_agile", w.root, vm)
    (pbd,) = rec(w, "SR", sr)["PBDs"]
    w.store.update("PBD", pbd, {"currently_attached": False})
    assert (await w.fail("VM.assert_agile", w.root, vm))[0] == (
        "HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED"
    )
    # an empty drive needs no SR
    other = await new_vm(w)
    await new_vbd(w, other, "OpaqueRef:NULL", type="CD", empty=True, mode="RO")
    await w.call("VM.assert_agile", w.root, other)


async def test_agility_needs_networks_on_every_host(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = await world_on(data_dir, monkeypatch, TWO_NICS)
    try:
        _, physical = pif(w, "enp1s0")
        vm = await new_vm(w)
        await new_vif(w, vm, physical["network"])
        await w.call("VM.assert_agile", w.root, vm)
        private = await new_network(w)
        await new_vif(w, vm, private, device="1")
        assert await w.fail("VM.assert_agile", w.root, vm) == [
            "HA_CONSTRAINT_VIOLATION_NETWORK_NOT_SHARED",
            private,
        ]
        # a bond slave does not connect its host to the network
        slave, _ = pif(w, "enp1s0")
        bond = w.state.create("Bond", {"master": "OpaqueRef:NULL"})
        w.store.update("PIF", slave, {"bond_slave_of": bond})
        lone = await new_vm(w)
        await new_vif(w, lone, physical["network"])
        assert await w.fail("VM.assert_agile", w.root, lone) == [
            "HA_CONSTRAINT_VIOLATION_NETWORK_NOT_SHARED",
            physical["network"],
        ]
    finally:
        await w.close()
