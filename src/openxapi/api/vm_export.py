"""What a VM export holds: the ova.xml describing a VM with its devices, and its disks.

As the reference: the VM, its VIFs with their networks, its VBDs with their VDIs and SRs,
its metrics, guest metrics and the hosts it names (resident_on, affinity), and with
``preserve_power_state`` a suspended VM's memory image, each with a fresh export-local id
(``Ref:0``, ``Ref:1``…). Every reference inside the records becomes such an id, or
``OpaqueRef:NULL`` when it names an object outside the export. Operations, PBDs, PIFs,
device metrics and attachment state are cleared as the reference clears them; the disks
streamed are those of non-CD drives outside ISO SRs (plus the memory image), in the order
of their ids as strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openxapi.api.state import ServerState
from openxapi.spec import types as T
from openxapi.spec.model import NULL_REF
from openxapi.spec.values import EPOCH, Int32
from openxapi.storage.xva_format import version_struct
from openxapi.wire import encode_value_xml

#: The order the reference lists exported objects in, by class.
OBJECT_ORDER = (
    "host",
    "VM",
    "VM_metrics",
    "VM_guest_metrics",
    "VBD",
    "VIF",
    "network",
    "VDI",
    "SR",
)

_CLEARED_OPS: dict[str, Any] = {"current_operations": {}, "allowed_operations": []}
#: Host fields the reference empties before exporting a host record.
_HOST_CLEARED: dict[str, Any] = {
    "PIFs": [],
    "PBDs": [],
    "PGPUs": [],
    "PCIs": [],
    "host_CPUs": [],
    "license_params": {},
    "blobs": {},
    "external_auth_type": "",
    "external_auth_service_name": "",
    "external_auth_configuration": {},
    "metrics": NULL_REF,
    "patches": [],
    "crashdumps": [],
    "logging": {},
    "supported_bootloaders": [],
    "cpu_configuration": {},
    "other_config": {},
    "capabilities": [],
    "software_version": {},
    "sched_policy": "",
    "ha_statefiles": [],
    "ha_network_peers": [],
    "tags": [],
}


@dataclass(frozen=True, slots=True)
class ExportPlan:
    """The ova.xml of an export and its disks as (export id, VDI ref), in stream order."""

    ova_xml: bytes
    disks: list[tuple[str, str]]
    objects: dict[str, tuple[str, str]]  # internal ref -> (class, export id)


def _rewrite(value: Any, t: T.Type, ids: dict[str, str]) -> Any:
    """``value`` of type ``t`` with every reference mapped to its export id (references
    outside the export: NULL in a field, left out of a set or map)."""
    if isinstance(t, T.Ref):
        return ids.get(value, NULL_REF)
    if isinstance(t, T.Set):
        if _has_ref(t.elem):
            return [ids[v] for v in value if v in ids]
        return list(value)
    if isinstance(t, T.Map):
        if not (_has_ref(t.key) or _has_ref(t.value)):
            return dict(value)
        out = {}
        for k, v in value.items():
            if (isinstance(t.key, T.Ref) and k not in ids) or (
                isinstance(t.value, T.Ref) and v not in ids
            ):
                continue
            out[_rewrite(k, t.key, ids)] = _rewrite(v, t.value, ids)
        return out
    if isinstance(t, T.Option):
        return None if value is None else _rewrite(value, t.inner, ids)
    return value


def _has_ref(t: T.Type) -> bool:
    if isinstance(t, T.Ref):
        return True
    if isinstance(t, T.Set):
        return _has_ref(t.elem)
    if isinstance(t, T.Map):
        return _has_ref(t.key) or _has_ref(t.value)
    if isinstance(t, T.Option):
        return _has_ref(t.inner)
    return False


class _Table:
    """Internal refs chosen for the export, each with its class and export id."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.objects: dict[str, tuple[str, str]] = {}

    def add(self, cls: str, ref: str) -> bool:
        if ref == NULL_REF or ref in self.objects or self.state.store.get(cls, ref) is None:
            return False
        self.objects[ref] = (cls, f"Ref:{len(self.objects)}")
        return True

    def add_vdi(self, vdi: str) -> None:
        if self.add("VDI", vdi):
            self.add("SR", self.state.record("VDI", vdi)["SR"])

    def add_vm(self, vm: str, suspend_image: bool) -> dict[str, Any]:
        """The VM with its VIFs and networks, drives and disks (and, if asked, the memory
        image of a suspended VM) and metrics; returns its record."""
        state = self.state
        rec = state.record("VM", vm)
        self.add("VM", vm)
        for vif in rec["VIFs"]:
            if self.add("VIF", vif):
                self.add("network", state.record("VIF", vif)["network"])
        for vbd in rec["VBDs"]:
            if self.add("VBD", vbd):
                vrec = state.record("VBD", vbd)
                if not vrec["empty"]:
                    self.add_vdi(vrec["VDI"])
        if suspend_image and rec["power_state"] == "Suspended":
            self.add_vdi(rec["suspend_VDI"])
        self.add("VM_metrics", rec["metrics"])
        self.add("VM_guest_metrics", rec["guest_metrics"])
        return rec


def _select(state: ServerState, vm: str, preserve_power_state: bool) -> _Table:
    """The reference's walk from the VM to the objects its export holds."""
    table = _Table(state)
    rec = table.add_vm(vm, preserve_power_state)
    table.add("host", rec["resident_on"])
    table.add("host", rec["affinity"])
    return table


def _snapshot(
    state: ServerState, cls: str, ref: str, ids: dict[str, str], preserve: bool
) -> dict[str, Any]:
    rec = state.record(cls, ref)
    out = {f.name: _rewrite(rec[f.name], f.type, ids) for f in state.cls(cls).fields}
    if cls == "VM":
        out.update(_CLEARED_OPS)
        if not preserve:
            out["power_state"] = "Halted"
            out["suspend_VDI"] = NULL_REF
        out.update(
            is_a_snapshot=False,
            snapshot_of=NULL_REF,
            snapshots=[],
            snapshot_time=EPOCH,
            transportable_snapshot_id="",
            parent=NULL_REF,
            crash_dumps=[],
            consoles=[],
            protection_policy=NULL_REF,
            blobs={},
        )
    elif cls in ("VBD", "VIF"):
        out.update(_CLEARED_OPS, metrics=NULL_REF)
        if not preserve:
            out["currently_attached"] = False
    elif cls == "network":
        out.update(_CLEARED_OPS, PIFs=[])
    elif cls == "VDI":
        out.update(_CLEARED_OPS, crash_dumps=[])
    elif cls == "SR":
        out.update(_CLEARED_OPS, PBDs=[])
    elif cls == "host":
        out.update(_HOST_CLEARED)
    return out


def _version(state: ServerState) -> dict[str, Any]:
    host = state.store.get("host", state.host_ref) or {}
    sv = host.get("software_version", {})
    version = version_struct(
        hostname=str(sv.get("hostname", host.get("hostname", ""))),
        product_version=str(sv.get("product_version", "")),
        product_brand=str(sv.get("product_brand", "")),
        build_number=str(sv.get("build_number", "")),
        xapi_major=state.api.version_major,
        xapi_minor=state.api.version_minor,
    )
    # The reference writes these three as XML-RPC ints (``<i4>``), not as strings.
    for key in ("xapi_major", "xapi_minor", "export_vsn"):
        version[key] = Int32(version[key])
    return version


def plan_export(state: ServerState, vm: str, preserve_power_state: bool) -> ExportPlan:
    """The ova.xml and disk list of exporting ``vm`` now."""
    table = _select(state, vm, preserve_power_state)
    ids = {ref: oid for ref, (_, oid) in table.objects.items()}
    objects = [
        {
            "class": cls,
            "id": oid,
            "snapshot": _snapshot(state, cls, ref, ids, preserve_power_state),
        }
        for wanted in OBJECT_ORDER
        for ref, (cls, oid) in table.objects.items()
        if cls == wanted
    ]
    ova = encode_value_xml({"version": _version(state), "objects": objects})
    rec = state.record("VM", vm)
    disks: list[str] = []
    for vbd in rec["VBDs"]:
        vrec = state.store.get("VBD", vbd)
        if vrec is not None and vrec["type"] != "CD" and not vrec["empty"]:
            disks.append(vrec["VDI"])
    if preserve_power_state and rec["power_state"] == "Suspended":
        disks.insert(0, rec["suspend_VDI"])
    streamed = []
    for vdi in disks:
        vdi_rec = state.store.get("VDI", vdi)
        sr_rec = state.store.get("SR", vdi_rec["SR"]) if vdi_rec is not None else None
        if vdi in ids and sr_rec is not None and sr_rec["content_type"] != "iso":
            streamed.append((ids[vdi], vdi))
    streamed = sorted(set(streamed))
    return ExportPlan(ova, streamed, table.objects)
