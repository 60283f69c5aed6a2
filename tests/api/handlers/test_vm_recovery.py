"""VM and appliance recovery, from this server's database and from a database session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from openxapi.api.vm_domains import stop_domains
from tests.api.handlers.dr_kit import flush, replicated_sr, vm_with_devices
from tests.api.handlers.vm_kit import MIB, new_vm, rec
from tests.api.storage_kit import new_sr, new_vbd, new_vdi
from tests.api.world import World

DENIED = "The supplied session does not have the required permissions for VM recovery."


@pytest.fixture
async def w(world: World) -> AsyncIterator[World]:
    yield world
    await stop_domains(world.state)


def unplug(w: World, sr: str) -> None:
    for pbd in rec(w, "SR", sr)["PBDs"]:
        w.store.update("PBD", pbd, {"currently_attached": False})


def by_uuid(w: World, cls: str, uuid: str) -> str:
    ref = w.store.ref_of_uuid(cls, uuid)
    assert ref is not None, f"no {cls} {uuid}"
    return ref


async def test_srs_without_a_plugged_pbd_are_required(w: World) -> None:
    vm = await new_vm(w)
    first, second = await new_sr(w, "dummy"), await new_sr(w, "dummy")
    for sr in (second, first, second):
        await new_vbd(w, vm, await new_vdi(w, sr, MIB))
    iso = await new_sr(w, "dummy")
    iso_vdi = await new_vdi(w, iso, MIB)
    w.store.update("SR", iso, {"content_type": "iso"})
    await new_vbd(w, vm, iso_vdi, type="CD", mode="RO")
    await new_vbd(w, vm, iso_vdi, userdevice="7", mode="RO")  # a disk on an ISO SR
    session = w.root
    assert await w.call("VM.get_SRs_required_for_recovery", w.root, vm, session) == []
    await w.call("VM.assert_can_be_recovered", w.root, vm, session)
    unplug(w, first)
    unplug(w, second)
    unplug(w, iso)
    expected = sorted([first, second])
    assert await w.call("VM.get_SRs_required_for_recovery", w.root, vm, session) == expected
    assert await w.fail("VM.assert_can_be_recovered", w.root, vm, session) == [
        "VM_REQUIRES_SR",
        vm,
        expected[0],
    ]


async def test_recovery_checks_need_a_vm_and_a_session(w: World) -> None:
    bad = "OpaqueRef:x"
    for name in ("VM.get_SRs_required_for_recovery", "VM.assert_can_be_recovered"):
        assert await w.fail(name, w.root, bad, w.root) == ["HANDLE_INVALID", "VM", bad]
    empty = await new_vm(w)
    assert await w.call("VM.get_SRs_required_for_recovery", w.root, empty, w.root) == []
    assert await w.fail("VM.assert_can_be_recovered", w.root, empty, bad) == [
        "SESSION_INVALID",
        bad,
    ]
    assert await w.fail("VM.recover", w.root, empty, bad, False) == ["SESSION_INVALID", bad]


async def test_a_destroyed_vm_comes_back_from_the_copy(w: World) -> None:
    sr, meta = await replicated_sr(w)
    vm, vdi, vif = await vm_with_devices(w, sr, name_label="precious")
    snap = await w.call("VM.snapshot", w.root, vm, "before the fall")
    w.store.update("SR", sr, {"introduced_by": "OpaqueRef:some-dr-task"})
    await flush(w)
    vm_uuid, snap_uuid = rec(w, "VM", vm)["uuid"], rec(w, "VM", snap)["uuid"]
    vbd_uuid, vif_uuid = (
        rec(w, "VBD", rec(w, "VM", vm)["VBDs"][0])["uuid"],
        rec(w, "VIF", vif)["uuid"],
    )
    await w.call("VM.destroy", w.root, snap)
    await w.call("VM.destroy", w.root, vm)
    assert w.store.ref_of_uuid("VM", vm_uuid) is None

    db = await w.call("VDI.open_database", w.root, meta)
    assert await w.call("VM.get_name_label", db, vm) == "precious"
    assert await w.call("VM.get_SRs_required_for_recovery", db, vm, w.root) == []
    await w.call("VM.assert_can_be_recovered", db, vm, w.root)
    assert await w.call("VM.recover", db, vm, w.root, False) == ""

    back = by_uuid(w, "VM", vm_uuid)
    r = rec(w, "VM", back)
    assert (r["name_label"], r["power_state"], r["current_operations"]) == (
        "precious",
        "Halted",
        {},
    )
    (vbd,) = r["VBDs"]
    assert rec(w, "VBD", vbd)["VDI"] == vdi
    assert rec(w, "VBD", vbd)["uuid"] == vbd_uuid
    (new_vif,) = r["VIFs"]
    assert (rec(w, "VIF", new_vif)["uuid"], rec(w, "VIF", new_vif)["MAC"]) == (
        vif_uuid,
        "aa:bb:cc:00:11:22",
    )
    restored = by_uuid(w, "VM", snap_uuid)
    assert rec(w, "VM", restored)["is_a_snapshot"] is True
    assert rec(w, "VM", restored)["snapshot_of"] == back
    assert r["snapshots"] == [restored]
    assert rec(w, "SR", sr)["introduced_by"] == "OpaqueRef:NULL"
    # Still in the copy, as it was.
    assert await w.call("VM.get_VBDs", db, vm) != []


async def test_an_existing_vm_is_replaced_only_when_forced_or_newer(w: World) -> None:
    sr, meta = await replicated_sr(w)
    vm, _vdi, _vif = await vm_with_devices(w, sr, name_label="old name")
    await flush(w)
    await w.call("VM.set_name_label", w.root, vm, "new name")
    db = await w.call("VDI.open_database", w.root, meta)
    assert await w.fail("VM.recover", db, vm, w.root, False) == [
        "VM_TO_IMPORT_IS_NOT_NEWER_VERSION",
        vm,
        "0",
        "0",
    ]
    assert rec(w, "VM", vm)["name_label"] == "new name"
    uuid = rec(w, "VM", vm)["uuid"]
    await w.call("VM.recover", db, vm, w.root, True)
    assert w.store.get("VM", vm) is None
    again = by_uuid(w, "VM", uuid)
    assert rec(w, "VM", again)["name_label"] == "old name"
    assert rec(w, "VM", again)["version"] == 1
    assert [v for v in w.store.table("VM").values() if v["uuid"] == uuid] != []


async def test_a_running_vm_is_not_replaced(w: World) -> None:
    sr, meta = await replicated_sr(w)
    vm, _vdi, _vif = await vm_with_devices(w, sr, name_label="busy")
    await w.call("VM.start", w.root, vm, False, False)
    await flush(w)
    db = await w.call("VDI.open_database", w.root, meta)
    assert await w.fail("VM.recover", db, vm, w.root, False) == [
        "VM_BAD_POWER_STATE",
        vm,
        "halted",
        "running",
    ]
    await w.call("VM.recover", db, vm, w.root, True)  # forced: skipped
    assert rec(w, "VM", vm)["power_state"] == "Running"
    assert len([v for v in w.store.table("VM").values() if v["name_label"] == "busy"]) == 1


async def test_missing_srs_and_disks(w: World) -> None:
    _sr, meta = await replicated_sr(w)
    elsewhere = await new_sr(w, "dummy")
    vm, vdi, _vif = await vm_with_devices(w, elsewhere, name_label="far")
    await flush(w)
    location = rec(w, "VDI", vdi)["location"]
    await w.call("VM.destroy", w.root, vm)
    db = await w.call("VDI.open_database", w.root, meta)
    unplug(w, elsewhere)
    assert await w.call("VM.get_SRs_required_for_recovery", db, vm, w.root) == [elsewhere]
    assert await w.fail("VM.recover", db, vm, w.root, False) == [
        "VM_REQUIRES_SR",
        vm,
        elsewhere,
    ]
    for pbd in rec(w, "SR", elsewhere)["PBDs"]:
        w.store.update("PBD", pbd, {"currently_attached": True})
    await w.call("VDI.destroy", w.root, vdi)
    assert await w.fail("VM.recover", db, vm, w.root, False) == [
        "VDI_LOCATION_MISSING",
        elsewhere,
        location,
    ]
    assert not [v for v in w.store.table("VM").values() if v["name_label"] == "far"]
    await w.call("VM.recover", db, vm, w.root, True)  # forced: without the disk
    (back,) = [r for r, v in w.store.table("VM").items() if v["name_label"] == "far"]
    assert rec(w, "VM", back)["VBDs"] == []
    for pbd in rec(w, "SR", elsewhere)["PBDs"]:
        await w.call("PBD.unplug", w.root, pbd)
    await w.call("SR.forget", w.root, elsewhere)
    assert await w.fail("VM.assert_can_be_recovered", db, vm, w.root) == [
        "VM_REQUIRES_SR",
        vm,
        elsewhere,
    ]


async def test_session_to_needs_the_right_to_open_databases(w: World) -> None:
    sr, meta = await replicated_sr(w)
    vm, _vdi, _vif = await vm_with_devices(w, sr)
    await flush(w)
    await w.add_user("operator", ["vm-operator"])
    weak = await w.login_user("operator")
    db = await w.call("VDI.open_database", w.root, meta)
    assert await w.fail("VM.recover", db, vm, weak, False) == [
        "RBAC_PERMISSION_DENIED",
        "VM.recover",
        DENIED,
    ]
    assert await w.fail("VM.recover", db, vm, db, False) == [
        "RBAC_PERMISSION_DENIED",
        "VM.recover",
        DENIED,
    ]


async def test_appliances_are_recovered_whole(w: World) -> None:
    sr, meta = await replicated_sr(w)
    first, _, _ = await vm_with_devices(w, sr, name_label="web")
    second = await new_vm(w, name_label="db")
    app = await w.call(
        "VM_appliance.create", w.root, {"name_label": "shop", "name_description": "two VMs"}
    )
    for vm in (first, second):
        await w.call("VM.set_appliance", w.root, vm, app)
    await flush(w)
    app_uuid = rec(w, "VM_appliance", app)["uuid"]
    uuids = {rec(w, "VM", v)["uuid"] for v in (first, second)}
    for vm in (first, second):
        await w.call("VM.destroy", w.root, vm)
    await w.call("VM_appliance.destroy", w.root, app)
    db = await w.call("VDI.open_database", w.root, meta)
    assert await w.fail("VM.recover", db, first, w.root, False) == [
        "VM_IS_PART_OF_AN_APPLIANCE",
        first,
        app,
    ]
    assert await w.call("VM_appliance.get_SRs_required_for_recovery", db, app, w.root) == []
    await w.call("VM_appliance.assert_can_be_recovered", db, app, w.root)
    await w.call("VM_appliance.recover", db, app, w.root, False)
    here = by_uuid(w, "VM_appliance", app_uuid)
    a = rec(w, "VM_appliance", here)
    assert (a["name_label"], a["name_description"]) == ("shop", "two VMs")
    assert {rec(w, "VM", v)["uuid"] for v in a["VMs"]} == uuids
    assert "start" in a["allowed_operations"]
