"""VBD through the API: create (devices, CD rules), destroy, plug, unplug, insert, eject."""

from __future__ import annotations

from typing import Any

from openxapi.spec.model import NULL_REF
from tests.api.storage_kit import (
    default_sr,
    new_vbd,
    new_vdi,
    new_vm,
    set_power,
    sr_named,
    storage,
)
from tests.api.world import World, create_args


async def iso_vdi(world: World) -> str:
    iso_dir = world.data_dir / "iso"
    iso_dir.mkdir(exist_ok=True)
    (iso_dir / "install.iso").write_bytes(b"\x01" * 2048)
    sr = await sr_named(world, "ISO library")
    await world.call("SR.scan", world.root, sr)
    (vdi,) = (await world.record("SR", sr))["VDIs"]
    return str(vdi)


async def test_create_record(world: World) -> None:
    vdi = await new_vdi(world, await default_sr(world), sm_config={"backend-kind": "vbd3"})
    vm = await new_vm(world)
    vbd = await new_vbd(world, vm, vdi, other_config={"a": "b"}, currently_attached=True)
    rec = await world.record("VBD", vbd)
    assert (rec["userdevice"], rec["device"], rec["currently_attached"]) == ("0", "", False)
    assert rec["other_config"] == {"a": "b", "backend-kind": "vbd3"}
    assert world.store.get("VBD_metrics", rec["metrics"]) is not None
    assert rec["allowed_operations"] == ["attach"]
    assert (await world.record("VM", vm))["VBDs"] == [vbd]
    assert (await world.record("VDI", vdi))["VBDs"] == [vbd]


async def test_autodetect_and_clashes(world: World) -> None:
    sr = await default_sr(world)
    vm = await new_vm(world)
    disks = [await new_vdi(world, sr) for _ in range(4)]
    first = await new_vbd(world, vm, disks[0])
    await new_vbd(world, vm, disks[1], userdevice="xvdc")
    third = await new_vbd(world, vm, disks[2])
    assert (await world.record("VBD", first))["userdevice"] == "0"
    assert (await world.record("VBD", third))["userdevice"] == "1"
    for clash in ("2", "xvdb", "1", "hda"):
        assert await world.fail(
            "VBD.create",
            world.root,
            create_args(
                world.api, "VBD", VM=vm, VDI=disks[3], userdevice=clash, type="Disk", mode="RW"
            ),
        ) == ["DEVICE_ALREADY_EXISTS", clash]
    for bad in ("xvdz", "disk", "-1", ""):
        args = create_args(
            world.api, "VBD", VM=vm, VDI=disks[3], userdevice=bad, type="Disk", mode="RW"
        )
        assert await world.fail("VBD.create", world.root, args) == ["INVALID_DEVICE", bad]


async def test_cd_rules(world: World) -> None:
    vm = await new_vm(world)
    vdi = await new_vdi(world, await default_sr(world))

    def args(**values: Any) -> dict[str, Any]:
        fields = {"VM": vm, "VDI": vdi, "userdevice": "3", "type": "CD", "mode": "RO"}
        return create_args(world.api, "VBD", **{**fields, **values})

    assert await world.fail("VBD.create", world.root, args(mode="RW")) == [
        "VBD_CDS_MUST_BE_READONLY"
    ]
    assert await world.fail(
        "VBD.create", world.root, args(type="Disk", mode="RW", VDI=NULL_REF, empty=True)
    ) == ["VBD_NOT_REMOVABLE_MEDIA", "in constructor"]
    empty_cd = await world.call("VBD.create", world.root, args(VDI=NULL_REF, empty=True))
    rec = await world.record("VBD", empty_cd)
    assert rec["VDI"] == NULL_REF and rec["empty"] is True
    assert rec["allowed_operations"] == ["attach", "insert"]


async def test_validation_order(world: World) -> None:
    sr = await default_sr(world)
    vm = await new_vm(world)
    ro = await new_vdi(world, sr, read_only=True)
    args = create_args(world.api, "VBD", VM=vm, VDI=ro, userdevice="0", type="Disk", mode="RW")
    assert await world.fail("VBD.create", world.root, args) == ["VDI_READONLY", ro]
    meta = await new_vdi(world, sr, type="ha_statefile")
    args = create_args(world.api, "VBD", VM=vm, VDI=meta, userdevice="0", type="Disk", mode="RW")
    assert await world.fail("VBD.create", world.root, args) == [
        "VDI_INCOMPATIBLE_TYPE",
        meta,
        "ha_statefile",
    ]
    args = create_args(world.api, "VBD", VM="OpaqueRef:x", VDI=ro, userdevice="0", mode="RO")
    assert await world.fail("VBD.create", world.root, args) == [
        "HANDLE_INVALID",
        "VM",
        "OpaqueRef:x",
    ]


async def test_floppies(world: World) -> None:
    vdi = await new_vdi(world, await default_sr(world))
    pv = await new_vm(world, domain_type="pv")
    err = await world.fail(
        "VBD.create",
        world.root,
        create_args(
            world.api, "VBD", VM=pv, VDI=vdi, userdevice="autodetect", type="Floppy", mode="RW"
        ),
    )
    assert err[0] == "NOT_IMPLEMENTED"
    hvm = await new_vm(world, domain_type="hvm")
    floppy = await new_vbd(world, hvm, vdi, type="Floppy")
    assert (await world.record("VBD", floppy))["userdevice"] == "fda"


async def test_plug_and_unplug(world: World) -> None:
    vdi = await new_vdi(world, await default_sr(world))
    vm = await new_vm(world)
    vbd = await new_vbd(world, vm, vdi, userdevice="1")
    assert await world.fail("VBD.plug", world.root, vbd) == [
        "VM_BAD_POWER_STATE",
        vm,
        "running",
        "halted",
    ]
    await set_power(world, vm, "Running")
    await world.call("VBD.plug", world.root, vbd)
    rec = await world.record("VBD", vbd)
    assert rec["currently_attached"] is True and rec["device"] == "xvdb"
    assert "unplug" in rec["allowed_operations"]
    assert await world.fail("VBD.plug", world.root, vbd) == ["DEVICE_ALREADY_ATTACHED", vbd]
    assert await world.fail("VBD.destroy", world.root, vbd) == [
        "OPERATION_NOT_ALLOWED",
        f"VBD '{rec['uuid']}' still attached to '{(await world.record('VM', vm))['uuid']}'",
    ]
    await world.call("VBD.unplug", world.root, vbd)
    assert (await world.record("VBD", vbd))["currently_attached"] is False
    assert await world.fail("VBD.unplug", world.root, vbd) == ["DEVICE_ALREADY_DETACHED", vbd]
    await world.call("VBD.set_unpluggable", world.root, vbd, False)
    await world.call("VBD.plug", world.root, vbd)
    assert await world.fail("VBD.unplug_force", world.root, vbd) == ["VBD_NOT_UNPLUGGABLE", vbd]


async def test_rw_sharing_is_refused(world: World) -> None:
    vdi = await new_vdi(world, await default_sr(world))
    a, b = await new_vm(world, "Running"), await new_vm(world, "Running")
    va, vb = await new_vbd(world, a, vdi), await new_vbd(world, b, vdi)
    await world.call("VBD.plug", world.root, va)
    assert await world.fail("VBD.plug", world.root, vb) == ["VDI_IN_USE", vdi]
    await world.call("VDI.set_sharable", world.root, vdi, True)
    await world.call("VBD.plug", world.root, vb)


async def test_hooks_reach_the_vm_layer(world: World) -> None:
    calls: list[tuple[str, ...]] = []

    class Hooks:
        async def vbd_plug(self, vm: str, vbd: str) -> None:
            calls.append(("plug", vm, vbd))

        async def vbd_unplug(self, vm: str, vbd: str, force: bool) -> None:
            calls.append(("unplug", vm, vbd, str(force)))

        async def vbd_insert(self, vm: str, vbd: str, vdi: str) -> None:
            calls.append(("insert", vm, vbd, vdi))

        async def vbd_eject(self, vm: str, vbd: str) -> None:
            calls.append(("eject", vm, vbd))

    storage(world).device_hooks = Hooks()
    vm = await new_vm(world, "Running")
    vbd = await new_vbd(world, vm, await new_vdi(world, await default_sr(world)))
    await world.call("VBD.plug", world.root, vbd)
    await world.call("VBD.unplug_force", world.root, vbd)
    cd = await new_vbd(world, vm, NULL_REF, type="CD", mode="RO", empty=True)
    iso = await iso_vdi(world)
    await world.call("VBD.insert", world.root, cd, iso)
    await world.call("VBD.eject", world.root, cd)
    assert calls == [
        ("plug", vm, vbd),
        ("unplug", vm, vbd, "True"),
        ("insert", vm, cd, iso),
        ("eject", vm, cd),
    ]


async def test_insert_and_eject(world: World) -> None:
    vm = await new_vm(world)
    iso = await iso_vdi(world)
    cd = await new_vbd(world, vm, NULL_REF, type="CD", mode="RO", empty=True)
    assert await world.fail("VBD.eject", world.root, cd) == ["VBD_IS_EMPTY", cd]
    await world.call("VBD.insert", world.root, cd, iso)
    rec = await world.record("VBD", cd)
    assert rec["VDI"] == iso and rec["empty"] is False
    assert cd in (await world.record("VDI", iso))["VBDs"]
    assert await world.fail("VBD.insert", world.root, cd, iso) == ["VBD_NOT_EMPTY", cd]
    await world.call("VBD.eject", world.root, cd)
    rec = await world.record("VBD", cd)
    assert rec["VDI"] == NULL_REF and rec["empty"] is True
    assert (await world.record("VDI", iso))["VBDs"] == []
    disk = await new_vbd(world, vm, await new_vdi(world, await default_sr(world)))
    assert await world.fail("VBD.insert", world.root, disk, iso) == [
        "VBD_NOT_REMOVABLE_MEDIA",
        disk,
    ]
    await set_power(world, vm, "Suspended")
    assert await world.fail("VBD.insert", world.root, cd, iso) == [
        "VM_BAD_POWER_STATE",
        vm,
        "halted, running",
        "suspended",
    ]


async def test_set_mode_needs_a_halted_vm(world: World) -> None:
    vm = await new_vm(world, "Running")
    vbd = await new_vbd(world, vm, await new_vdi(world, await default_sr(world)))
    assert await world.fail("VBD.set_mode", world.root, vbd, "RO") == [
        "VM_BAD_POWER_STATE",
        vm,
        "halted",
        "running",
    ]
    await set_power(world, vm, "Halted")
    await world.call("VBD.set_mode", world.root, vbd, "RO")
    assert (await world.record("VBD", vbd))["mode"] == "RO"


async def test_assert_attachable(world: World) -> None:
    vdi = await new_vdi(world, await default_sr(world))
    running = await new_vm(world, "Running")
    plugged = await new_vbd(world, running, vdi)
    await world.call("VBD.plug", world.root, plugged)
    other = await new_vbd(world, await new_vm(world), vdi)
    assert await world.fail("VBD.assert_attachable", world.root, other) == ["VDI_IN_USE", vdi]


async def test_vm_destroy_takes_its_vbds_not_its_disks(world: World) -> None:
    vdi = await new_vdi(world, await default_sr(world))
    vm = await new_vm(world)
    vbd = await new_vbd(world, vm, vdi)
    metrics = (await world.record("VBD", vbd))["metrics"]
    await world.call("VM.destroy", world.root, vm)
    assert world.store.get("VBD", vbd) is None
    assert world.store.get("VBD_metrics", metrics) is None
    rec = await world.record("VDI", vdi)
    assert rec["VBDs"] == [] and "destroy" in rec["allowed_operations"]
