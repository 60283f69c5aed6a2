"""A VM's firmware settings: BIOS strings, the NVRAM map and Secure Boot.

BIOS strings can be filled in once (set_bios_strings or copy_bios_strings); the NVRAM map
changes only while the VM is halted (the changing_NVRAM operation). Secure Boot readiness,
the UEFI mode and certificate updates work on the UEFI variable store kept in
NVRAM["EFI-variables"], in the serialised form the reference's varstored writes.
"""

from __future__ import annotations

from typing import Any

from openxapi.api import uefi
from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.uefi import active_auth_files, store_of, truthy, uses_uefi
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError
from openxapi.xenops import uefi_vars

#: The reference's generic BIOS strings, in its order; set_bios_strings overrides some.
GENERIC_BIOS_STRINGS: tuple[tuple[str, str], ...] = (
    ("bios-vendor", "Xen"),
    ("bios-version", ""),
    ("system-manufacturer", "Xen"),
    ("system-product-name", "HVM domU"),
    ("system-version", ""),
    ("system-serial-number", ""),
    ("baseboard-manufacturer", ""),
    ("baseboard-product-name", ""),
    ("baseboard-version", ""),
    ("baseboard-serial-number", ""),
    ("baseboard-asset-tag", ""),
    ("baseboard-location-in-chassis", ""),
    ("enclosure-asset-tag", ""),
    ("hp-rombios", ""),
    ("oem-1", "Xen"),
    ("oem-2", "MS_VM_CERT/SHA1/bdbeb6e0a816d43fa6d3fe8aaef04c2bad9d3e3d"),
)
SETTABLE_BIOS_KEYS = frozenset(k for k, _ in GENERIC_BIOS_STRINGS[:13])
BIOS_STRING_LIMIT = 512


# ---- BIOS strings -----------------------------------------------------------------------
def _assert_valid_bios_strings(value: dict[str, str]) -> None:
    for key, text in value.items():
        if key not in SETTABLE_BIOS_KEYS:
            raise ApiError("INVALID_VALUE", key, "Unknown key")
        raw = text.encode("utf-8", "surrogatepass")
        if not raw:
            raise ApiError("INVALID_VALUE", key, "Value provided is empty")
        if len(raw) > BIOS_STRING_LIMIT:
            raise ApiError(
                "INVALID_VALUE", key, f"{text} has length more than {BIOS_STRING_LIMIT} characters"
            )
        if any(b < 32 or b >= 127 for b in raw):
            raise ApiError("INVALID_VALUE", key, f"{text} has non-printable ASCII characters")


def _assert_no_bios_strings(rec: dict[str, Any]) -> None:
    if rec["bios_strings"]:
        raise ApiError("VM_BIOS_STRINGS_ALREADY_SET")


@handler("VM.set_bios_strings")
async def set_bios_strings(
    state: ServerState, ctx: CallContext, self: str, value: dict[str, str]
) -> Any:
    """Only while the VM has none; the result is the generic set with ``value`` applied."""
    rec = state.record("VM", self)
    _assert_no_bios_strings(rec)
    _assert_valid_bios_strings(value)
    strings = {k: value.get(k, v) for k, v in GENERIC_BIOS_STRINGS}
    state.store.update("VM", self, {"bios_strings": strings})
    await state.store.sync()
    return ""


@handler("VM.copy_bios_strings")
async def copy_bios_strings(state: ServerState, ctx: CallContext, vm: str, host: str) -> Any:
    """The host's BIOS strings become the VM's, and the VM's affinity becomes the host."""
    rec = state.record("VM", vm)
    _assert_no_bios_strings(rec)
    strings = dict(state.record("host", host)["bios_strings"])
    state.store.update("VM", vm, {"bios_strings": strings})
    generic = domains_of(state).generic
    generic.set_field(state, "VM", vm, state.record("VM", vm), "affinity", host)
    await state.store.sync()
    return ""


# ---- NVRAM ------------------------------------------------------------------------------
@handler("VM.set_NVRAM")
async def set_NVRAM(state: ServerState, ctx: CallContext, self: str, value: dict[str, str]) -> Any:
    async with domains_of(state).operation(self, "changing_NVRAM", ctx):
        state.store.update("VM", self, {"NVRAM": dict(value)})
    await state.store.sync()
    return ""


@handler("VM.add_to_NVRAM")
async def add_to_NVRAM(
    state: ServerState, ctx: CallContext, self: str, key: str, value: str
) -> Any:
    async with domains_of(state).operation(self, "changing_NVRAM", ctx) as rec:
        if key in rec["NVRAM"]:
            column = state.cls("VM").field_map["NVRAM"].column
            raise ApiError("MAP_DUPLICATE_KEY", "VM", column, rec["uuid"], key)
        state.store.update("VM", self, {"NVRAM": {**rec["NVRAM"], key: value}})
    await state.store.sync()
    return ""


@handler("VM.remove_from_NVRAM")
async def remove_from_NVRAM(state: ServerState, ctx: CallContext, self: str, key: str) -> Any:
    async with domains_of(state).operation(self, "changing_NVRAM", ctx) as rec:
        if key in rec["NVRAM"]:
            rest = {k: v for k, v in rec["NVRAM"].items() if k != key}
            state.store.update("VM", self, {"NVRAM": rest})
    await state.store.sync()
    return ""


# ---- Secure Boot ------------------------------------------------------------------------
@handler("VM.get_secureboot_readiness")
async def get_secureboot_readiness(state: ServerState, ctx: CallContext, self: str) -> Any:
    rec = state.record("VM", self)
    if not uses_uefi(rec):
        return "not_supported"
    if not truthy(rec["platform"].get("secureboot")):
        return "disabled"
    store = store_of(rec)
    if store is None:
        return "first_boot"
    names = store.names()
    pk, kek, db, dbx = ("PK" in names, "KEK" in names, "db" in names, "dbx" in names)
    if pk and kek and db:
        return "ready" if dbx else "ready_no_dbx"
    return "certs_incomplete" if pk else "setup_mode"


@handler("VM.set_uefi_mode")
async def set_uefi_mode(state: ServerState, ctx: CallContext, self: str, mode: str) -> Any:
    """varstore-sb-state: remove PK, KEK, db and dbx (setup mode), then for user mode enrol
    the pool's keys again; the result is what the tool prints."""
    rec = state.record("VM", self)
    files = active_auth_files(state) if mode == "user" else {}
    store = store_of(rec) or uefi_vars.VarStore()
    out: list[str] = []
    changed = False
    for name in uefi.SECURE_NAMES:
        out.append(f"Removing {name}...\n")
        changed = store.remove(name, uefi_vars.security_guid(name)) or changed
    if mode == "user":
        before = len(out)
        uefi.enrol(store, files, out)
        changed = changed or any(line.endswith("...\n") for line in out[before:])
    if changed:
        uefi.save_store(state, self, uefi_vars.encode(store))
        value = uefi.certificates_state(store, active_auth_files(state))
        state.store.update("VM", self, {"secureboot_certificates_state": value})
        await state.store.sync()
    return "".join(out)


@handler("VM.update_secureboot_certificates_on_boot")
async def update_secureboot_certificates_on_boot(
    state: ServerState, ctx: CallContext, self: str, mark: bool
) -> Any:
    """Mark (or unmark) an available certificate update to be applied at the next boot."""
    current = state.record("VM", self)["secureboot_certificates_state"]
    target = {(True, "update_available"): "update_on_boot"}
    target[(False, "update_on_boot")] = "update_available"
    if (mark, current) in target:
        state.store.update("VM", self, {"secureboot_certificates_state": target[mark, current]})
        await state.store.sync()
        return ""
    if (mark, current) in ((True, "update_on_boot"), (False, "update_available")):
        return ""
    verb = "set" if mark else "clear"
    raise ApiError(
        "OPERATION_NOT_ALLOWED",
        f"Cannot {verb} update_on_boot: VM.secureboot_certificates_state is not in a valid state",
    )
