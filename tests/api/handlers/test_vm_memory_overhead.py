"""The reference's memory model: compute_memory_overhead, maximise_memory and the shadow
multiplier setters.

Worked figures for a 256 MiB VM with 2 vCPUs: the shadow pool is
ceil((256*2 vCPU pages + 2*256 pages) / 256) = 4 MiB times the multiplier; Xen's per-vCPU
memory is ceil(38*2 / 256) = 1 MiB. HVM adds 1+1 MiB of extras, PV 0+1, PV-in-PVH 1+1
plus a shim of 23 + 256/90 = 25 MiB.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from openxapi.api.vm_domains import stop_domains
from tests.api.handlers.vm_kit import MIB, bad_power, dom0, new_vm, rec, running_vm
from tests.api.world import World

GIB = 1 << 30


@pytest.fixture
async def w(world: World) -> AsyncIterator[World]:
    yield world
    await stop_domains(world.state)


async def overhead(w: World, vm: str) -> int:
    value = await w.call("VM.compute_memory_overhead", w.root, vm)
    assert isinstance(value, int)
    return value


async def test_overhead_per_domain_type(w: World) -> None:
    assert await overhead(w, await new_vm(w)) == 7 * MIB
    assert await overhead(w, await new_vm(w, domain_type="pvh")) == 7 * MIB
    assert await overhead(w, await new_vm(w, domain_type="pv", HVM_boot_policy="")) == 6 * MIB
    assert await overhead(w, await new_vm(w, domain_type="pv_in_pvh")) == 32 * MIB
    # an unspecified type is derived from the boot policy
    assert await overhead(w, await new_vm(w, domain_type="unspecified")) == 7 * MIB
    unspecified_pv = await new_vm(w, domain_type="unspecified", HVM_boot_policy="")
    assert await overhead(w, unspecified_pv) == 6 * MIB


async def test_overhead_scales_the_shadow_pool_even_for_pv(w: World) -> None:
    assert await overhead(w, await new_vm(w, HVM_shadow_multiplier=2.5)) == 13 * MIB
    pv = await new_vm(w, domain_type="pv", HVM_boot_policy="", HVM_shadow_multiplier=4.0)
    assert await overhead(w, pv) == 18 * MIB
    big = await new_vm(w, VCPUs_max="64", memory_static_max=str(4 * GIB))
    # shadow ceil((16384 + 8192) / 256) = 96, per-vCPU ceil(2432 / 256) = 10
    assert await overhead(w, big) == (1 + 1 + 96 + 10) * MIB
    assert await w.fail("VM.compute_memory_overhead", w.root, "OpaqueRef:x") == [
        "HANDLE_INVALID",
        "VM",
        "OpaqueRef:x",
    ]


async def maximise(w: World, vm: str, total: int, approximate: bool = False) -> int:
    value = await w.call("VM.maximise_memory", w.root, vm, total, approximate)
    assert isinstance(value, int)
    return value


async def test_maximise_memory_fits_guest_and_overheads(w: World) -> None:
    vm = await new_vm(w)
    # 1011 MiB of guest + (1 + 1 + ceil((512 + 2022) / 256) + 1) = 13 MiB = 1 GiB exactly
    assert await maximise(w, vm, GIB) == 1011 * MIB
    assert await maximise(w, vm, GIB + MIB // 2) == 1011 * MIB  # rounded down to a MiB
    # room for 64 vCPUs: 940 + 1 + 1 + ceil((16384 + 1880) / 256) + 10 = 1024
    assert await maximise(w, vm, GIB, approximate=True) == 940 * MIB
    assert await maximise(w, vm, 0) == 0
    assert await maximise(w, vm, 5 * MIB) == 0
    assert (await w.fail("VM.maximise_memory", w.root, vm, -1, False))[0] == "INTERNAL_ERROR"


async def test_maximise_memory_uses_the_default_multiplier_for_pv(w: World) -> None:
    pv = await new_vm(w, domain_type="pv", HVM_boot_policy="", HVM_shadow_multiplier=4.0)
    assert await maximise(w, pv, GIB) == 1012 * MIB
    hvm = await new_vm(w, HVM_shadow_multiplier=4.0)
    # 982 + 1 + 1 + int(ceil((512 + 1964) / 256) * 4) + 1 = 1025 > 1024; 981 fits
    assert await maximise(w, hvm, GIB) == 981 * MIB


async def test_set_hvm_shadow_multiplier_on_a_halted_vm(w: World) -> None:
    vm = await new_vm(w)
    await w.call("VM.set_HVM_shadow_multiplier", w.root, vm, 2.5)
    r = rec(w, "VM", vm)
    assert r["HVM_shadow_multiplier"] == 2.5 and r["memory_overhead"] == 13 * MIB
    assert r["current_operations"] == {}
    for value, text in ((0.5, "0.5"), (0.0, "0."), (-3.0, "-3."), (1e-05, "1e-05")):
        assert await w.fail("VM.set_HVM_shadow_multiplier", w.root, vm, value) == [
            "INVALID_VALUE",
            "multiplier",
            text,
        ]
    assert rec(w, "VM", vm)["HVM_shadow_multiplier"] == 2.5


async def test_set_hvm_shadow_multiplier_follows_the_lifecycle(w: World) -> None:
    vm = await running_vm(w)
    assert await w.fail("VM.set_HVM_shadow_multiplier", w.root, vm, 0.5) == bad_power(
        vm, "halted", "running"
    )
    assert (await w.fail("VM.set_HVM_shadow_multiplier", w.root, dom0(w), 2.0))[0] == (
        "VM_BAD_POWER_STATE"
    )
    w.store.update("VM", dom0(w), {"power_state": "Halted"})
    assert await w.fail("VM.set_HVM_shadow_multiplier", w.root, dom0(w), 2.0) == [
        "OPERATION_NOT_ALLOWED",
        "This operation is not allowed on a control domain",
    ]


async def test_set_shadow_multiplier_live(w: World) -> None:
    halted = await new_vm(w)
    assert await w.fail("VM.set_shadow_multiplier_live", w.root, halted, 2.0) == bad_power(
        halted, "running", "halted"
    )
    vm = await running_vm(w)
    await w.call("VM.set_shadow_multiplier_live", w.root, vm, 2.5)
    r = rec(w, "VM", vm)
    assert r["HVM_shadow_multiplier"] == 2.5 and r["memory_overhead"] == 13 * MIB
    assert r["current_operations"] == {}
    assert await w.fail("VM.set_shadow_multiplier_live", w.root, vm, 0.25) == [
        "INVALID_VALUE",
        "multiplier",
        "0.25",
    ]


async def test_set_shadow_multiplier_live_leaves_a_pv_domain_alone(w: World) -> None:
    vm = await running_vm(w, domain_type="pv", HVM_boot_policy="")
    assert rec(w, "VM_metrics", rec(w, "VM", vm)["metrics"])["current_domain_type"] == "pv"
    await w.call("VM.set_shadow_multiplier_live", w.root, vm, 3.0)
    r = rec(w, "VM", vm)
    assert r["HVM_shadow_multiplier"] == 1.0 and r["memory_overhead"] == 6 * MIB
