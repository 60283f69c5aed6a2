"""BIOS strings, the NVRAM map and VM.get_secureboot_readiness."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator

import pytest

from openxapi.api.vm_domains import stop_domains
from openxapi.spec.model import NULL_REF
from tests.api.handlers.vm_kit import bad_power, dom0, new_vm, rec, running_vm
from tests.api.world import World

GENERIC = {
    "bios-vendor": "Xen",
    "bios-version": "",
    "system-manufacturer": "Xen",
    "system-product-name": "HVM domU",
    "system-version": "",
    "system-serial-number": "",
    "baseboard-manufacturer": "",
    "baseboard-product-name": "",
    "baseboard-version": "",
    "baseboard-serial-number": "",
    "baseboard-asset-tag": "",
    "baseboard-location-in-chassis": "",
    "enclosure-asset-tag": "",
    "hp-rombios": "",
    "oem-1": "Xen",
    "oem-2": "MS_VM_CERT/SHA1/bdbeb6e0a816d43fa6d3fe8aaef04c2bad9d3e3d",
}


@pytest.fixture
async def w(world: World) -> AsyncIterator[World]:
    yield world
    await stop_domains(world.state)


# ---- BIOS strings -------------------------------------------------------------------------
async def test_set_bios_strings_overrides_the_generic_set_once(w: World) -> None:
    vm = await new_vm(w)
    await w.call("VM.set_bios_strings", w.root, vm, {"system-serial-number": "S-1"})
    strings = rec(w, "VM", vm)["bios_strings"]
    assert strings == {**GENERIC, "system-serial-number": "S-1"}
    assert list(strings) == list(GENERIC)
    assert await w.fail("VM.set_bios_strings", w.root, vm, {}) == ["VM_BIOS_STRINGS_ALREADY_SET"]


async def test_set_bios_strings_validates_each_entry_in_order(w: World) -> None:
    vm = await new_vm(w)
    long = "x" * 513
    cases = [
        ({"oem-1": "x"}, ["INVALID_VALUE", "oem-1", "Unknown key"]),
        ({"bios-vendor": ""}, ["INVALID_VALUE", "bios-vendor", "Value provided is empty"]),
        (
            {"bios-version": long},
            ["INVALID_VALUE", "bios-version", f"{long} has length more than 512 characters"],
        ),
        (
            {"system-version": "caf\u00e9"},
            ["INVALID_VALUE", "system-version", "caf\u00e9 has non-printable ASCII characters"],
        ),
        (
            {"system-version": "a\tb"},
            ["INVALID_VALUE", "system-version", "a\tb has non-printable ASCII characters"],
        ),
        (
            {"bios-vendor": "ok", "nope": "x", "bios-version": ""},
            ["INVALID_VALUE", "nope", "Unknown key"],
        ),
    ]
    for value, error in cases:
        assert await w.fail("VM.set_bios_strings", w.root, vm, value) == error
    assert rec(w, "VM", vm)["bios_strings"] == {}
    await w.call("VM.set_bios_strings", w.root, vm, {"bios-version": "x" * 512})
    assert rec(w, "VM", vm)["bios_strings"]["bios-version"] == "x" * 512


async def test_copy_bios_strings_takes_the_hosts_and_sets_affinity(w: World) -> None:
    host = w.state.host_ref
    w.store.update("host", host, {"bios_strings": {"bios-vendor": "Acme", "oem-1": "x"}})
    vm = await new_vm(w, affinity=NULL_REF)
    await w.call("VM.copy_bios_strings", w.root, vm, host)
    r = rec(w, "VM", vm)
    assert r["bios_strings"] == {"bios-vendor": "Acme", "oem-1": "x"} and r["affinity"] == host
    assert await w.fail("VM.copy_bios_strings", w.root, vm, host) == [
        "VM_BIOS_STRINGS_ALREADY_SET"
    ]
    other = await new_vm(w)
    assert await w.fail("VM.copy_bios_strings", w.root, other, "OpaqueRef:h") == [
        "HANDLE_INVALID",
        "host",
        "OpaqueRef:h",
    ]


# ---- NVRAM --------------------------------------------------------------------------------
async def test_nvram_map_changes_while_halted(w: World) -> None:
    vm = await new_vm(w)
    await w.call("VM.set_NVRAM", w.root, vm, {"EFI-variables": "AAAA"})
    await w.call("VM.add_to_NVRAM", w.root, vm, "EFI-variables-on-boot", "reset")
    assert rec(w, "VM", vm)["NVRAM"] == {"EFI-variables": "AAAA", "EFI-variables-on-boot": "reset"}
    assert await w.fail("VM.add_to_NVRAM", w.root, vm, "EFI-variables", "B") == [
        "MAP_DUPLICATE_KEY",
        "VM",
        "NVRAM",
        rec(w, "VM", vm)["uuid"],
        "EFI-variables",
    ]
    await w.call("VM.remove_from_NVRAM", w.root, vm, "EFI-variables")
    await w.call("VM.remove_from_NVRAM", w.root, vm, "absent")
    r = rec(w, "VM", vm)
    assert r["NVRAM"] == {"EFI-variables-on-boot": "reset"}
    assert r["current_operations"] == {} and "changing_NVRAM" in r["allowed_operations"]


async def test_nvram_follows_the_changing_nvram_rules(w: World) -> None:
    template = await new_vm(w, is_a_template=True)
    await w.call("VM.set_NVRAM", w.root, template, {"k": "v"})
    assert rec(w, "VM", template)["NVRAM"] == {"k": "v"}
    vm = await running_vm(w)
    running = bad_power(vm, "halted", "running")
    assert await w.fail("VM.set_NVRAM", w.root, vm, {}) == running
    assert await w.fail("VM.add_to_NVRAM", w.root, vm, "k", "v") == running
    assert await w.fail("VM.remove_from_NVRAM", w.root, vm, "k") == running
    halted = await new_vm(w)
    await w.call("VM.add_to_blocked_operations", w.root, halted, "changing_NVRAM", "no")
    assert await w.fail("VM.set_NVRAM", w.root, halted, {}) == ["OPERATION_BLOCKED", halted, "no"]
    w.store.update("VM", dom0(w), {"power_state": "Halted"})
    assert await w.fail("VM.set_NVRAM", w.root, dom0(w), {}) == [
        "OPERATION_NOT_ALLOWED",
        "This operation is not allowed on a control domain",
    ]


# ---- Secure Boot --------------------------------------------------------------------------
def varstore(*names: str) -> str:
    """A variable store serialised as the reference's varstored writes it."""
    body = b""
    for name in names:
        encoded = (name + "\0").encode("utf-16-le")
        data = b"\x01"
        body += struct.pack("<Q", len(encoded)) + encoded
        body += struct.pack("<Q", len(data)) + data
        body += bytes(16) + struct.pack("<I", 7) + bytes(16) + bytes(32)
    header = b"VARS" + struct.pack("<IQQ", 1, len(names), len(body))
    return base64.b64encode(header + body).decode()


async def readiness(w: World, vm: str) -> object:
    return await w.call("VM.get_secureboot_readiness", w.root, vm)


async def test_secureboot_readiness_of_bios_and_uefi_vms(w: World) -> None:
    vm = await new_vm(w)
    assert await readiness(w, vm) == "not_supported"
    await w.call("VM.set_HVM_boot_params", w.root, vm, {"firmware": "bios"})
    assert await readiness(w, vm) == "not_supported"
    await w.call("VM.set_HVM_boot_params", w.root, vm, {"firmware": "coreboot"})
    assert await w.fail("VM.get_secureboot_readiness", w.root, vm) == [
        "INVALID_VALUE",
        "HVM-boot-params['firmware']",
        "coreboot",
    ]
    await w.call("VM.set_HVM_boot_params", w.root, vm, {"firmware": "uefi"})
    assert await readiness(w, vm) == "disabled"
    await w.call("VM.add_to_platform", w.root, vm, "secureboot", "TRUE")
    assert await readiness(w, vm) == "first_boot"
    await w.call("VM.add_to_NVRAM", w.root, vm, "EFI-variables-on-boot", "sometimes")
    assert await w.fail("VM.get_secureboot_readiness", w.root, vm) == [
        "INVALID_VALUE",
        "NVRAM['EFI-variables-on-boot']",
        "sometimes",
    ]


async def test_secureboot_readiness_reads_the_variable_store(w: World) -> None:
    vm = await new_vm(w, HVM_boot_params={"firmware": "uefi"}, platform={"secureboot": "1"})
    cases = [
        (("PK", "KEK", "db", "dbx", "Boot0000"), "ready"),
        (("db", "PK", "KEK"), "ready_no_dbx"),
        (("KEK", "db", "dbx"), "setup_mode"),
        (("PK", "KEK", "dbx"), "certs_incomplete"),
        ((), "setup_mode"),
    ]
    for names, expected in cases:
        await w.call("VM.set_NVRAM", w.root, vm, {"EFI-variables": varstore(*names)})
        assert await readiness(w, vm) == expected, names
    await w.call("VM.set_NVRAM", w.root, vm, {"EFI-variables": "not base64!"})
    error = await w.fail("VM.get_secureboot_readiness", w.root, vm)
    assert error[0] == "INTERNAL_ERROR"
    assert await w.fail("VM.get_secureboot_readiness", w.root, "OpaqueRef:x") == [
        "HANDLE_INVALID",
        "VM",
        "OpaqueRef:x",
    ]
