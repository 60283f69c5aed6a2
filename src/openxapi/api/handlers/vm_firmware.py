"""A VM's firmware settings: BIOS strings, the NVRAM map and Secure Boot readiness.

BIOS strings can be filled in once (set_bios_strings or copy_bios_strings); the NVRAM map
changes only while the VM is halted (the changing_NVRAM operation). Secure Boot readiness
reads the UEFI variable store kept in NVRAM["EFI-variables"], in the serialised form the
reference's varstored writes.
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError

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

EFI_VARIABLES = "EFI-variables"


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
async def set_NVRAM(
    state: ServerState, ctx: CallContext, self: str, value: dict[str, str]
) -> Any:
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
_NAME_LIMIT = 4096
_DATA_LIMIT = 57344
_HEADER = struct.Struct("<4sIQQ")  # magic "VARS", version 1, count, data length
_FIXED_PER_VARIABLE = 8 + 8 + 16 + 4 + 16 + 32  # lengths, GUID, attributes, time, cert


def efi_variable_names(blob: str) -> list[str] | None:
    """The names in a serialised variable store (base64), as varstore-ls prints them
    (the printable low bytes of each UTF-16 name); None when the store is malformed."""
    try:
        data = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(data) < _HEADER.size:
        return None
    magic, version, count, _ = _HEADER.unpack_from(data)
    if magic != b"VARS" or version != 1:
        return None
    pos, rem = _HEADER.size, len(data) - _HEADER.size
    names: list[str] = []
    for _ in range(count):
        if rem < _FIXED_PER_VARIABLE:
            return None
        rem -= _FIXED_PER_VARIABLE
        (name_len,) = struct.unpack_from("<Q", data, pos)
        if name_len == 0 or name_len > min(rem, _NAME_LIMIT):
            return None
        name = data[pos + 8 : pos + 8 + name_len]
        pos += 8 + name_len
        rem -= name_len
        (data_len,) = struct.unpack_from("<Q", data, pos)
        if data_len == 0 or data_len > min(rem, _DATA_LIMIT):
            return None
        pos += 8 + data_len + 16 + 4 + 16 + 32
        rem -= data_len
        names.append("".join(chr(b) for b in name[0::2] if 32 <= b < 127))
    return names if rem == 0 else None


def _uses_uefi(rec: dict[str, Any]) -> bool:
    """The VM's firmware as the reference reads HVM_boot_params["firmware"] (BIOS if absent)."""
    firmware = rec["HVM_boot_params"].get("firmware")
    if firmware is None or firmware == "bios":
        return False
    if firmware != "uefi":
        raise ApiError("INVALID_VALUE", "HVM-boot-params['firmware']", firmware)
    on_boot = rec["NVRAM"].get("EFI-variables-on-boot")
    if on_boot is not None and on_boot not in ("persist", "reset"):
        raise ApiError("INVALID_VALUE", "NVRAM['EFI-variables-on-boot']", on_boot)
    return True


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


@handler("VM.get_secureboot_readiness")
async def get_secureboot_readiness(state: ServerState, ctx: CallContext, self: str) -> Any:
    rec = state.record("VM", self)
    if not _uses_uefi(rec):
        return "not_supported"
    if not _truthy(rec["platform"].get("secureboot")):
        return "disabled"
    blob = rec["NVRAM"].get(EFI_VARIABLES)
    if blob is None:
        return "first_boot"
    names = efi_variable_names(blob)
    if names is None:
        raise ApiError(
            "INTERNAL_ERROR", f"varstore-ls {rec['uuid']}: the EFI variables are malformed"
        )
    pk, kek, db, dbx = ("PK" in names, "KEK" in names, "db" in names, "dbx" in names)
    if pk and kek and db:
        return "ready" if dbx else "ready_no_dbx"
    return "certs_incomplete" if pk else "setup_mode"
