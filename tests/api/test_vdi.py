"""VDI through the API: create, destroy, clone, snapshot, copy, resize, introduce, forget."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from openxapi.spec.model import NULL_REF
from tests.api.storage_kit import (
    MiB,
    default_sr,
    new_sr,
    new_vbd,
    new_vdi,
    new_vm,
    set_power,
    sr_named,
    storage,
    vdi_bytes,
    write_vdi,
)
from tests.api.world import World, create_args, decode_xml_value

DATA = os.urandom(200_000)


@pytest.fixture(params=["file", "dummy"])
async def sr(request: pytest.FixtureRequest, world: World) -> str:
    if request.param == "file":
        return await default_sr(world)
    return await new_sr(world, "dummy")


async def test_create_record(world: World, sr: str) -> None:
    vdi = await new_vdi(world, sr, MiB + 1, name_label="disk", other_config={"k": "v"}, tags=["t"])
    rec = await world.record("VDI", vdi)
    assert rec["virtual_size"] == MiB + 512
    assert (rec["name_label"], rec["other_config"], rec["tags"]) == ("disk", {"k": "v"}, ["t"])
    assert rec["managed"] is True and rec["missing"] is False and rec["location"]
    assert (rec["on_boot"], rec["snapshot_of"], rec["snapshot_time"]) == (
        "persist",
        NULL_REF,
        "19700101T00:00:00Z",
    )
    assert {"destroy", "clone", "snapshot", "resize", "copy"} <= set(rec["allowed_operations"])
    assert vdi in (await world.record("SR", sr))["VDIs"]


async def test_create_errors(world: World, sr: str) -> None:
    args = create_args(world.api, "VDI", SR=sr, virtual_size="512", type="cbt_metadata")
    assert await world.fail("VDI.create", world.root, args) == [
        "VDI_INCOMPATIBLE_TYPE",
        "",
        "cbt_metadata",
    ]
    bogus = "OpaqueRef:nope"
    args = create_args(world.api, "VDI", SR=bogus, virtual_size="512", type="user")
    assert await world.fail("VDI.create", world.root, args) == ["HANDLE_INVALID", "SR", bogus]


async def test_destroy_takes_the_vbds_along(world: World, sr: str) -> None:
    vdi = await new_vdi(world, sr)
    vm = await new_vm(world)
    vbd = await new_vbd(world, vm, vdi)
    metrics = (await world.record("VBD", vbd))["metrics"]
    world.store.update("VM", vm, {"suspend_VDI": vdi})
    await world.call("VDI.destroy", world.root, vdi)
    assert world.store.get("VDI", vdi) is None
    assert world.store.get("VBD", vbd) is None and world.store.get("VBD_metrics", metrics) is None
    vm_rec = await world.record("VM", vm)
    assert vm_rec["VBDs"] == [] and vm_rec["suspend_VDI"] == NULL_REF
    assert vdi not in (await world.record("SR", sr))["VDIs"]


async def test_vdi_in_use(world: World, sr: str) -> None:
    vdi = await new_vdi(world, sr)
    vm = await new_vm(world, "Running")
    vbd = await new_vbd(world, vm, vdi)
    await world.call("VBD.plug", world.root, vbd)
    rec = await world.record("VDI", vdi)
    assert "destroy" not in rec["allowed_operations"] and "snapshot" in rec["allowed_operations"]
    assert await world.fail("VDI.destroy", world.root, vdi) == ["VDI_IN_USE", vdi, "destroy"]
    assert await world.fail("VDI.resize", world.root, vdi, str(2 * MiB)) == [
        "VDI_IN_USE",
        vdi,
        "resize",
    ]
    assert await world.fail("VDI.forget", world.root, vdi) == ["VDI_IN_USE", vdi, "forget"]
    snap = await world.call("VDI.snapshot", world.root, vdi, {})
    assert (await world.record("VDI", snap))["is_a_snapshot"] is True
    await world.call("VBD.unplug", world.root, vbd)
    await world.call("VDI.destroy", world.root, vdi)


async def test_clone_and_snapshot_records(world: World, sr: str) -> None:
    src = await new_vdi(
        world, sr, 2 * MiB, name_label="src", other_config={"a": "b"}, sharable=False, tags=["x"]
    )
    clone = await world.call("VDI.clone", world.root, src, {})
    snap = await world.call("VDI.snapshot", world.root, src, {"ignored": "yes"})
    c, s, o = [await world.record("VDI", r) for r in (clone, snap, src)]
    for rec in (c, s):
        assert (rec["name_label"], rec["other_config"], rec["tags"]) == ("src", {"a": "b"}, ["x"])
        assert rec["virtual_size"] == 2 * MiB and rec["SR"] == sr
        assert rec["location"] != o["location"]
    assert c["is_a_snapshot"] is False and c["snapshot_of"] == NULL_REF
    assert s["is_a_snapshot"] is True and s["snapshot_of"] == src
    assert s["snapshot_time"] != "19700101T00:00:00Z"
    assert o["snapshots"] == [snap]
    assert (await world.record("SR", sr))["virtual_allocation"] == 6 * MiB


async def test_clone_and_snapshot_never_share_writes(world: World, sr: str) -> None:
    src = await new_vdi(world, sr)
    await write_vdi(world, src, [(0, DATA)])
    clone = await world.call("VDI.clone", world.root, src, {})
    snap = await world.call("VDI.snapshot", world.root, src, {})
    original = await vdi_bytes(world, src)
    await write_vdi(world, src, [(4096, b"\x09" * 70_000)])
    assert await vdi_bytes(world, clone) == original
    assert await vdi_bytes(world, snap) == original
    await write_vdi(world, clone, [(0, b"\x08" * 10)])
    assert (await vdi_bytes(world, src))[4096:4100] == b"\x09" * 4
    assert await vdi_bytes(world, snap) == original


async def test_chains_survive_destroying_the_parent(world: World, sr: str) -> None:
    src = await new_vdi(world, sr)
    await write_vdi(world, src, [(0, DATA)])
    original = await vdi_bytes(world, src)
    snap = await world.call("VDI.snapshot", world.root, src, {})
    clone_of_snap = await world.call("VDI.clone", world.root, snap, {})
    await world.call("VDI.destroy", world.root, src)
    assert (await world.record("VDI", snap))["snapshot_of"] == src  # dangling, as in xapi
    assert await vdi_bytes(world, snap) == original
    await world.call("VDI.destroy", world.root, snap)
    assert await vdi_bytes(world, clone_of_snap) == original
    assert (await world.record("SR", sr))["VDIs"] == [clone_of_snap]


async def test_sharable_disks_cannot_be_snapshotted(world: World, sr: str) -> None:
    vdi = await new_vdi(world, sr)
    await world.call("VDI.set_sharable", world.root, vdi, True)
    assert "snapshot" not in (await world.record("VDI", vdi))["allowed_operations"]
    assert await world.fail("VDI.snapshot", world.root, vdi, {}) == ["VDI_IS_SHARABLE", vdi]


async def test_copy_to_a_new_disk(world: World, sr: str) -> None:
    src = await new_vdi(world, sr, name_label="orig", read_only=True, sm_config={"x": "y"})
    await write_vdi(world, src, [(65536, DATA)])
    target = await new_sr(world, "dummy")
    task = await world.call("Async.VDI.copy", world.root, src, target, NULL_REF, NULL_REF)
    trec = await world.wait_task(task)
    assert trec["status"] == "success", trec["error_info"]
    copy = decode_xml_value(trec["result"])
    rec = await world.record("VDI", copy)
    assert (rec["SR"], rec["name_label"], rec["read_only"], rec["sm_config"]) == (
        target,
        "orig",
        False,
        {},
    )
    assert await vdi_bytes(world, copy) == await vdi_bytes(world, src)
    same_sr = await world.call("VDI.copy", world.root, src, NULL_REF, NULL_REF, NULL_REF)
    assert (await world.record("VDI", same_sr))["SR"] == sr


async def test_copy_into_an_existing_disk(world: World, sr: str) -> None:
    src = await new_vdi(world, sr)
    await write_vdi(world, src, [(0, b"\x01" * 65536)])
    base = await world.call("VDI.snapshot", world.root, src, {})
    await write_vdi(world, src, [(0, b"\x01" * 65536), (65536, b"\x02" * 65536)])
    into = await new_vdi(world, sr, 2 * MiB)
    await write_vdi(world, into, [(0, b"\x01" * 65536), (MiB, b"\x03" * 65536)])
    result = await world.call("VDI.copy", world.root, src, NULL_REF, base, into)
    assert result == into
    data = await vdi_bytes(world, into)
    assert data[65536 : 2 * 65536] == b"\x02" * 65536
    assert data[MiB : MiB + 65536] == b"\x03" * 65536
    small = await new_vdi(world, sr, MiB // 2)
    assert await world.fail("VDI.copy", world.root, src, NULL_REF, NULL_REF, small) == [
        "VDI_TOO_SMALL",
        small,
        str(MiB),
    ]
    await world.call("VDI.set_read_only", world.root, into, True)
    assert await world.fail("VDI.copy", world.root, src, NULL_REF, NULL_REF, into) == [
        "VDI_READONLY",
        into,
    ]


async def test_failed_copy_leaves_no_disk(world: World, sr: str) -> None:
    src = await new_vdi(world, sr, 64 * MiB)
    tiny = await new_sr(world, "dummy", size=32 * MiB)
    err = await world.fail("VDI.copy", world.root, src, tiny, NULL_REF, NULL_REF)
    assert err[0] == "SR_FULL"
    assert (await world.record("SR", tiny))["VDIs"] == []


async def test_resize(world: World, sr: str) -> None:
    vdi = await new_vdi(world, sr)
    await write_vdi(world, vdi, [(0, DATA)])
    await world.call("VDI.resize", world.root, vdi, str(3 * MiB))
    assert (await world.record("VDI", vdi))["virtual_size"] == 3 * MiB
    data = await vdi_bytes(world, vdi)
    assert data[: len(DATA)] == DATA and len(data) == 3 * MiB
    err = await world.fail("VDI.resize", world.root, vdi, str(MiB))
    assert err[0] == "SR_BACKEND_FAILURE_79"
    huge = (await world.record("SR", sr))["physical_size"] + MiB
    assert (await world.fail("VDI.resize", world.root, vdi, str(huge)))[0] == "SR_FULL"
    assert await world.fail("VDI.resize_online", world.root, vdi, str(4 * MiB)) == [
        "SR_OPERATION_NOT_SUPPORTED",
        sr,
    ]
    assert (await world.record("SR", sr))["virtual_allocation"] == 3 * MiB


async def test_forget_and_introduce(world: World) -> None:
    sr = await default_sr(world)
    vdi = await new_vdi(world, sr, name_label="keep me")
    rec = await world.record("VDI", vdi)
    await world.call("VDI.forget", world.root, vdi)
    assert world.store.get("VDI", vdi) is None
    again = await world.call(
        "VDI.introduce",
        world.root,
        rec["uuid"],
        "back",
        "",
        sr,
        "user",
        False,
        False,
        {"k": "v"},
        rec["location"],
        {},
        {},
        True,
        "0",
        "0",
        NULL_REF,
        False,
        "19700101T00:00:00Z",
        NULL_REF,
    )
    back = await world.record("VDI", again)
    assert (back["uuid"], back["name_label"], back["virtual_size"], back["other_config"]) == (
        rec["uuid"],
        "back",
        MiB,
        {"k": "v"},
    )
    args = [
        "",
        "",
        sr,
        "user",
        False,
        False,
        {},
        rec["location"],
    ]
    other = "0b7f3f7e-5d35-4c4c-9b5f-5e0d7ad8f2a1"
    assert await world.fail("VDI.introduce", world.root, other, *args) == [
        "LOCATION_NOT_UNIQUE",
        sr,
        rec["location"],
    ]
    assert await world.fail("VDI.introduce", world.root, "not-a-uuid", *args) == [
        "UUID_INVALID",
        "VDI",
        "not-a-uuid",
    ]
    args[-1] = "../../../etc/passwd"
    assert await world.fail("VDI.introduce", world.root, "", *args) == [
        "VDI_LOCATION_MISSING",
        sr,
        "../../../etc/passwd",
    ]


async def test_set_on_boot(world: World, sr: str) -> None:
    vdi = await new_vdi(world, sr)
    await world.call("VDI.set_on_boot", world.root, vdi, "persist")
    assert await world.fail("VDI.set_on_boot", world.root, vdi, "reset") == [
        "SR_OPERATION_NOT_SUPPORTED",
        sr,
    ]
    await world.call("VDI.set_allow_caching", world.root, vdi, True)
    assert (await world.record("VDI", vdi))["allow_caching"] is True


async def test_iso_vdis_are_not_destroyed(world: World) -> None:
    iso_dir = world.data_dir / "iso"
    iso_dir.mkdir(exist_ok=True)
    (iso_dir / "tools.iso").write_bytes(b"x" * 2048)
    sr = await sr_named(world, "ISO library")
    await world.call("SR.scan", world.root, sr)
    (vdi,) = (await world.record("SR", sr))["VDIs"]
    assert await world.fail("VDI.destroy", world.root, vdi) == ["SR_OPERATION_NOT_SUPPORTED", sr]
    assert await world.fail("VDI.clone", world.root, vdi, {}) == ["SR_OPERATION_NOT_SUPPORTED", sr]
    copy = await world.call(
        "VDI.copy", world.root, vdi, await default_sr(world), NULL_REF, NULL_REF
    )
    assert (await vdi_bytes(world, copy))[:2048] == b"x" * 2048


async def test_current_operations_show_the_task(world: World, sr: str) -> None:
    vdi = await new_vdi(world, sr, 8 * MiB)
    seen: list[dict[str, str]] = []
    st = storage(world)
    original = st.progress

    def spy(ctx, fraction):  # type: ignore[no-untyped-def]
        seen.append(dict(world.store.get("VDI", vdi)["current_operations"]))
        original(ctx, fraction)

    st.progress = spy  # type: ignore[method-assign]
    task = await world.call("Async.VDI.copy", world.root, vdi, sr, NULL_REF, NULL_REF)
    await world.wait_task(task)
    assert seen and all(ops == {task: "copy"} for ops in seen)
    assert (await world.record("VDI", vdi))["current_operations"] == {}


async def test_vm_suspended_power_state_does_not_block_disks(world: World, sr: str) -> None:
    vdi = await new_vdi(world, sr)
    vm = await new_vm(world)
    await new_vbd(world, vm, vdi)
    await set_power(world, vm, "Suspended")
    await world.call("VDI.clone", world.root, vdi, {})


async def test_live_snapshot_pivots_before_the_new_disk_exists(world: World) -> None:
    """A disk a running VM writes to: the hypervisor is switched onto the fresh overlay
    before the snapshot's own overlay is made."""
    from openxapi.storage import qemu_img

    sr = await default_sr(world)
    vdi = await new_vdi(world, sr)
    vm = await new_vm(world, "Running")
    vbd = await new_vbd(world, vm, vdi)
    await world.call("VBD.plug", world.root, vbd)
    root = world.data_dir / "sr" / (await world.record("SR", sr))["uuid"]
    seen: list[tuple[str, str | None, list[str]]] = []

    class Live:
        async def pivot(self, new_top: str) -> None:
            header = qemu_img.read_header(Path(new_top))
            visible = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
            seen.append((new_top, header.backing_file if header else None, visible))

    asked: list[str] = []

    def provider(ref: str) -> Live:
        asked.append(ref)
        return Live()

    storage(world).live_snapshot = provider
    snap = await world.call("VDI.snapshot", world.root, vdi, {})
    location = (await world.record("VDI", vdi))["location"]
    assert asked == [vbd]
    (top, backing, visible) = seen[0]
    assert top == str(root / f"{location}.qcow2")
    assert backing is not None and backing.startswith(".base-")
    assert visible == [f"{location}.qcow2"]
    snap_location = (await world.record("VDI", snap))["location"]
    assert (root / f"{snap_location}.qcow2").exists()
