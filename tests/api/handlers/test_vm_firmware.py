"""BIOS strings, the NVRAM map and Secure Boot: readiness, the UEFI mode, certificate
updates and the variable store a UEFI VM's first boot enrols."""

from __future__ import annotations

import base64
import datetime as dt
import struct
from collections.abc import AsyncIterator

import pytest

from openxapi.api import uefi
from openxapi.api.vm_domains import stop_domains
from openxapi.spec.model import NULL_REF
from openxapi.xenops import uefi_vars
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
    assert await w.fail("VM.copy_bios_strings", w.root, vm, host) == ["VM_BIOS_STRINGS_ALREADY_SET"]
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


# ---- the store a UEFI VM boots with (simulator: no firmware, the same NVRAM rules) -------
REMOVALS = "Removing PK...\nRemoving KEK...\nRemoving db...\nRemoving dbx...\n"
ENROLMENT = "".join(f"setup_keys: Setting {n}...\n" for n in ("dbx", "db", "KEK", "PK"))


def store(w: World, vm: str) -> uefi_vars.VarStore:
    return uefi_vars.decode(rec(w, "VM", vm)["NVRAM"]["EFI-variables"])


def pool_keys() -> dict[str, bytes]:
    return uefi.unpack(uefi.default_certificates())


async def uefi_vm(w: World, secureboot: str = "true", **values: object) -> str:
    return await new_vm(
        w, HVM_boot_params={"firmware": "uefi"}, platform={"secureboot": secureboot}, **values
    )


async def test_first_boot_enrols_the_pools_keys(w: World) -> None:
    assert set(pool_keys()) == {"PK.auth", "KEK.auth", "db.auth", "dbx.auth"}
    vm = await uefi_vm(w)
    assert await readiness(w, vm) == "first_boot"
    await w.call("VM.start", w.root, vm, False, False)
    assert await readiness(w, vm) == "ready"
    enrolled = store(w, vm)
    for name in ("PK", "KEK", "db", "dbx"):
        var = enrolled.get(name, uefi_vars.security_guid(name))
        assert var is not None and var.attributes == 0x27
        assert var.data == uefi_vars.parse_auth_file(pool_keys()[f"{name}.auth"])[1]
    # later boots keep the store as it is
    blob = rec(w, "VM", vm)["NVRAM"]["EFI-variables"]
    await w.call("VM.hard_reboot", w.root, vm)
    await w.call("VM.hard_shutdown", w.root, vm)
    await w.call("VM.start", w.root, vm, False, False)
    assert rec(w, "VM", vm)["NVRAM"]["EFI-variables"] == blob


async def test_a_store_reset_on_boot_is_not_kept_and_bios_vms_get_none(w: World) -> None:
    vm = await uefi_vm(w, NVRAM={"EFI-variables-on-boot": "reset"})
    await w.call("VM.start", w.root, vm, False, False)
    assert rec(w, "VM", vm)["NVRAM"] == {"EFI-variables-on-boot": "reset"}
    assert await readiness(w, vm) == "first_boot"
    bios = await running_vm(w)
    assert rec(w, "VM", bios)["NVRAM"] == {}


async def test_secureboot_auto_follows_the_pools_certificates(w: World) -> None:
    vm = await uefi_vm(w, secureboot="auto")
    await w.call("VM.start", w.root, vm, False, False)
    assert rec(w, "VM", vm)["platform"]["secureboot"] == "true"
    assert await readiness(w, vm) == "ready"


async def test_a_malformed_store_stops_the_boot(w: World) -> None:
    vm = await uefi_vm(w, NVRAM={"EFI-variables": base64.b64encode(b"VARX").decode()})
    error = await w.fail("VM.start", w.root, vm, False, False)
    assert error[0] == "INTERNAL_ERROR" and "malformed" in error[1]
    assert rec(w, "VM", vm)["power_state"] == "Halted"


# ---- VM.set_uefi_mode ---------------------------------------------------------------------
async def test_set_uefi_mode_setup_then_user(w: World) -> None:
    vm = await uefi_vm(w)
    await w.call("VM.start", w.root, vm, False, False)
    assert await w.call("VM.set_uefi_mode", w.root, vm, "setup") == REMOVALS
    assert await readiness(w, vm) == "setup_mode"
    assert not set(store(w, vm).names()) & {"PK", "KEK", "db", "dbx"}
    assert await w.call("VM.set_uefi_mode", w.root, vm, "user") == REMOVALS + ENROLMENT
    assert await readiness(w, vm) == "ready"
    assert await w.fail("VM.set_uefi_mode", w.root, vm, "audit") == ["FIELD_TYPE_ERROR", "mode"]


async def test_set_uefi_mode_without_a_store(w: World) -> None:
    vm = await uefi_vm(w)
    assert await w.call("VM.set_uefi_mode", w.root, vm, "setup") == REMOVALS
    assert "EFI-variables" not in rec(w, "VM", vm)["NVRAM"]
    assert await w.call("VM.set_uefi_mode", w.root, vm, "user") == REMOVALS + ENROLMENT
    assert await readiness(w, vm) == "ready"
    assert await w.fail("VM.set_uefi_mode", w.root, "OpaqueRef:x", "user") == [
        "HANDLE_INVALID",
        "VM",
        "OpaqueRef:x",
    ]
    w.state.config.allow_custom_uefi_certs = True
    only_pk = uefi.pack({"PK.auth": pool_keys()["PK.auth"]})
    await w.call("pool.set_custom_uefi_certificates", w.root, w.state.pool_ref, only_pk)
    out = await w.call("VM.set_uefi_mode", w.root, vm, "user")
    assert out == REMOVALS + "setup_keys: Continuing keys setup despite missing optional dbx\n"
    assert await readiness(w, vm) == "setup_mode"


# ---- Secure Boot certificate updates --------------------------------------------------------
def expired_kek_store() -> str:
    """A store in user mode whose KEK holds only a certificate that has expired."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old KEK")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime(2011, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        .sign(key, hashes.SHA256())
    )
    old = uefi_vars.x509_siglist(cert.public_bytes(Encoding.DER))
    st = uefi_vars.VarStore()
    for name_, data in (("PK", old), ("KEK", old), ("db", old)):
        guid = uefi_vars.security_guid(name_)
        st.put(uefi_vars.Variable(name_, guid, 0x27, data))
    return uefi_vars.encode(st)


async def test_certificate_update_marked_and_applied_on_boot(w: World) -> None:
    vm = await uefi_vm(w, NVRAM={"EFI-variables": expired_kek_store()})
    state = "secureboot_certificates_state"
    assert rec(w, "VM", vm)[state] == "ok"
    not_valid = "VM.secureboot_certificates_state is not in a valid state"
    assert await w.fail("VM.update_secureboot_certificates_on_boot", w.root, vm, True) == [
        "OPERATION_NOT_ALLOWED",
        f"Cannot set update_on_boot: {not_valid}",
    ]
    assert await w.fail("VM.update_secureboot_certificates_on_boot", w.root, vm, False) == [
        "OPERATION_NOT_ALLOWED",
        f"Cannot clear update_on_boot: {not_valid}",
    ]
    w.store.update("VM", vm, {state: "update_available"})
    await w.call("VM.update_secureboot_certificates_on_boot", w.root, vm, False)
    assert rec(w, "VM", vm)[state] == "update_available"
    for _ in range(2):
        await w.call("VM.update_secureboot_certificates_on_boot", w.root, vm, True)
        assert rec(w, "VM", vm)[state] == "update_on_boot"
    old_kek = uefi_vars.x509_certificates(store(w, vm).get("KEK", uefi_vars.GLOBAL_GUID).data)
    await w.call("VM.start", w.root, vm, False, False)
    assert rec(w, "VM", vm)[state] == "ok"
    kek = uefi_vars.x509_certificates(store(w, vm).get("KEK", uefi_vars.GLOBAL_GUID).data)
    offered = uefi_vars.x509_certificates(uefi_vars.parse_auth_file(pool_keys()["KEK.auth"])[1])
    assert kek == old_kek + offered and offered


async def test_set_uefi_mode_records_whether_an_update_is_due(w: World) -> None:
    vm = await uefi_vm(w, NVRAM={"EFI-variables": expired_kek_store()})
    # user mode re-enrols the pool's certificates: nothing is due afterwards
    await w.call("VM.set_uefi_mode", w.root, vm, "user")
    assert rec(w, "VM", vm)["secureboot_certificates_state"] == "ok"
