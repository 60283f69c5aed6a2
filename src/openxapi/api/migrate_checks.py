"""VM.assert_can_migrate: the reference's checks, in the reference's order.

Every disk of the VM must be in the VDI map (VDI_NOT_IN_MAP). Within the pool (the dest
map names this host) the host version and SRs are checked here and a VIF map is refused.
Across pools the destination is asked: its version (VM_HOST_INCOMPATIBLE_VERSION_MIGRATE),
its SRs for each disk that changes SR (HANDLE_INVALID, SR_DOES_NOT_SUPPORT_MIGRATION),
then ``copy`` of a VM that is not halted (VM_BAD_POWER_STATE), whether the host is enabled
(HOST_DISABLED) and has the pCPUs (HOST_NOT_ENOUGH_PCPUS); every VIF, of the VM and of its
snapshots, must map to a network (VIF_NOT_IN_MAP, inferred from a mapped VIF of the same
MAC); then the destination's dry run of the import (memory for a live VM, the uuid
already there, the networks and SRs). Last, disks that change SR may not have CBT or be
encrypted. A destination that cannot be reached is VM_MIGRATE_CONTACT_REMOTE_SERVICE_FAILED.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from openxapi.api.migrate_remote import Remote, RemoteApi, Unreachable, remote_of_dest, unreachable
from openxapi.api.state import ServerState
from openxapi.errors import ApiError

#: What the source SR and the destination SR of a disk that changes SR must offer. (The
#: reference asks for VDI_MIRROR too: here a running disk is mirrored by the hypervisor, or
#: copied while the guest is paused, so the SRs need only snapshots and new disks.)
SOURCE_SR_FEATURES = ("VDI_SNAPSHOT",)
DEST_SR_FEATURES = ("VDI_SNAPSHOT", "VDI_CREATE")


@dataclass
class Checked:
    """What the checks found, for the migration that follows them."""

    remote: Remote
    api: RemoteApi
    intra_pool: bool
    copy: bool
    force: bool
    vm_vdis: list[str]
    vif_map: dict[str, str] = field(default_factory=dict)


def bool_option(options: Mapping[str, str], key: str) -> bool:
    """OCaml's bool_of_string with a false default: exactly "true" is true."""
    return options.get(key, "") == "true"


def vm_vdis(state: ServerState, vm: str) -> list[str]:
    """The VM's disks a migration moves: those of its non-empty, non-CD drives."""
    out = []
    for vbd in state.record("VM", vm)["VBDs"]:
        rec = state.store.get("VBD", vbd)
        if rec is None or rec["empty"] or rec["type"] == "CD":
            continue
        out.append(rec["VDI"])
    return out


def check_vdi_map(vdis: list[str], vdi_map: Mapping[str, str]) -> None:
    for vdi in vdis:
        if vdi not in vdi_map:
            raise ApiError("VDI_NOT_IN_MAP", vdi)


def infer_vif_map(
    state: ServerState, vifs: list[str], vif_map: Mapping[str, str]
) -> dict[str, str]:
    """Every VIF's network: its own entry, else that of a mapped VIF with the same MAC."""
    macs = [(state.record("VIF", v)["MAC"], n) for v, n in vif_map.items()]
    out: dict[str, str] = {}
    for vif in vifs:
        if vif in vif_map:
            out[vif] = vif_map[vif]
            continue
        mac = state.record("VIF", vif)["MAC"]
        found = next((n for m, n in macs if m == mac), None)
        if found is None:
            raise ApiError("VIF_NOT_IN_MAP", vif)
        out[vif] = found
    return out


def all_vifs(state: ServerState, vm: str) -> list[str]:
    """The VIFs of the VM and of its snapshots."""
    rec = state.record("VM", vm)
    vifs = list(rec["VIFs"])
    for snap in rec["snapshots"]:
        srec = state.store.get("VM", snap)
        if srec is not None:
            vifs += srec["VIFs"]
    return vifs


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        return ()


def _missing(features: Mapping[str, Any], wanted: tuple[str, ...]) -> list[str]:
    return [f for f in wanted if f not in features]


def _local_features(state: ServerState, sr: str) -> Mapping[str, Any]:
    sr_type = state.record("SR", sr)["type"]
    for rec in state.store.table("SM").values():
        if rec["type"] == sr_type:
            features: Mapping[str, Any] = rec["features"]
            return features
    return {}


async def _remote_features(api: RemoteApi, sr: str, sms: Mapping[str, Any]) -> Mapping[str, Any]:
    sr_type = await api.call("SR.get_type", sr)
    found = [rec for rec in sms.values() if rec.get("type") == sr_type]
    if len(found) != 1:
        return {}
    features: Mapping[str, Any] = found[0].get("features", {})
    return features


async def _assert_sr_support(
    state: ServerState, checked: Checked, vdi_map: Mapping[str, str]
) -> None:
    moving = [(v, s) for v, s in vdi_map.items() if state.record("VDI", v)["SR"] != s]
    if not moving:
        return
    sms: Mapping[str, Any] = {}
    if not checked.intra_pool:
        sms = await checked.api.call("SM.get_all_records")
    for vdi, sr in moving:
        source = state.record("VDI", vdi)["SR"]
        missing = _missing(_local_features(state, source), SOURCE_SR_FEATURES)
        if missing:
            raise ApiError("SR_DOES_NOT_SUPPORT_MIGRATION", source, ";".join(missing))
        if checked.intra_pool:
            state.record("SR", sr)
            features = _local_features(state, sr)
        else:
            features = await _remote_features(checked.api, sr, sms)
        missing = _missing(features, DEST_SR_FEATURES)
        if missing:
            raise ApiError("SR_DOES_NOT_SUPPORT_MIGRATION", sr, ";".join(missing))


async def _assert_versions(state: ServerState, checked: Checked, vm: str) -> None:
    """The destination's platform may not be older than this host's."""
    here = state.record("host", state.host_ref)["software_version"].get("platform_version", "")
    there = await checked.api.call("host.get_software_version", checked.remote.host)
    theirs = there.get("platform_version", "") if isinstance(there, dict) else ""
    if _version(theirs) < _version(here):
        raise ApiError("VM_HOST_INCOMPATIBLE_VERSION_MIGRATE", vm, checked.remote.host)


def assert_can_migrate_vdis(state: ServerState, vdi_map: Mapping[str, str]) -> None:
    """Disks that change SR may not have CBT enabled or be encrypted."""
    for vdi, sr in vdi_map.items():
        rec = state.record("VDI", vdi)
        if sr == rec["SR"]:
            continue
        if rec["cbt_enabled"]:
            raise ApiError("VDI_CBT_ENABLED", vdi)
        if "key_hash" in rec["sm_config"]:
            raise ApiError("VDI_IS_ENCRYPTED", vdi)


async def _cross_pool(
    state: ServerState, checked: Checked, vm: str, vdi_map: Mapping[str, str],
    vif_map: Mapping[str, str],
) -> None:  # fmt: skip
    api = checked.api
    rec = state.record("VM", vm)
    await _assert_versions(state, checked, vm)
    power = rec["power_state"]
    await _assert_sr_support(state, checked, vdi_map)
    if not checked.force and checked.copy and power != "Halted":
        raise ApiError("VM_BAD_POWER_STATE", vm, "halted", power.lower())
    if not await api.call("host.get_enabled", checked.remote.host):
        raise ApiError("HOST_DISABLED", checked.remote.host)
    cpu = await api.call("host.get_cpu_info", checked.remote.host)
    pcpus = int(str(cpu.get("cpu_count", "0"))) if isinstance(cpu, dict) else 0
    unrestricted = rec["platform"].get("vcpu-unrestricted", "") in ("true", "1")
    if rec["VCPUs_max"] > pcpus and not unrestricted:
        raise ApiError("HOST_NOT_ENOUGH_PCPUS", str(rec["VCPUs_max"]), str(pcpus))
    checked.vif_map = infer_vif_map(state, all_vifs(state, vm), vif_map)
    doc = {
        "uuid": rec["uuid"],
        "version": rec["version"],
        "restore": not checked.copy,
        "live": True,
        "power_state": power,
        "memory": rec["memory_dynamic_max"],
        "networks": sorted(set(checked.vif_map.values())),
        "srs": sorted(set(vdi_map.values())),
    }
    await api.service("check", body=json.dumps(doc).encode())


async def assert_can_migrate(
    state: ServerState,
    vm: str,
    dest: Mapping[str, str],
    vdi_map: Mapping[str, str],
    vif_map: Mapping[str, str],
    options: Mapping[str, str],
) -> Checked:
    """Raise the first reason ``vm`` cannot migrate to ``dest``; what was found otherwise."""
    state.record("VM", vm)
    remote = remote_of_dest(dest)
    checked = Checked(
        remote=remote,
        api=RemoteApi(remote),
        intra_pool=state.store.get("host", remote.host) is not None,
        copy=bool_option(options, "copy"),
        force=bool_option(options, "force"),
        vm_vdis=vm_vdis(state, vm),
    )
    check_vdi_map(checked.vm_vdis, vdi_map)
    if checked.intra_pool:
        await _assert_sr_support(state, checked, vdi_map)
        if vif_map:
            raise ApiError(
                "OPERATION_NOT_ALLOWED",
                "VIF mapping is not allowed for intra-pool migration -all VIFs must be on the "
                "same network",
            )
    else:
        try:
            await _cross_pool(state, checked, vm, vdi_map, vif_map)
        except Unreachable:
            raise unreachable() from None
    assert_can_migrate_vdis(state, vdi_map)
    return checked
