"""High-availability settings of a VM, and whether it could be restarted on any host.

The restart priority is "restart", "best-effort" or "" (unprotected); a running VM's
deprecated ha_always_run follows it at once. The reference also re-plans host failures when
protection is added while HA is on; HA cannot be enabled on this server, so there is never
a plan to break.
"""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError

HA_RESTART = "restart"
HA_PRIORITIES = (HA_RESTART, "best-effort", "")


async def _set_priority(state: ServerState, vm: str, value: str) -> Any:
    if value not in HA_PRIORITIES:
        raise ApiError("INVALID_VALUE", "ha_restart_priority", value)
    rec = state.record("VM", vm)
    if rec["ha_restart_priority"] != value:
        changes: dict[str, Any] = {"ha_restart_priority": value}
        if rec["power_state"] == "Running":
            changes["ha_always_run"] = value == HA_RESTART
        state.store.update("VM", vm, changes)
    domains_of(state).refresh(vm)
    await state.store.sync()
    return ""


@handler("VM.set_ha_restart_priority")
async def set_ha_restart_priority(
    state: ServerState, ctx: CallContext, self: str, value: str
) -> Any:
    return await _set_priority(state, self, value)


@handler("VM.set_ha_always_run")
async def set_ha_always_run(state: ServerState, ctx: CallContext, self: str, value: bool) -> Any:
    """Deprecated: true means priority "restart", false means unprotected ("")."""
    return await _set_priority(state, self, HA_RESTART if value else "")


# ---- agility ----------------------------------------------------------------------------
def _enabled_hosts(state: ServerState) -> set[str]:
    return {ref for ref, h in state.store.table("host").items() if h["enabled"]}


def _sr_properly_shared(state: ServerState, sr: str) -> bool:
    """Shared, and plugged on every enabled host."""
    rec = state.record("SR", sr)
    if not rec["shared"]:
        return False
    plugged = set()
    for pbd in rec["PBDs"]:
        prec = state.store.get("PBD", pbd)
        if prec is not None and prec["currently_attached"]:
            plugged.add(prec["host"])
    return _enabled_hosts(state) <= plugged


def _sriov_usable(state: ServerState, pif: dict[str, Any]) -> bool:
    """An SR-IOV logical PIF counts only when it can come up without a host reboot."""
    for sriov in pif["sriov_logical_PIF_of"]:
        srec = state.store.get("network_sriov", sriov)
        if srec is None:
            continue
        mode = srec["configuration_mode"]
        if mode == "unknown":
            return False
        if mode != "sysfs":
            logical = state.store.get("PIF", srec["logical_PIF"])
            return bool(logical and logical["currently_attached"])
    return True


def _network_properly_shared(state: ServerState, network: str) -> bool:
    """Every enabled host has a PIF on the network that is not a bond slave."""
    hosts = set()
    for rec in state.store.table("PIF").values():
        if rec["network"] != network:
            continue
        if state.store.get("Bond", rec["bond_slave_of"]) is not None:
            continue
        if _sriov_usable(state, rec):
            hosts.add(rec["host"])
    return _enabled_hosts(state) <= hosts


def _is_sriov_network(state: ServerState, network: str) -> bool:
    pifs = state.record("network", network)["PIFs"]
    if not pifs:
        return False
    pif = state.store.get("PIF", pifs[0])
    if pif is None:
        return False
    if pif["sriov_logical_PIF_of"]:
        return True
    vlan = state.store.get("VLAN", pif["VLAN_master_of"])
    tagged = state.store.get("PIF", vlan["tagged_PIF"]) if vlan is not None else None
    return bool(tagged and tagged["sriov_logical_PIF_of"])


@handler("VM.assert_agile")
async def assert_agile(state: ServerState, ctx: CallContext, self: str) -> Any:
    """Could the VM run on any host of the pool? Its disks must be on properly shared SRs
    and its VIFs on properly shared networks; vGPUs, VUSBs and SR-IOV VIFs tie it down."""
    rec = state.record("VM", self)
    if rec["VGPUs"]:
        raise ApiError("VM_HAS_VGPU", self)
    if rec["VUSBs"]:
        raise ApiError("VM_HAS_VUSBS", self)
    seen: set[str] = set()
    for vbd in rec["VBDs"]:
        vrec = state.record("VBD", vbd)
        if vrec["empty"]:
            continue
        sr = state.record("VDI", vrec["VDI"])["SR"]
        if sr not in seen:
            if not _sr_properly_shared(state, sr):
                raise ApiError("HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED", sr)
            seen.add(sr)
    for vif in rec["VIFs"]:
        network = state.record("VIF", vif)["network"]
        if network not in seen:
            if not _network_properly_shared(state, network):
                raise ApiError("HA_CONSTRAINT_VIOLATION_NETWORK_NOT_SHARED", network)
            if _is_sriov_network(state, network):
                raise ApiError("VM_HAS_SRIOV_VIF", self)
            seen.add(network)
    return ""
