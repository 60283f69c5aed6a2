"""What a cross-pool migration sends: the VM's export (as ``/export`` makes it, power
state kept) with its snapshots, each mapped device marked where it goes.

As the reference's metadata transfer: every VDI carries ``maps_to`` (the destination SR it
is written to) and every VIF ``maps_to`` (the destination network it joins) in its
other_config; snapshots keep their snapshot fields and link to the VM. Disks a running
domain's backend copies itself are marked :data:`MIRROR_KEY` and left out of the stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openxapi.api.state import ServerState
from openxapi.api.vm_export import (
    OBJECT_ORDER,
    ExportPlan,
    _select,
    _snapshot,
    _Table,
    _version,
)
from openxapi.spec.model import NULL_REF
from openxapi.wire import encode_value_xml

#: other_config key naming a device's destination (the reference's storage-migrate key).
MAPS_TO = "maps_to"
#: VDI other_config key of disks the hypervisor copies while the domain runs.
MIRROR_KEY = "openxapi_migrate_mirror"
#: Snapshot fields kept as they are (``_snapshot`` clears them for plain exports).
_SNAPSHOT_FIELDS = ("is_a_snapshot", "snapshot_time", "snapshot_info", "transportable_snapshot_id")


def _add_vm(state: ServerState, table: _Table, vm: str) -> None:
    table.add_vm(vm, suspend_image=True)


def streamed_vdis(state: ServerState, vms: list[str]) -> list[str]:
    """The disks an export of ``vms`` streams: those of non-CD drives outside ISO SRs, and
    memory images."""
    out: list[str] = []
    for vm in vms:
        rec = state.record("VM", vm)
        for vbd in rec["VBDs"]:
            vrec = state.store.get("VBD", vbd)
            if vrec is None or vrec["type"] == "CD" or vrec["empty"]:
                continue
            vdi = state.store.get("VDI", vrec["VDI"])
            sr = state.store.get("SR", vdi["SR"]) if vdi is not None else None
            if sr is not None and sr["content_type"] != "iso":
                out.append(vrec["VDI"])
        if rec["power_state"] == "Suspended" and state.store.get("VDI", rec["suspend_VDI"]):
            out.append(rec["suspend_VDI"])
    return list(dict.fromkeys(out))


def plan_migration(
    state: ServerState,
    vm: str,
    snapshots: list[str],
    vdi_map: Mapping[str, str],
    vif_map: Mapping[str, str],
    mirrored: set[str],
) -> ExportPlan:
    """The ova.xml and streamed disks of sending ``vm`` and ``snapshots``."""
    table = _select(state, vm, True)
    for snap in snapshots:
        _add_vm(state, table, snap)
    ids = {ref: oid for ref, (_, oid) in table.objects.items()}
    objects: list[dict[str, Any]] = []
    for wanted in OBJECT_ORDER:
        for ref, (cls, oid) in table.objects.items():
            if cls != wanted:
                continue
            record = _snapshot(state, cls, ref, ids, True)
            _annotate(state, cls, ref, record, ids, vdi_map, vif_map, mirrored)
            objects.append({"class": cls, "id": oid, "snapshot": record})
    ova = encode_value_xml({"version": _version(state), "objects": objects})
    disks = [
        (ids[v], v)
        for v in streamed_vdis(state, [vm, *snapshots])
        if v in ids and v not in mirrored
    ]
    return ExportPlan(ova, sorted(set(disks)), table.objects)


def _annotate(
    state: ServerState,
    cls: str,
    ref: str,
    snap: dict[str, Any],
    ids: Mapping[str, str],
    vdi_map: Mapping[str, str],
    vif_map: Mapping[str, str],
    mirrored: set[str],
) -> None:
    rec = state.record(cls, ref)
    if cls == "VM":
        for name in _SNAPSHOT_FIELDS:
            snap[name] = rec[name]
        for name in ("snapshot_of", "parent"):
            snap[name] = ids.get(rec[name], NULL_REF)
    elif cls == "VDI":
        other = {k: v for k, v in snap["other_config"].items() if k not in (MAPS_TO, MIRROR_KEY)}
        if ref in vdi_map:
            other[MAPS_TO] = vdi_map[ref]
        if ref in mirrored:
            other[MIRROR_KEY] = "true"
        snap["other_config"] = other
    elif cls == "VIF":
        other = {k: v for k, v in snap["other_config"].items() if k != MAPS_TO}
        if ref in vif_map:
            other[MAPS_TO] = vif_map[ref]
        snap["other_config"] = other
