"""VM.get_SRs_required_for_recovery and VM.assert_can_be_recovered."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from openxapi.api.vm_domains import stop_domains
from tests.api.handlers.vm_kit import MIB, new_vm, rec
from tests.api.storage_kit import new_sr, new_vbd, new_vdi
from tests.api.world import World


@pytest.fixture
async def w(world: World) -> AsyncIterator[World]:
    yield world
    await stop_domains(world.state)


def unplug(w: World, sr: str) -> None:
    for pbd in rec(w, "SR", sr)["PBDs"]:
        w.store.update("PBD", pbd, {"currently_attached": False})


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


async def test_recovery_checks_need_a_vm(w: World) -> None:
    bad = "OpaqueRef:x"
    for name in ("VM.get_SRs_required_for_recovery", "VM.assert_can_be_recovered"):
        assert await w.fail(name, w.root, bad, w.root) == ["HANDLE_INVALID", "VM", bad]
    empty = await new_vm(w)
    assert await w.call("VM.get_SRs_required_for_recovery", w.root, empty, w.root) == []
