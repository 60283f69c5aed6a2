"""VM.checkpoint and VM.revert on the simulator backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from openxapi.api.vm_domains import stop_domains
from openxapi.api.vm_templates import disks_xml
from openxapi.spec.model import NULL_REF
from tests.api.network_helpers import new_network, new_vif
from tests.api.storage_kit import new_sr, vdi_bytes, write_vdi
from tests.api.world import World

MIB = 1 << 20


@pytest.fixture
async def w(world: World) -> AsyncIterator[World]:
    world.config.vm_shutdown_timeout = 0.2
    yield world
    await stop_domains(world.state)


def rec(w: World, cls: str, ref: str) -> dict[str, Any]:
    r = w.store.get(cls, ref)
    assert r is not None
    return r


async def running(w: World) -> str:
    """A provisioned VM with one disk and one VIF, started."""
    sr = await new_sr(w, "dummy")
    (tmpl,) = await w.call("VM.get_by_name_label", w.root, "Debian Bookworm 12")
    vm = await w.call("VM.clone", w.root, tmpl, "vm")
    spec = [("0", 4 * MIB, rec(w, "SR", sr)["uuid"], True, "system")]
    await w.call("VM.remove_from_other_config", w.root, vm, "disks")
    await w.call("VM.add_to_other_config", w.root, vm, "disks", disks_xml(spec))
    await w.call("VM.provision", w.root, vm)
    await w.call("VM.set_suspend_SR", w.root, vm, sr)
    await new_vif(w, vm, await new_network(w))
    await w.call("VM.start", w.root, vm, False, False)
    return vm


def disk(w: World, vm: str) -> str:
    (vbd,) = [v for v in rec(w, "VM", vm)["VBDs"] if rec(w, "VBD", v)["type"] == "Disk"]
    return str(rec(w, "VBD", vbd)["VDI"])


def suspend_images(w: World) -> set[str]:
    return {r for r, v in w.store.table("VDI").items() if v["type"] == "suspend"}


async def test_checkpoint_of_a_running_vm(w: World) -> None:
    vm = await running(w)
    await write_vdi(w, disk(w, vm), [(0, b"before")])
    snap = await w.call("VM.checkpoint", w.root, vm, "cp")
    s, v = rec(w, "VM", snap), rec(w, "VM", vm)
    assert s["is_a_snapshot"] and s["is_a_template"] and s["snapshot_of"] == vm
    assert s["snapshot_time"] > "19700101T00:00:00Z" and s["name_label"] == "cp"
    assert s["snapshot_info"]["power-state-at-snapshot"] == "Running"
    assert s["power_state"] == "Suspended" and suspend_images(w) == {s["suspend_VDI"]}
    assert snap in v["snapshots"] and v["parent"] == snap
    assert v["power_state"] == "Running" and v["suspend_VDI"] == NULL_REF
    assert v["current_operations"] == {} and "checkpoint" in v["allowed_operations"]
    disk_snap = rec(w, "VDI", disk(w, snap))
    assert disk_snap["is_a_snapshot"] and disk_snap["snapshot_of"] == disk(w, vm)
    assert (await vdi_bytes(w, disk(w, snap))).startswith(b"before")
    assert rec(w, "VIF", s["VIFs"][0])["MAC"] == rec(w, "VIF", v["VIFs"][0])["MAC"]
    assert "revert" in s["allowed_operations"] and "start" not in s["allowed_operations"]


async def test_checkpoint_needs_a_live_or_suspended_vm(w: World) -> None:
    vm = await running(w)
    await w.call("VM.hard_shutdown", w.root, vm)
    assert await w.fail("VM.checkpoint", w.root, vm, "cp") == [
        "VM_BAD_POWER_STATE",
        vm,
        "paused, suspended, running",
        "halted",
    ]


async def test_checkpoint_of_a_suspended_vm_copies_its_image(w: World) -> None:
    vm = await running(w)
    await w.call("VM.suspend", w.root, vm)
    own = rec(w, "VM", vm)["suspend_VDI"]
    snap = await w.call("VM.checkpoint", w.root, vm, "cp")
    s = rec(w, "VM", snap)
    assert s["power_state"] == "Suspended" and s["suspend_VDI"] not in (NULL_REF, own)
    assert rec(w, "VM", vm)["power_state"] == "Suspended"
    assert rec(w, "VM", vm)["suspend_VDI"] == own


async def test_revert_to_a_checkpoint_restores_disks_settings_and_power_state(w: World) -> None:
    vm = await running(w)
    await write_vdi(w, disk(w, vm), [(0, b"at checkpoint")])
    snap = await w.call("VM.checkpoint", w.root, vm, "cp")
    old_disk = disk(w, vm)
    await write_vdi(w, old_disk, [(0, b"later changes")])
    await w.call("VM.set_name_description", w.root, vm, "changed later")
    await w.call("VM.revert", w.root, snap)
    v = rec(w, "VM", vm)
    assert v["power_state"] == "Suspended" and v["name_label"] == "vm"
    assert v["name_description"] == rec(w, "VM", snap)["name_description"] != "changed later"
    assert v["suspend_VDI"] not in (NULL_REF, rec(w, "VM", snap)["suspend_VDI"])
    assert w.store.get("VDI", old_disk) is None
    assert (await vdi_bytes(w, disk(w, vm))).startswith(b"at checkpoint")
    assert rec(w, "VDI", disk(w, snap))["snapshot_of"] == disk(w, vm)
    assert v["parent"] == snap and v["current_operations"] == {}
    assert rec(w, "VIF", v["VIFs"][0])["MAC"] == rec(w, "VIF", rec(w, "VM", snap)["VIFs"][0])["MAC"]
    await w.call("VM.resume", w.root, vm, False, False)
    assert rec(w, "VM", vm)["power_state"] == "Running"
    # the snapshot keeps its own image and can be reverted to again
    await w.call("VM.revert", w.root, snap)
    assert rec(w, "VM", vm)["power_state"] == "Suspended"
    assert len(suspend_images(w)) == 2


async def test_revert_to_a_plain_snapshot_halts_the_vm(w: World) -> None:
    vm = await running(w)
    snap = await w.call("VM.snapshot", w.root, vm, "s", [])
    await w.call("VM.revert", w.root, snap)
    v = rec(w, "VM", vm)
    assert v["power_state"] == "Halted" and v["domid"] == -1 and v["suspend_VDI"] == NULL_REF
    assert "start" in v["allowed_operations"]
    await w.call("VM.start", w.root, vm, False, False)
    assert rec(w, "VM", vm)["power_state"] == "Running"


async def test_revert_errors(w: World) -> None:
    vm = await running(w)
    assert await w.fail("VM.revert", w.root, vm) == ["REVERT_ONLY_ALLOWED_ON_SNAPSHOT"]
    snap = await w.call("VM.snapshot", w.root, vm, "s", [])
    await w.call("VM.hard_shutdown", w.root, vm)
    await w.call("VM.destroy", w.root, vm)
    assert await w.fail("VM.revert", w.root, snap) == ["VM_REVERT_FAILED", snap, vm]


async def test_a_failed_checkpoint_leaves_nothing_and_the_vm_running(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from openxapi.api.handlers import vm_snapshot

    vm = await running(w)

    async def failing(*args: Any) -> str:
        raise RuntimeError("disk snapshot failed")

    monkeypatch.setattr(vm_snapshot, "fork_vdi", failing)
    tables = ("VM", "VDI", "VBD", "VIF", "VM_metrics")
    before = {t: len(w.store.table(t)) for t in tables}
    assert (await w.fail("VM.checkpoint", w.root, vm, "cp"))[0] == "INTERNAL_ERROR"
    assert {t: len(w.store.table(t)) for t in tables} == before
    v = rec(w, "VM", vm)
    assert v["power_state"] == "Running" and v["domid"] > 0 and v["current_operations"] == {}
    assert v["snapshots"] == [] and not suspend_images(w)
