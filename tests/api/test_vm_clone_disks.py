"""VM.clone / VM.copy of VMs with disks, and the suspend image of a destroyed VM."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from openxapi.api.handlers import vdi as vdi_handlers
from openxapi.api.vm_domains import stop_domains
from openxapi.api.vm_templates import disks_xml
from openxapi.spec.model import NULL_REF
from tests.api.storage_kit import new_sr, new_vbd, vdi_bytes, write_vdi
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


async def installed(w: World, sizes: tuple[int, ...] = (4 * MIB,)) -> tuple[str, str]:
    """A VM from a default template with one disk per size on a new dummy SR; (vm, sr)."""
    sr = await new_sr(w, "dummy")
    sr_uuid = rec(w, "SR", sr)["uuid"]
    (tmpl,) = await w.call("VM.get_by_name_label", w.root, "Debian Bookworm 12")
    vm = await w.call("VM.clone", w.root, tmpl, "src")
    spec = [(str(i), size, sr_uuid, i == 0, "system") for i, size in enumerate(sizes)]
    await w.call("VM.remove_from_other_config", w.root, vm, "disks")
    await w.call("VM.add_to_other_config", w.root, vm, "disks", disks_xml(spec))
    await w.call("VM.provision", w.root, vm)
    await w.call("VM.set_suspend_SR", w.root, vm, sr)
    return vm, sr


def as_checkpoint(w: World, vm: str) -> None:
    """Make a suspended VM look like a checkpoint: a snapshot whose disks are not in use."""
    from openxapi.api.storage_access import storage_of

    w.store.update("VM", vm, {"is_a_snapshot": True})
    for vbd in rec(w, "VM", vm)["VBDs"]:
        w.store.update("VBD", vbd, {"currently_attached": False})
    storage_of(w.state).refresh_vm(vm)


def disks(w: World, vm: str) -> list[dict[str, Any]]:
    vbds = [rec(w, "VBD", v) for v in rec(w, "VM", vm)["VBDs"]]
    return sorted(vbds, key=lambda v: v["userdevice"])


def counts(w: World) -> tuple[int, ...]:
    return tuple(len(w.store.table(c)) for c in ("VM", "VDI", "VBD", "VIF", "VM_metrics"))


async def test_clone_clones_each_disk_and_recreates_the_vbds(w: World) -> None:
    vm, sr = await installed(w, (4 * MIB, 2 * MIB))
    first = disks(w, vm)[0]["VDI"]
    await write_vdi(w, first, [(0, b"boot sector"), (MIB, b"data")])
    copy = await w.call("VM.clone", w.root, vm, "copy")
    old, new = disks(w, vm), disks(w, copy)
    assert [v["userdevice"] for v in new] == [v["userdevice"] for v in old] == ["0", "1"]
    assert [v["bootable"] for v in new] == [True, False]
    for a, b in zip(old, new, strict=True):
        assert b["VDI"] != a["VDI"] and b["VM"] == copy and b["type"] == "Disk"
        assert b["other_config"]["owner"] == "" and not b["currently_attached"]
        va, vb = rec(w, "VDI", a["VDI"]), rec(w, "VDI", b["VDI"])
        assert vb["SR"] == sr and vb["virtual_size"] == va["virtual_size"]
        assert not vb["is_a_snapshot"]
    assert await vdi_bytes(w, new[0]["VDI"]) == await vdi_bytes(w, first)
    await write_vdi(w, new[0]["VDI"], [(0, b"changed")])
    assert (await vdi_bytes(w, first)).startswith(b"boot sector")
    assert rec(w, "VM", vm)["current_operations"] == {}
    assert "clone" in rec(w, "VM", copy)["allowed_operations"]


async def test_copy_places_the_disks_on_the_given_sr_or_their_own(w: World) -> None:
    vm, sr = await installed(w)
    other = await new_sr(w, "dummy")
    await write_vdi(w, disks(w, vm)[0]["VDI"], [(0, b"payload")])
    moved = await w.call("VM.copy", w.root, vm, "moved", other)
    (vbd,) = disks(w, moved)
    assert rec(w, "VDI", vbd["VDI"])["SR"] == other
    assert (await vdi_bytes(w, vbd["VDI"])).startswith(b"payload")
    here = await w.call("VM.copy", w.root, vm, "here", NULL_REF)
    (vbd,) = disks(w, here)
    assert rec(w, "VDI", vbd["VDI"])["SR"] == sr
    assert vbd["VDI"] != disks(w, vm)[0]["VDI"]


async def test_empty_cd_drives_stay_empty(w: World) -> None:
    vm, _ = await installed(w)
    await new_vbd(w, vm, NULL_REF, type="CD", mode="RO", empty=True, userdevice="3")
    copy = await w.call("VM.clone", w.root, vm, "copy")
    cd = next(v for v in disks(w, copy) if v["type"] == "CD")
    assert cd["empty"] and cd["VDI"] == NULL_REF and cd["userdevice"] == "3"
    assert "owner" not in cd["other_config"]


async def test_a_failed_disk_clone_leaves_nothing_behind(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    vm, _ = await installed(w, (MIB, MIB))
    real = vdi_handlers.fork_vdi
    calls = 0

    async def failing(*args: Any) -> str:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("disk clone failed")
        return await real(*args)

    monkeypatch.setattr(vdi_handlers, "fork_vdi", failing)
    before = counts(w)
    assert (await w.fail("VM.clone", w.root, vm, "x"))[0] == "INTERNAL_ERROR"
    assert counts(w) == before and calls == 2
    assert rec(w, "VM", vm)["current_operations"] == {}
    for vbd in disks(w, vm):
        assert rec(w, "VDI", vbd["VDI"])["current_operations"] == {}


async def test_a_suspended_vm_is_not_cloned_but_a_suspended_snapshot_is(w: World) -> None:
    vm, _ = await installed(w)
    await w.call("VM.start", w.root, vm, False, False)
    await w.call("VM.suspend", w.root, vm)
    assert await w.fail("VM.clone", w.root, vm, "x") == [
        "VM_BAD_POWER_STATE",
        vm,
        "halted",
        "suspended",
    ]
    as_checkpoint(w, vm)
    copy = await w.call("VM.clone", w.root, vm, "from-checkpoint")
    new, old = rec(w, "VM", copy), rec(w, "VM", vm)
    assert new["power_state"] == "Suspended"
    assert new["suspend_VDI"] not in (NULL_REF, old["suspend_VDI"])
    image = rec(w, "VDI", new["suspend_VDI"])
    assert image["virtual_size"] == rec(w, "VDI", old["suspend_VDI"])["virtual_size"]


async def test_destroying_a_suspended_vm_destroys_its_suspend_image(w: World) -> None:
    vm, _ = await installed(w)
    await w.call("VM.start", w.root, vm, False, False)
    await w.call("VM.suspend", w.root, vm)
    image = rec(w, "VM", vm)["suspend_VDI"]
    assert w.store.get("VDI", image) is not None
    await w.call("VM.destroy", w.root, vm)
    assert w.store.get("VM", vm) is None and w.store.get("VDI", image) is None
    assert not any(v["type"] == "suspend" for v in w.store.table("VDI").values())


async def test_copy_refuses_an_iso_sr_and_halts_a_copied_checkpoint(w: World) -> None:
    from tests.api.storage_kit import sr_named

    vm, _ = await installed(w)
    iso = await sr_named(w, "ISO library")
    assert await w.fail("VM.copy", w.root, vm, "x", iso) == [
        "OPERATION_NOT_ALLOWED",
        "Cannot copy a VM's disks to an ISO SR",
    ]
    await w.call("VM.start", w.root, vm, False, False)
    await w.call("VM.suspend", w.root, vm)
    as_checkpoint(w, vm)
    images = sum(v["type"] == "suspend" for v in w.store.table("VDI").values())
    copy = await w.call("VM.copy", w.root, vm, "from-checkpoint", NULL_REF)
    new = rec(w, "VM", copy)
    assert new["power_state"] == "Halted" and new["suspend_VDI"] == NULL_REF
    assert "start" in new["allowed_operations"]
    assert sum(v["type"] == "suspend" for v in w.store.table("VDI").values()) == images
