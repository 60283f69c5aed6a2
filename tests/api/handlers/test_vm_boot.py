"""VM.set_HVM_boot_policy, VM.set_domain_type and VM.set_has_vendor_device."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from openxapi.api.vm_domains import stop_domains
from tests.api.handlers.vm_kit import bad_power, new_vm, rec, running_vm
from tests.api.world import World

BAD = "OpaqueRef:no-such-vm"


@pytest.fixture
async def w(world: World) -> AsyncIterator[World]:
    yield world
    await stop_domains(world.state)


async def test_boot_policy_decides_the_domain_type(w: World) -> None:
    vm = await new_vm(w)
    await w.call("VM.set_HVM_boot_policy", w.root, vm, "")
    r = rec(w, "VM", vm)
    assert (r["domain_type"], r["HVM_boot_policy"]) == ("pv", "")
    await w.call("VM.set_HVM_boot_policy", w.root, vm, "custom order")
    r = rec(w, "VM", vm)
    assert (r["domain_type"], r["HVM_boot_policy"]) == ("hvm", "custom order")
    assert "start" in r["allowed_operations"]
    assert await w.fail("VM.set_HVM_boot_policy", w.root, BAD, "") == ["HANDLE_INVALID", "VM", BAD]


async def test_boot_policy_changes_in_any_power_state(w: World) -> None:
    vm = await running_vm(w)
    await w.call("VM.set_HVM_boot_policy", w.root, vm, "")
    assert rec(w, "VM", vm)["domain_type"] == "pv"


async def test_domain_type_decides_the_boot_policy(w: World) -> None:
    vm = await new_vm(w)
    for kind, policy in (("pv", ""), ("hvm", "BIOS order"), ("pvh", ""), ("pv_in_pvh", "")):
        await w.call("VM.set_domain_type", w.root, vm, kind)
        r = rec(w, "VM", vm)
        assert (r["domain_type"], r["HVM_boot_policy"]) == (kind, policy)


async def test_domain_type_unspecified_is_refused_before_the_vm_is_looked_at(w: World) -> None:
    vm = await new_vm(w)
    expected = ["INVALID_VALUE", "domain_type", "unspecified"]
    assert await w.fail("VM.set_domain_type", w.root, vm, "unspecified") == expected
    assert await w.fail("VM.set_domain_type", w.root, BAD, "unspecified") == expected
    assert await w.fail("VM.set_domain_type", w.root, BAD, "hvm") == ["HANDLE_INVALID", "VM", BAD]
    assert await w.fail("VM.set_domain_type", w.root, vm, "xen") == ["FIELD_TYPE_ERROR", "value"]
    assert rec(w, "VM", vm)["domain_type"] == "hvm"


async def test_vendor_device_raises_the_platform_version(w: World) -> None:
    vm = await new_vm(w, has_vendor_device=False)
    await w.call("VM.set_has_vendor_device", w.root, vm, True)
    r = rec(w, "VM", vm)
    assert r["has_vendor_device"] is True and r["hardware_platform_version"] == 2
    await w.call("VM.set_has_vendor_device", w.root, vm, False)
    r = rec(w, "VM", vm)
    assert r["has_vendor_device"] is False and r["hardware_platform_version"] == 2
    other = await new_vm(w, has_vendor_device=False, hardware_platform_version="5")
    await w.call("VM.set_has_vendor_device", w.root, other, True)
    assert rec(w, "VM", other)["hardware_platform_version"] == 5


async def test_vendor_device_needs_a_halted_vm(w: World) -> None:
    vm = await running_vm(w)
    assert await w.fail("VM.set_has_vendor_device", w.root, vm, False) == bad_power(
        vm, "halted", "running"
    )
    assert rec(w, "VM", vm)["has_vendor_device"] is True
