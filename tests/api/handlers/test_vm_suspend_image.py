"""VM.set_suspend_VDI on the simulator backend with dummy SRs."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest

from openxapi.api.vm_domains import stop_domains
from tests.api.handlers.vm_kit import MIB, bad_power, new_vm, rec
from tests.api.storage_kit import new_sr, new_vdi, vdi_bytes, write_vdi
from tests.api.world import World


@pytest.fixture
async def w(world: World) -> AsyncIterator[World]:
    world.config.vm_shutdown_timeout = 0.2
    yield world
    await stop_domains(world.state)


async def suspended(w: World) -> tuple[str, str]:
    """A suspended VM and the SR holding its image."""
    sr = await new_sr(w, "dummy")
    vm = await new_vm(w, suspend_SR=sr)
    await w.call("VM.start", w.root, vm, False, False)
    await w.call("VM.suspend", w.root, vm)
    assert rec(w, "VM", vm)["power_state"] == "Suspended"
    return vm, sr


async def test_an_identical_copy_replaces_the_image(w: World) -> None:
    vm, sr = await suspended(w)
    image = rec(w, "VM", vm)["suspend_VDI"]
    await w.call("VM.set_suspend_VDI", w.root, vm, image)  # the same image: nothing to do
    copy = await w.call("VDI.copy", w.root, image, sr)
    await w.call("VM.set_suspend_VDI", w.root, vm, copy)
    assert rec(w, "VM", vm)["suspend_VDI"] == copy
    await w.call("VM.resume", w.root, vm, False, False)
    assert rec(w, "VM", vm)["power_state"] == "Running"


async def test_a_different_image_is_refused_with_both_checksums(w: World) -> None:
    vm, sr = await suspended(w)
    image = rec(w, "VM", vm)["suspend_VDI"]
    other = await new_vdi(w, sr, rec(w, "VDI", image)["virtual_size"])
    await write_vdi(w, other, [(0, b"something else")])
    sums = [hashlib.md5(await vdi_bytes(w, v)).hexdigest() for v in (image, other)]
    assert await w.fail("VM.set_suspend_VDI", w.root, vm, other) == [
        "SUSPEND_VDI_REPLACEMENT_IS_NOT_IDENTICAL",
        f"{rec(w, 'VDI', image)['uuid']} : {sums[0]}",
        f"{rec(w, 'VDI', other)['uuid']} : {sums[1]}",
    ]
    assert rec(w, "VM", vm)["suspend_VDI"] == image


async def test_checks_come_in_the_reference_order(w: World) -> None:
    halted = await new_vm(w)
    vm, sr = await suspended(w)
    image = rec(w, "VM", vm)["suspend_VDI"]
    assert await w.fail("VM.set_suspend_VDI", w.root, halted, image) == bad_power(
        halted, "suspended", "halted"
    )
    assert await w.fail("VM.set_suspend_VDI", w.root, vm, "OpaqueRef:v") == [
        "HANDLE_INVALID",
        "VDI",
        "OpaqueRef:v",
    ]
    cbt = await new_vdi(w, sr, MIB)
    w.store.update("VDI", cbt, {"type": "cbt_metadata"})
    assert await w.fail("VM.set_suspend_VDI", w.root, vm, cbt) == [
        "VDI_INCOMPATIBLE_TYPE",
        vm,
        "CBT metadata",
    ]
    elsewhere = await new_sr(w, "dummy")
    unseen = await new_vdi(w, elsewhere, MIB)
    for pbd in rec(w, "SR", elsewhere)["PBDs"]:
        w.store.update("PBD", pbd, {"currently_attached": False})
    assert await w.fail("VM.set_suspend_VDI", w.root, vm, unseen) == ["NO_HOSTS_AVAILABLE"]
