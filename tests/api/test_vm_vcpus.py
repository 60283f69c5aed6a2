"""VM VCPU setters and VM.get_allowed_VBD_devices."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from openxapi.api.vm_domains import stop_domains
from openxapi.spec.model import NULL_REF
from tests.api.storage_kit import new_vbd
from tests.api.world import World, create_args

RULE = "VCPU values must satisfy: 0 < VCPUs_at_startup ≤ VCPUs_max"


@pytest.fixture
async def w(world: World) -> AsyncIterator[World]:
    yield world
    await stop_domains(world.state)


def rec(w: World, cls: str, ref: str) -> dict[str, Any]:
    r = w.store.get(cls, ref)
    assert r is not None
    return r


async def new_vm(w: World, **values: Any) -> str:
    values.setdefault("VCPUs_max", "4")
    values.setdefault("VCPUs_at_startup", "2")
    values.setdefault("memory_static_max", str(256 << 20))
    values.setdefault("memory_dynamic_max", str(256 << 20))
    values.setdefault("memory_dynamic_min", str(256 << 20))
    ref = await w.call("VM.create", w.root, create_args(w.api, "VM", **values))
    assert isinstance(ref, str)
    return ref


def dom0(w: World) -> str:
    return next(r for r, v in w.store.table("VM").items() if v["is_control_domain"])


async def test_set_vcpus_max_keeps_the_bounds_and_needs_a_halted_vm(w: World) -> None:
    vm = await new_vm(w)
    await w.call("VM.set_VCPUs_max", w.root, vm, 8)
    assert rec(w, "VM", vm)["VCPUs_max"] == 8
    assert await w.fail("VM.set_VCPUs_max", w.root, vm, 1) == ["INVALID_VALUE", RULE, "1"]
    assert await w.fail("VM.set_VCPUs_max", w.root, vm, 0) == ["INVALID_VALUE", RULE, "0"]
    await w.call("VM.start", w.root, vm, False, False)
    assert await w.fail("VM.set_VCPUs_max", w.root, vm, 6) == [
        "VM_BAD_POWER_STATE",
        vm,
        "halted",
        "running",
    ]
    assert await w.fail("VM.set_VCPUs_max", w.root, dom0(w), 6) == [
        "OPERATION_NOT_ALLOWED",
        "This operation is not allowed on dom0",
    ]


async def test_set_vcpus_at_startup_checks_only_the_bounds(w: World) -> None:
    vm = await new_vm(w)
    await w.call("VM.set_VCPUs_at_startup", w.root, vm, 4)
    assert rec(w, "VM", vm)["VCPUs_at_startup"] == 4
    assert await w.fail("VM.set_VCPUs_at_startup", w.root, vm, 5) == ["INVALID_VALUE", RULE, "5"]
    assert await w.fail("VM.set_VCPUs_at_startup", w.root, vm, 0) == ["INVALID_VALUE", RULE, "0"]
    assert await w.fail("VM.set_VCPUs_at_startup", w.root, dom0(w), 1) == [
        "OPERATION_NOT_ALLOWED",
        "set_VCPUs_at_startup is not allowed on dom0",
    ]


async def test_set_vcpus_number_live(w: World) -> None:
    vm = await new_vm(w)
    assert await w.fail("VM.set_VCPUs_number_live", w.root, vm, 3) == [
        "VM_BAD_POWER_STATE",
        vm,
        "running",
        "halted",
    ]
    await w.call("VM.start", w.root, vm, False, False)
    await w.call("VM.set_VCPUs_number_live", w.root, vm, 3)
    r = rec(w, "VM", vm)
    assert r["VCPUs_at_startup"] == 3 and rec(w, "VM_metrics", r["metrics"])["VCPUs_number"] == 3
    assert await w.fail("VM.set_VCPUs_number_live", w.root, vm, 5) == [
        "INVALID_VALUE",
        "VCPU values must satisfy: 0 < VCPUs ≤ VCPUs_max",
        "5",
    ]


async def test_allowed_vbd_devices(w: World) -> None:
    pv = await new_vm(w, HVM_boot_policy="", domain_type="pv")
    assert await w.call("VM.get_allowed_VBD_devices", w.root, pv) == [str(n) for n in range(255)]
    await new_vbd(w, pv, NULL_REF, type="CD", mode="RO", empty=True, userdevice="3")
    await new_vbd(w, pv, NULL_REF, type="CD", mode="RO", empty=True, userdevice="xvdb")
    allowed = await w.call("VM.get_allowed_VBD_devices", w.root, pv)
    assert "1" not in allowed and "3" not in allowed and allowed[:3] == ["0", "2", "4"]
    hvm = await new_vm(w, HVM_boot_policy="BIOS order", domain_type="hvm")
    await new_vbd(w, hvm, NULL_REF, type="CD", mode="RO", empty=True, userdevice="xvdb")
    allowed = await w.call("VM.get_allowed_VBD_devices", w.root, hvm)
    assert allowed[:2] == ["0", "1"] and len(allowed) == 255
    await new_vbd(w, hvm, NULL_REF, type="CD", mode="RO", empty=True, userdevice="hdc")
    assert "2" not in await w.call("VM.get_allowed_VBD_devices", w.root, hvm)
