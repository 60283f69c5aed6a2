"""Recovering VMs from a database (a foreign copy, or this server's own) into this server.

As the reference, recovery is a metadata export from the database the call reads, made
with the VMs' snapshots and their metadata kept and the power state preserved, followed
by a metadata import with full restore into the database of ``session_to``. The import
keeps uuids and MACs and replaces a halted VM of the same uuid when the recovered one is
newer (VM_TO_IMPORT_IS_NOT_NEWER_VERSION otherwise, unless forced). Disks are not copied:
each VDI is looked up in the SR of the same uuid here, by location (then by uuid);
SRs and VDIs that cannot be found fail the recovery (VDI_LOCATION_MISSING,
VDI_CONTENT_ID_MISSING) unless ``force``, which skips them, skips VMs whose running
namesake cannot be replaced, and leaves a failed recovery's objects in place.
"""

from __future__ import annotations

import logging
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.foreign_db import home_of
from openxapi.api.state import ServerState
from openxapi.api.vm_export import _rewrite
from openxapi.api.vm_import import VmImport
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF
from openxapi.storage.xva_format import EXPORT_VSN, OvaHeader, OvaObject

log = logging.getLogger("openxapi.dr")

#: VDI.other_config keys the reference copies onto a disk it finds (vdi_other_config_sync_keys).
SYNCED_VDI_KEYS = ("config-drive",)
_ORDER = ("host", "VM", "VM_metrics", "VM_guest_metrics", "VBD", "VIF", "network", "VDI", "SR")
_CLEARED: dict[str, Any] = {"current_operations": {}, "allowed_operations": []}


class _Selection:
    """Objects of the source database chosen for recovery, each with an export id."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.ids: dict[str, str] = {}
        self.classes: dict[str, str] = {}

    def add(self, cls: str, ref: str) -> bool:
        if ref == NULL_REF or ref in self.ids or self.state.store.get(cls, ref) is None:
            return False
        self.ids[ref] = f"Ref:{len(self.ids)}"
        self.classes[ref] = cls
        return True

    def add_vdi(self, vdi: str) -> None:
        if self.add("VDI", vdi):
            self.add("SR", self.state.record("VDI", vdi)["SR"])

    def walk(self, vm: str, include_snapshots: bool) -> None:
        """The reference's walk from a VM (with snapshots) to the objects it needs."""
        st = self.state
        if not self.add("VM", vm):
            return
        rec = st.record("VM", vm)
        for vif in rec["VIFs"]:
            if self.add("VIF", vif):
                self.add("network", st.record("VIF", vif)["network"])
        for vbd in rec["VBDs"]:
            if self.add("VBD", vbd):
                vrec = st.record("VBD", vbd)
                if not vrec["empty"]:
                    self.add_vdi(vrec["VDI"])
        if include_snapshots:
            for snap in rec["snapshots"]:
                self.walk(snap, False)
        if rec["power_state"] == "Suspended":
            self.add_vdi(rec["suspend_VDI"])
        self.add("VM_metrics", rec["metrics"])
        self.add("VM_guest_metrics", rec["guest_metrics"])
        self.add("host", rec["resident_on"])
        self.add("host", rec["affinity"])
        if include_snapshots:
            self.walk(rec["parent"], False)

    def _record(self, cls: str, ref: str) -> dict[str, Any]:
        st = self.state
        rec = st.record(cls, ref)
        out = {f.name: _rewrite(rec[f.name], f.type, self.ids) for f in st.cls(cls).fields}
        if cls == "VM":
            out.update(_CLEARED, crash_dumps=[], consoles=[], protection_policy=NULL_REF, blobs={})
        elif cls in ("VBD", "VIF"):
            owner = st.store.get("VM", rec["VM"])
            suspended = owner is not None and owner["power_state"] == "Suspended"
            out.update(_CLEARED, metrics=NULL_REF)
            out["currently_attached"] = bool(rec["currently_attached"]) and suspended
        elif cls == "network":
            out.update(_CLEARED, PIFs=[])
        elif cls == "VDI":
            out.update(_CLEARED, crash_dumps=[])
        elif cls == "SR":
            out.update(_CLEARED, PBDs=[])
        return out

    def header(self) -> OvaHeader:
        objects = [
            OvaObject(cls, self.ids[ref], self._record(cls, ref))
            for wanted in _ORDER
            for ref, cls in self.classes.items()
            if cls == wanted
        ]
        return OvaHeader({"export_vsn": EXPORT_VSN}, objects)


class VmRecovery(VmImport):
    """A metadata-only restore: SRs and disks are found here, never created."""

    async def _sr(self, obj: OvaObject) -> None:
        ref = self.state.store.ref_of_uuid("SR", str(obj.snapshot.get("uuid", "")))
        if ref is not None:
            self.table[obj.id] = ref
        else:
            log.warning("recovery: no SR with uuid %s here", obj.snapshot.get("uuid"))

    def _find_disk(self, sr: str, snap: dict[str, Any]) -> str | None:
        st = self.state
        vdis = [v for v in st.record("SR", sr)["VDIs"] if st.store.get("VDI", v) is not None]
        for vdi in vdis:
            if st.record("VDI", vdi)["location"] == snap.get("location"):
                return str(vdi)
        for vdi in vdis:
            if st.record("VDI", vdi)["uuid"] == snap.get("uuid"):
                return str(vdi)
        return None

    async def _vdi(self, obj: OvaObject) -> None:
        snap = obj.snapshot
        original_sr = self._find(str(snap.get("SR", NULL_REF))).snapshot
        if original_sr.get("content_type") == "iso":
            await super()._vdi(obj)  # an ISO by location in an ISO SR, else an ejected drive
            return
        sr = self.table.get(str(snap.get("SR", NULL_REF)))
        found = self._find_disk(sr, snap) if sr is not None else None
        if found is not None:
            self.table[obj.id] = found
            self._sync_keys(found, snap)
            return
        location = str(snap.get("location", ""))
        if self.force:
            log.warning("recovery: no VDI with location %s; skipped (force)", location)
            return
        if sr is not None:
            raise ApiError("VDI_LOCATION_MISSING", sr, location)
        raise ApiError("VDI_CONTENT_ID_MISSING")

    def _sync_keys(self, vdi: str, snap: dict[str, Any]) -> None:
        st = self.state
        other = dict(st.record("VDI", vdi)["other_config"])
        exported = snap.get("other_config") or {}
        for key in SYNCED_VDI_KEYS:
            other.pop(key, None)
            if key in exported:
                other[key] = exported[key]
        if other != st.record("VDI", vdi)["other_config"]:
            st.store.update("VDI", vdi, {"other_config": other})

    async def _vm(self, obj: OvaObject) -> None:
        old = self.state.store.ref_of_uuid("VM", str(obj.snapshot.get("uuid", "")))
        if (
            self.force
            and old is not None
            and self.state.record("VM", old)["power_state"] != "Halted"
        ):
            log.info("recovery: VM %s is not halted here; skipped (force)", old)
            return
        await super()._vm(obj)

    async def _vbd(self, obj: OvaObject) -> None:
        if str(obj.snapshot.get("VM")) in self.table:
            await super()._vbd(obj)

    async def _vif(self, obj: OvaObject) -> None:
        if str(obj.snapshot.get("VM")) in self.table:
            await super()._vif(obj)

    def _streamed(self, header: OvaHeader) -> list[Any]:
        return []


def required_srs(state: ServerState, vm: str) -> list[str]:
    """The SRs of the VM's non-CD disks (ISO SRs left out), in ref order as the reference."""
    rec = state.record("VM", vm)
    srs = set()
    for vbd in rec["VBDs"]:
        vrec = state.store.get("VBD", vbd)
        if vrec is None or vrec["type"] == "CD":
            continue
        vdi = state.store.get("VDI", vrec["VDI"])
        if vdi is None:
            continue
        sr = state.store.get("SR", vdi["SR"])
        if sr is not None and sr["content_type"] != "iso":
            srs.add(vdi["SR"])
    return sorted(srs)


def _here(state: ServerState, sr: str) -> tuple[str | None, bool]:
    """The SR of the same uuid on this server (or None), and whether a PBD of it is plugged."""
    home = home_of(state)
    here = home.store.ref_of_uuid("SR", state.record("SR", sr)["uuid"])
    if here is None:
        return None, False
    plugged = any(
        (p := home.store.get("PBD", pbd)) is not None and p["currently_attached"]
        for pbd in home.record("SR", here)["PBDs"]
    )
    return here, plugged


def srs_lacking(state: ServerState, vm: str) -> list[str]:
    """Every SR (as refs of the database read) the VM needs that is missing or unplugged."""
    return [sr for sr in required_srs(state, vm) if not _here(state, sr)[1]]


def assert_recoverable(state: ServerState, vm: str) -> None:
    """VM_REQUIRES_SR [vm; sr] for the first SR the VM needs and this server lacks."""
    for sr in required_srs(state, vm):
        here, plugged = _here(state, sr)
        if not plugged:  # named as here when it exists here, else as in the database read
            raise ApiError("VM_REQUIRES_SR", vm, here or sr)


async def recover_vms(
    state: ServerState, ctx: CallContext, vms: list[str], force: bool
) -> list[str]:
    """Import the VMs (with their snapshots) read from ``state`` into this server; returns
    the VMs made here. The SRs they need lose their ``introduced_by`` mark."""
    selection = _Selection(state)
    for vm in vms:
        selection.walk(vm, True)
    home = home_of(state)
    recovery = VmRecovery(home, ctx, NULL_REF, restore=True, force=force)
    try:
        await recovery.create(selection.header())
        made = await recovery.complete()
    except BaseException:
        if not force:
            await recovery.undo()
        raise
    for vm in made:
        for sr in required_srs(home, vm):
            if home.record("SR", sr)["introduced_by"] != NULL_REF:
                home.store.update("SR", sr, {"introduced_by": NULL_REF})
    await home.store.sync()
    return made
