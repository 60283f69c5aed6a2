"""SR, PBD and SM through the API: first-start SRs, lifecycle, scan, probe, sizes."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from openxapi.api.context import CallContext
from openxapi.spec.model import NULL_REF
from openxapi.storage import qemu_img
from tests.api.storage_kit import (
    MiB,
    default_sr,
    new_sr,
    new_vbd,
    new_vdi,
    new_vm,
    sr_named,
    storage,
)
from tests.api.world import World, create_args


async def test_first_start_has_local_storage_and_an_iso_library(world: World) -> None:
    local = await default_sr(world)
    rec = await world.record("SR", local)
    assert (rec["name_label"], rec["type"], rec["content_type"]) == (
        "Local storage",
        "file",
        "user",
    )
    assert rec["shared"] is False and rec["other_config"]["i18n-key"] == "local-storage"
    (pbd,) = rec["PBDs"]
    prec = await world.record("PBD", pbd)
    assert prec["host"] == world.state.host_ref and prec["currently_attached"] is True
    assert prec["device_config"]["location"] == str(world.data_dir / "sr" / rec["uuid"])
    pool = await world.record("pool", world.state.pool_ref)
    assert pool["suspend_image_SR"] == pool["crash_dump_SR"] == local
    host = await world.record("host", world.state.host_ref)
    assert host["suspend_image_sr"] == local
    iso = await world.record("SR", await sr_named(world, "ISO library"))
    assert (iso["type"], iso["content_type"]) == ("iso", "iso")
    iso_pbd = await world.record("PBD", iso["PBDs"][0])
    assert iso_pbd["device_config"]["location"] == str(world.data_dir / "iso")


async def test_sm_records_describe_the_drivers(world: World) -> None:
    records = [await world.record("SM", r) for r in await world.call("SM.get_all", world.root)]
    by_type = {r["type"]: r for r in records}
    assert set(by_type) == {"file", "iso", "dummy"}
    assert by_type["file"]["features"]["VDI_CLONE"] == 1
    assert "VDI_CREATE" not in by_type["iso"]["features"]
    assert sorted(by_type["file"]["capabilities"]) == sorted(by_type["file"]["features"])
    assert by_type["file"]["supported_image_formats"] == ["qcow2"]
    types = await world.call("SR.get_supported_types", world.root)
    assert sorted(types) == ["dummy", "file", "iso"]


async def test_allowed_operations(world: World) -> None:
    local = await world.record("SR", await default_sr(world))
    assert {"scan", "vdi_create", "vdi_clone", "vdi_snapshot"} <= set(local["allowed_operations"])
    assert "destroy" not in local["allowed_operations"]
    iso = await world.record("SR", await sr_named(world, "ISO library"))
    assert "vdi_create" not in iso["allowed_operations"]


async def test_create_plug_unplug_destroy(world: World) -> None:
    sr = await new_sr(world, "file")
    rec = await world.record("SR", sr)
    assert rec["physical_size"] > 0 and rec["virtual_allocation"] == 0
    root = world.data_dir / "sr" / rec["uuid"]
    assert root.is_dir()
    (pbd,) = rec["PBDs"]
    assert await world.fail("SR.destroy", world.root, sr) == ["SR_HAS_PBD", sr]
    assert await world.fail("SR.forget", world.root, sr) == ["SR_HAS_PBD", sr]
    assert await world.fail("PBD.destroy", world.root, pbd) == [
        "OPERATION_NOT_ALLOWED",
        "PBD is currently attached",
    ]
    vdi = await new_vdi(world, sr)
    await world.call("PBD.unplug", world.root, pbd)
    await world.call("PBD.unplug", world.root, pbd)
    assert await world.fail("SR.destroy", world.root, sr) == ["SR_NOT_EMPTY"]
    assert await world.fail("VDI.destroy", world.root, vdi) == ["SR_HAS_NO_PBDS", sr]
    await world.call("PBD.plug", world.root, pbd)
    await world.call("VDI.destroy", world.root, vdi)
    await world.call("PBD.unplug", world.root, pbd)
    assert "destroy" in (await world.record("SR", sr))["allowed_operations"]
    await world.call("SR.destroy", world.root, sr)
    assert not root.exists()
    assert await world.fail("SR.get_record", world.root, sr) == ["HANDLE_INVALID", "SR", sr]
    assert world.store.get("PBD", pbd) is None


async def test_create_failures(world: World) -> None:
    host = world.state.host_ref
    err = await world.fail("SR.create", world.root, host, {}, "0", "x", "", "nfs", "", False, {})
    assert err == ["SR_UNKNOWN_DRIVER", "nfs"]
    err = await world.fail(
        "SR.create", world.root, host, {"location": "/etc"}, "0", "x", "", "ISO", "iso", False, {}
    )
    assert err == ["INVALID_VALUE", "device_config:location", "/etc"]
    assert await world.call("SR.get_by_name_label", world.root, "x") == []
    assert await world.fail("SR.make", world.root, host, {}, "0", "", "", "file", "", {}) == [
        "MESSAGE_DEPRECATED"
    ]


async def test_indestructible(world: World) -> None:
    sr = await new_sr(world)
    await world.call("SR.add_to_other_config", world.root, sr, "indestructible", "true")
    pbd = (await world.record("SR", sr))["PBDs"][0]
    await world.call("PBD.unplug", world.root, pbd)
    assert await world.fail("SR.destroy", world.root, sr) == ["SR_INDESTRUCTIBLE", sr]


async def test_introduce_pbd_plug_scan_finds_the_disks(world: World) -> None:
    """The reference's way of re-attaching an SR: forget, introduce, PBD.create, plug."""
    sr = await new_sr(world, "file")
    vdi = await new_vdi(world, sr, 2 * MiB)
    rec = await world.record("SR", sr)
    vdi_uuid = (await world.record("VDI", vdi))["uuid"]
    await world.call("PBD.unplug", world.root, rec["PBDs"][0])
    await world.call("SR.forget", world.root, sr)
    assert world.store.get("VDI", vdi) is None
    again = await world.call(
        "SR.introduce", world.root, rec["uuid"], "back", "", "file", "user", False, {}
    )
    fresh = await world.record("SR", again)
    assert (fresh["physical_size"], fresh["physical_utilisation"], fresh["virtual_allocation"]) == (
        -1,
        -1,
        0,
    )
    assert await world.fail(
        "SR.introduce", world.root, rec["uuid"], "", "", "file", "user", False, {}
    ) == ["SR_UUID_EXISTS", rec["uuid"]]
    pbd_args = create_args(world.api, "PBD", host=world.state.host_ref, SR=again)
    pbd = await world.call("PBD.create", world.root, pbd_args)
    assert await world.fail("PBD.create", world.root, pbd_args) == [
        "PBD_EXISTS",
        again,
        world.state.host_ref,
        pbd,
    ]
    await world.call("PBD.plug", world.root, pbd)
    (found,) = (await world.record("SR", again))["VDIs"]
    vrec = await world.record("VDI", found)
    assert vrec["uuid"] == vdi_uuid and vrec["virtual_size"] == 2 * MiB
    assert (await world.record("SR", again))["virtual_allocation"] == 2 * MiB


async def test_pbd_with_srmaster_is_refused(world: World) -> None:
    sr = await world.call("SR.introduce", world.root, "", "x", "", "dummy", "user", False, {})
    args = create_args(
        world.api, "PBD", host=world.state.host_ref, SR=sr, device_config={"SRmaster": "true"}
    )
    assert await world.fail("PBD.create", world.root, args) == [
        "INVALID_VALUE",
        "device_config",
        "SRmaster",
    ]


async def test_plug_unknown_driver(world: World) -> None:
    sr = await world.call("SR.introduce", world.root, "", "x", "", "lvm", "user", False, {})
    pbd = await world.call(
        "PBD.create", world.root, create_args(world.api, "PBD", host=world.state.host_ref, SR=sr)
    )
    assert await world.fail("PBD.plug", world.root, pbd) == ["SR_UNKNOWN_DRIVER", "lvm"]
    assert (await world.record("PBD", pbd))["currently_attached"] is False


async def test_unplug_refused_while_a_disk_is_attached(world: World) -> None:
    sr = await new_sr(world)
    vdi = await new_vdi(world, sr)
    vm = await new_vm(world, "Running")
    vbd = await new_vbd(world, vm, vdi)
    await world.call("VBD.plug", world.root, vbd)
    pbd = (await world.record("SR", sr))["PBDs"][0]
    assert await world.fail("PBD.unplug", world.root, pbd) == ["VDI_IN_USE", vdi]


async def test_scan_matches_records_to_files(world: World) -> None:
    sr = await default_sr(world)
    rec = await world.record("SR", sr)
    root = world.data_dir / "sr" / rec["uuid"]
    keep = await new_vdi(world, sr)
    gone = await new_vdi(world, sr)
    await qemu_img.create(root / "added-by-hand.qcow2", 3 * MiB)
    os.unlink(root / f"{(await world.record('VDI', gone))['location']}.qcow2")
    await world.call("SR.scan", world.root, sr)
    vdis = {
        (await world.record("VDI", v))["location"]: v
        for v in (await world.record("SR", sr))["VDIs"]
    }
    assert set(vdis) == {(await world.record("VDI", keep))["location"], "added-by-hand"}
    added = await world.record("VDI", vdis["added-by-hand"])
    assert added["virtual_size"] == 3 * MiB and added["managed"] is True
    assert (await world.record("SR", sr))["virtual_allocation"] == 4 * MiB


async def test_iso_library_is_found_by_scan(world: World) -> None:
    iso_dir = world.data_dir / "iso"
    iso_dir.mkdir(exist_ok=True)
    (iso_dir / "debian.iso").write_bytes(b"\x01" * 4096)
    (iso_dir / "readme.txt").write_text("not an image")
    sr = await sr_named(world, "ISO library")
    await world.call("SR.scan", world.root, sr)
    (vdi,) = (await world.record("SR", sr))["VDIs"]
    rec = await world.record("VDI", vdi)
    assert (rec["name_label"], rec["location"], rec["virtual_size"], rec["read_only"]) == (
        "debian.iso",
        "debian.iso",
        4096,
        True,
    )
    assert "destroy" not in rec["allowed_operations"]
    args = create_args(world.api, "VDI", SR=sr, virtual_size="512", type="user")
    assert await world.fail("VDI.create", world.root, args) == ["SR_OPERATION_NOT_SUPPORTED", sr]
    (iso_dir / "debian.iso").unlink()
    await world.call("SR.scan", world.root, sr)
    assert (await world.record("SR", sr))["VDIs"] == []


async def test_probe(world: World) -> None:
    host = world.state.host_ref
    local = await default_sr(world)
    await world.call("SR.scan", world.root, local)
    sr_uuid = (await world.record("SR", local))["uuid"]
    xml = await world.call("SR.probe", world.root, host, {}, "file", {})
    assert xml.startswith("<?xml") and f"<UUID>{sr_uuid}</UUID>" in xml
    results = await world.call("SR.probe_ext", world.root, host, {}, "file", {})
    mine = next(r for r in results if r["sr"] and r["sr"]["uuid"] == sr_uuid)
    assert mine["complete"] is True and mine["sr"]["total_space"] > 0
    assert await world.call("SR.probe_ext", world.root, host, {"location": "/etc"}, "iso", {}) == []
    assert await world.fail("SR.probe", world.root, host, {}, "nfs", {}) == [
        "SR_UNKNOWN_DRIVER",
        "nfs",
    ]


async def test_sizes_stay_true(world: World) -> None:
    sr = await new_sr(world, "file")
    a = await new_vdi(world, sr, 2 * MiB)
    b = await world.call("VDI.clone", world.root, a, {})
    await world.call("VDI.resize", world.root, a, str(3 * MiB))
    rec = await world.record("SR", sr)
    assert rec["virtual_allocation"] == 5 * MiB
    st = os.statvfs(world.data_dir)
    assert rec["physical_size"] == st.f_blocks * st.f_frsize
    assert 0 < rec["physical_utilisation"] <= rec["physical_size"]
    await world.call("VDI.destroy", world.root, b)
    assert (await world.record("SR", sr))["virtual_allocation"] == 3 * MiB
    await world.call("SR.update", world.root, sr)
    assert (await world.record("SR", sr))["physical_size"] == st.f_blocks * st.f_frsize


async def test_simulated_sr_sizes(world: World) -> None:
    sr = await new_sr(world, "dummy", size=64 * MiB)
    assert (await world.record("SR", sr))["physical_size"] == 64 * MiB
    await new_vdi(world, sr, 40 * MiB)
    args = create_args(world.api, "VDI", SR=sr, virtual_size=str(40 * MiB), type="user")
    assert await world.fail("VDI.create", world.root, args) == [
        "SR_FULL",
        str(40 * MiB),
        str(24 * MiB),
    ]


async def test_set_shared_and_physical_size(world: World) -> None:
    sr = await new_sr(world)
    await world.call("SR.set_shared", world.root, sr, True)
    assert (await world.record("SR", sr))["shared"] is True
    await world.call("SR.set_physical_size", world.root, sr, "12345")
    assert (await world.record("SR", sr))["physical_size"] == 12345


async def test_operations_wait_for_each_other(world: World) -> None:
    sr = await default_sr(world)
    st = storage(world)
    st.wait_limit = 0.2
    ctx = CallContext(task="OpaqueRef:holder")
    async with st.operation("SR", sr, "scan", ctx):
        rec = await world.record("SR", sr)
        assert rec["current_operations"] == {"OpaqueRef:holder": "scan"}
        assert rec["allowed_operations"] == []
        assert await world.fail("SR.scan", world.root, sr) == [
            "OTHER_OPERATION_IN_PROGRESS",
            "SR",
            sr,
            "scan",
            "OpaqueRef:holder",
        ]
    st.wait_limit = 5.0

    async def hold() -> None:
        async with st.operation("SR", sr, "update", ctx):
            await asyncio.sleep(0.1)

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    await world.call("SR.scan", world.root, sr)
    await holder
    assert (await world.record("SR", sr))["current_operations"] == {}


async def test_forget_leaves_the_files(world: World) -> None:
    sr = await new_sr(world, "file")
    vdi = await new_vdi(world, sr)
    vm = await new_vm(world)
    vbd = await new_vbd(world, vm, vdi)
    rec = await world.record("SR", sr)
    root = world.data_dir / "sr" / rec["uuid"]
    await world.call("PBD.unplug", world.root, rec["PBDs"][0])
    await world.call("SR.forget", world.root, sr)
    assert world.store.get("VBD", vbd) is None
    assert (await world.record("VM", vm))["VBDs"] == []
    assert len(os.listdir(root)) == 1
    shutil.rmtree(root)


async def test_destroying_the_default_sr_clears_the_pool_field(world: World) -> None:
    sr = await default_sr(world)
    await world.call("PBD.unplug", world.root, (await world.record("SR", sr))["PBDs"][0])
    await world.call("SR.forget", world.root, sr)
    pool = await world.record("pool", world.state.pool_ref)
    assert pool["default_SR"] == NULL_REF


@pytest.mark.parametrize("sr_type", ["file", "dummy"])
async def test_sr_full_on_an_oversized_vdi(world: World, sr_type: str) -> None:
    sr = await new_sr(world, sr_type)
    size = (await world.record("SR", sr))["physical_size"] + MiB
    args = create_args(world.api, "VDI", SR=sr, virtual_size=str(size), type="user")
    err = await world.fail("VDI.create", world.root, args)
    assert err[0] == "SR_FULL" and err[1] == str(size)
    assert (await world.record("SR", sr))["VDIs"] == []


async def test_an_sr_uuid_cannot_name_a_path(world: World) -> None:
    sr = await world.call(
        "SR.introduce", world.root, "../../escape", "x", "", "file", "", False, {}
    )
    pbd = await world.call(
        "PBD.create", world.root, create_args(world.api, "PBD", host=world.state.host_ref, SR=sr)
    )
    err = await world.fail("PBD.plug", world.root, pbd)
    assert err[0] == "INVALID_VALUE"
    assert not (world.data_dir.parent / "escape").exists()
    assert not (world.data_dir / "escape").exists()
