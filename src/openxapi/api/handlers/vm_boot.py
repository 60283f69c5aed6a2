"""How a VM boots: its domain type with the legacy HVM boot policy, and the vendor device.

``domain_type`` and ``HVM_boot_policy`` always agree, as the reference keeps them: setting
one rewrites the other (an HVM domain boots in "BIOS order", every other type has an empty
policy; an empty policy means PV, any other means HVM).
"""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError

HVM_DEFAULT_BOOT_POLICY = "BIOS order"
#: hardware_platform_version a VM with the vendor device needs at least.
VENDOR_DEVICE_PLATFORM_VERSION = 2


async def _write(state: ServerState, vm: str, changes: dict[str, Any]) -> Any:
    state.store.update("VM", vm, changes)
    domains_of(state).refresh(vm)
    await state.store.sync()
    return ""


@handler("VM.set_HVM_boot_policy")
async def set_HVM_boot_policy(state: ServerState, ctx: CallContext, self: str, value: str) -> Any:
    """Any power state, as the reference; the domain type follows the policy."""
    state.record("VM", self)
    kind = "pv" if value == "" else "hvm"
    return await _write(state, self, {"domain_type": kind, "HVM_boot_policy": value})


@handler("VM.set_domain_type")
async def set_domain_type(state: ServerState, ctx: CallContext, self: str, value: str) -> Any:
    """INVALID_VALUE for "unspecified" (checked before the VM); the policy follows the type."""
    if value == "unspecified":
        raise ApiError("INVALID_VALUE", "domain_type", value)
    state.record("VM", self)
    policy = HVM_DEFAULT_BOOT_POLICY if value == "hvm" else ""
    return await _write(state, self, {"domain_type": value, "HVM_boot_policy": policy})


@handler("VM.set_has_vendor_device")
async def set_has_vendor_device(
    state: ServerState, ctx: CallContext, self: str, value: bool
) -> Any:
    """Halted VMs only; the device raises hardware_platform_version to 2 when lower."""
    rec = state.record("VM", self)
    if rec["power_state"] != "Halted":
        raise ApiError("VM_BAD_POWER_STATE", self, "halted", rec["power_state"].lower())
    changes: dict[str, Any] = {"has_vendor_device": bool(value)}
    if value and int(rec["hardware_platform_version"]) < VENDOR_DEVICE_PLATFORM_VERSION:
        changes["hardware_platform_version"] = VENDOR_DEVICE_PLATFORM_VERSION
    state.store.update("VM", self, changes)
    await state.store.sync()
    return ""
