"""Making a VM from an XVA: the objects of its ova.xml, then its disks, all or nothing.

Objects are handled in the reference's order — hosts (matched by uuid), SRs (every
non-ISO SR of the export becomes the target SR), VDIs (new disks in the target SR; disks
of ISO SRs are looked up by location in the ISO SRs here, else their drive is ejected),
guest metrics and metrics (copied), VMs, networks (matched by name, then by bridge, else
created), VBDs and VIFs. A new VM gets a new uuid and MAC seed (so its VIFs new MACs) and
is marked with the ``import`` operation until its disks are in; ``restore`` keeps uuids,
MACs and the seed, replacing a halted VM of the same uuid when the import is newer.

Whatever was made is removed again if anything fails — a bad or truncated stream, a
disk that does not fit, a cancelled task — so a failed import leaves nothing behind
(the reference skips that clean-up under ``force``; here ``force`` only lets checksum
errors pass).
"""

from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import dataclass
from typing import Any

from openxapi.api.coerce import CoercionError, coerce
from openxapi.api.context import CallContext
from openxapi.api.generic import Generic
from openxapi.api.handlers.vbd import create_vbd
from openxapi.api.handlers.vdi import create_vdi
from openxapi.api.handlers.vif import create_vif, destroy_vif_record, refresh_vm_vifs
from openxapi.api.handlers.vm_clone import copy_suspend_image, undo_made
from openxapi.api.state import ServerState, new_uuid
from openxapi.api.storage_access import storage_of
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF
from openxapi.spec.values import now
from openxapi.storage.xva_format import (
    EXPORT_VSN,
    OvaHeader,
    OvaObject,
    XvaError,
    XvaReader,
    parse_ova,
    write_disk,
)

log = logging.getLogger("openxapi.import")

IMPORT_TASK_KEY = "import_task"
MAC_SEED = "mac_seed"
#: VM.other_config keys the reference drops on import.
_DROPPED_VM_KEYS = ("grant_api_access",)
#: Classes in the order the reference makes them.
HANDLED_ORDER = (
    "host",
    "SR",
    "VDI",
    "VM_guest_metrics",
    "VM_metrics",
    "VM",
    "network",
    "VBD",
    "VIF",
)
#: VM fields set after creation (not constructor fields, or fixed up as the reference does).
_VM_LATER = ("is_a_snapshot", "snapshot_info", "snapshot_time", "transportable_snapshot_id")


@dataclass(frozen=True, slots=True)
class ImportedDisk:
    """A disk the stream carries: its export id, the new VDI and the bytes to receive."""

    id: str
    vdi: str
    size: int


def check_version(header: OvaHeader) -> None:
    """Streams of a layout newer than this reader knows are refused. (The reference
    compares xapi versions; that would refuse every export of a current XenServer.)"""
    if header.export_vsn > EXPORT_VSN:
        raise ApiError("IMPORT_INCOMPATIBLE_VERSION")


def _generic(state: ServerState) -> Generic:
    g = state.extras["generic"]
    assert isinstance(g, Generic)
    return g


def _fresh_genid(current: str) -> str:
    if current == "":
        return ""
    rng = random.SystemRandom()
    return f"{rng.randrange(2**63)}:{rng.randrange(2**63)}"


def _is_hvm(vm: dict[str, Any]) -> bool:
    if vm.get("domain_type") in ("hvm", "pv", "pvh", "pv_in_pvh"):
        return vm.get("domain_type") == "hvm"
    return bool(vm.get("HVM_boot_policy"))


class VmImport:
    """One XVA import into one SR: :meth:`create` the objects, :meth:`receive` the
    disks, then :meth:`complete` — or :meth:`undo` after any failure."""

    def __init__(
        self, state: ServerState, ctx: CallContext, sr: str, *, restore: bool, force: bool
    ) -> None:
        self.state = state
        self.ctx = ctx
        self.sr = sr
        self.restore = restore
        self.force = force
        self.storage = storage_of(state)
        self.export: dict[str, OvaObject] = {}
        #: export id -> ref here
        self.table: dict[str, str] = {}
        #: (class, ref) of everything made, in order
        self.made: list[tuple[str, str]] = []
        self.vms: list[str] = []
        self.disks: list[ImportedDisk] = []
        #: (class, ref, uuid): uuids a restore gives once the VM it replaces is gone
        self._claims: list[tuple[str, str, str]] = []
        #: VMs a restore replaces, removed once the import has succeeded
        self._replaced: list[str] = []
        self._export_vms: dict[str, dict[str, Any]] = {}
        #: (new suspend VDI, uuid of the exported one) of VMs imported suspended
        self._images: list[tuple[str, str]] = []

    # ---- helpers -------------------------------------------------------------------------
    def _typed(self, cls: str, snapshot: dict[str, Any]) -> dict[str, Any]:
        """The fields of ``cls`` an exported record holds, converted to their types.
        Fields this server does not know are ignored; a malformed constructor field is
        an import error, any other malformed field takes its default."""
        out: dict[str, Any] = {}
        enums = self.state.api.enums
        for f in self.state.cls(cls).fields:
            if f.name not in snapshot:
                continue
            try:
                out[f.name] = coerce(snapshot[f.name], f.type, enums)
            except (CoercionError, RecursionError):
                if f.in_constructor:
                    raise ApiError("IMPORT_ERROR", f"{cls}.{f.name} has a bad value") from None
                log.warning("import: ignoring a bad value of %s.%s", cls, f.name)
        return out

    def _find(self, oid: str) -> OvaObject:
        obj = self.export.get(oid)
        if obj is None:
            raise ApiError("IMPORT_ERROR_FAILED_TO_FIND_OBJECT", oid)
        return obj

    def _lookup(self, oid: Any) -> str:
        ref = self.table.get(str(oid))
        if ref is None:
            raise ApiError("IMPORT_ERROR_FAILED_TO_FIND_OBJECT", str(oid))
        return ref

    def _claim_uuid(self, cls: str, ref: str, uuid: Any) -> None:
        """With restore, give ``ref`` the exported uuid: now if it is free, or once the
        VM being replaced is gone if that VM's objects hold it."""
        if not self.restore or not isinstance(uuid, str) or not uuid:
            return
        holder = self.state.store.ref_of_uuid(cls, uuid)
        if holder is None:
            self.state.store.update(cls, ref, {"uuid": uuid})
        elif self._held_by_replaced(cls, holder):
            self._claims.append((cls, ref, uuid))

    def _held_by_replaced(self, cls: str, ref: str) -> bool:
        if cls == "VM":
            return ref in self._replaced
        rec = self.state.store.get(cls, ref)
        return rec is not None and rec.get("VM") in self._replaced

    # ---- objects -------------------------------------------------------------------------
    async def create(self, header: OvaHeader) -> list[ImportedDisk]:
        """Make every object of the export; returns the disks to receive, in stream order."""
        check_version(header)
        for obj in header.objects:
            self.export.setdefault(obj.id, obj)
        for obj in header.objects:
            if obj.cls == "VM":
                self._export_vms[obj.id] = obj.snapshot
        if self.restore:
            self._check_mac_seeds(header)
        handlers = {
            "host": self._host,
            "SR": self._sr,
            "VDI": self._vdi,
            "VM_guest_metrics": self._guest_metrics,
            "VM_metrics": self._metrics,
            "VM": self._vm,
            "network": self._network,
            "VBD": self._vbd,
            "VIF": self._vif,
        }
        for cls in HANDLED_ORDER:
            for obj in header.objects:
                if obj.cls == cls:
                    await handlers[cls](obj)
        self._link_snapshots()
        self.disks = self._streamed(header)
        await self.state.store.sync()
        return self.disks

    def _check_mac_seeds(self, header: OvaHeader) -> None:
        """A restore may not give two unrelated VMs the same MAC seed (DUPLICATE_MAC_SEED)."""
        st = self.state
        for obj in header.objects:
            if obj.cls != "VM":
                continue
            seed = obj.snapshot.get("other_config", {}).get(MAC_SEED)
            if not seed:
                continue
            uuid = obj.snapshot.get("uuid", "")
            for ref, rec in st.store.table("VM").items():
                if rec["other_config"].get(MAC_SEED) != seed:
                    continue
                if rec["is_a_snapshot"]:
                    parent = st.store.get("VM", rec["snapshot_of"])
                    same = parent is not None and parent["uuid"] == uuid
                else:
                    same = rec["uuid"] == uuid
                if not same:
                    log.info("import: VM %s already has mac_seed %s", ref, seed)
                    raise ApiError("DUPLICATE_MAC_SEED", seed)

    async def _host(self, obj: OvaObject) -> None:
        ref = self.state.store.ref_of_uuid("host", str(obj.snapshot.get("uuid", "")))
        if ref is not None:
            self.table[obj.id] = ref

    async def _sr(self, obj: OvaObject) -> None:
        if obj.snapshot.get("content_type") != "iso":
            self.table[obj.id] = self.sr

    async def _vdi(self, obj: OvaObject) -> None:
        st = self.state
        snap = obj.snapshot
        original_sr = self._find(str(snap.get("SR", NULL_REF))).snapshot
        if original_sr.get("content_type") == "iso":
            location = snap.get("location")
            for ref, rec in st.store.table("VDI").items():
                sr = st.store.get("SR", rec["SR"])
                if (
                    rec["location"] == location
                    and sr is not None
                    and sr["content_type"] == "iso"
                    and sr["type"] != "udev"
                ):
                    self.table[obj.id] = ref
                    return
            log.info("import: no ISO with location %s here; its drive is ejected", location)
            return
        rec = self._typed("VDI", snap)
        sm_config = {k: v for k, v in rec.get("sm_config", {}).items() if k != IMPORT_TASK_KEY}
        if self.ctx.task:
            sm_config[IMPORT_TASK_KEY] = self.ctx.task
        vdi_type = rec.get("type", "user")
        values = {
            "name_label": rec.get("name_label", ""),
            "name_description": rec.get("name_description", ""),
            "type": "user" if vdi_type == "cbt_metadata" else vdi_type,
            "sharable": rec.get("sharable", False),
            "read_only": rec.get("read_only", False),
            "other_config": rec.get("other_config", {}),
            "xenstore_data": rec.get("xenstore_data", {}),
            "sm_config": sm_config,
            "tags": rec.get("tags", []),
        }
        size = int(rec.get("virtual_size", 0))
        if size < 0:
            raise ApiError("IMPORT_ERROR", f"VDI {obj.id} has a negative size")
        ref = await create_vdi(self.storage, self.ctx, self.sr, size, values)
        self.made.append(("VDI", ref))
        self.table[obj.id] = ref

    async def _guest_metrics(self, obj: OvaObject) -> None:
        rec = self._typed("VM_guest_metrics", obj.snapshot)
        rec.pop("uuid", None)
        ref = self.state.create("VM_guest_metrics", rec)
        self.made.append(("VM_guest_metrics", ref))
        self.table[obj.id] = ref

    async def _metrics(self, obj: OvaObject) -> None:
        rec = self._typed("VM_metrics", obj.snapshot)
        rec.pop("uuid", None)
        ref = self.state.create("VM_metrics", rec)
        self.made.append(("VM_metrics", ref))
        self.table[obj.id] = ref

    def _existing_vm(self, rec: dict[str, Any]) -> None:
        """With restore, a VM already holding the uuid is replaced if halted and older."""
        st = self.state
        old = st.store.ref_of_uuid("VM", str(rec.get("uuid", "")))
        if not self.restore or old is None:
            return
        orec = st.record("VM", old)
        if orec["power_state"] != "Halted":
            raise ApiError("VM_BAD_POWER_STATE", old, "halted", str(orec["power_state"]).lower())
        if orec["version"] >= rec.get("version", 0) and not self.force:
            raise ApiError(
                "VM_TO_IMPORT_IS_NOT_NEWER_VERSION",
                old,
                str(orec["version"]),
                str(rec.get("version", 0)),
            )
        self._replaced.append(old)

    async def _vm(self, obj: OvaObject) -> None:
        st = self.state
        rec = self._typed("VM", obj.snapshot)
        self._existing_vm(rec)
        other = {k: v for k, v in rec.get("other_config", {}).items() if k not in _DROPPED_VM_KEYS}
        if not self.force:
            rec["is_default_template"] = False
            other.pop("default_template", None)
        if not self.restore or MAC_SEED not in other:
            other[MAC_SEED] = new_uuid()
        if self.ctx.task:
            other[IMPORT_TASK_KEY] = self.ctx.task
        rec["other_config"] = other
        if not rec.get("is_a_template", False):
            rec["generation_id"] = _fresh_genid(str(rec.get("generation_id", "")))
        if rec.get("domain_type", "unspecified") == "unspecified":
            rec["domain_type"] = "hvm" if rec.get("HVM_boot_policy") else "pv"
        if "has_vendor_device" not in obj.snapshot:
            rec["has_vendor_device"] = False
        priority = rec.get("ha_restart_priority", "")
        if priority in ("0", "1", "2", "3"):
            rec["ha_restart_priority"] = "restart"
            rec["order"] = int(priority)
        rec.update(
            protection_policy=NULL_REF,
            appliance=NULL_REF,
            snapshot_schedule=NULL_REF,
            version=rec.get("version", 0) + 1 if self.restore else 0,
            suspend_VDI=NULL_REF,
            power_state="Halted",
            affinity=self.table.get(str(obj.snapshot.get("affinity")), NULL_REF),
        )
        suspend_sr = rec.get("suspend_SR", NULL_REF)
        if suspend_sr != NULL_REF and st.store.get("SR", suspend_sr) is None:
            rec["suspend_SR"] = NULL_REF
        cls = st.cls("VM")
        args = {f.name: rec[f.name] for f in cls.fields if f.in_constructor and f.name in rec}
        g = _generic(st)
        ref = g.create_object(st, cls, args)
        self.made.append(("VM", ref))
        metrics = self.table.get(str(obj.snapshot.get("metrics")))
        if metrics is None:
            stamp = now()
            metrics = st.create(
                "VM_metrics", {"install_time": stamp, "last_updated": stamp, "start_time": stamp}
            )
            self.made.append(("VM_metrics", metrics))
        changes: dict[str, Any] = {k: rec[k] for k in _VM_LATER if k in rec}
        changes.update(
            metrics=metrics,
            guest_metrics=self.table.get(str(obj.snapshot.get("guest_metrics")), NULL_REF),
            bios_strings=rec.get("bios_strings", {}),
            domid=-1,
            snapshot_of=NULL_REF,
            parent=NULL_REF,
        )
        if rec.get("is_default_template") is not None:
            changes["is_default_template"] = rec["is_default_template"]
        if obj.snapshot.get("power_state") == "Suspended":
            image = self.table.get(str(obj.snapshot.get("suspend_VDI")))
            if image is not None:
                changes.update(power_state="Suspended", suspend_VDI=image)
                exported = self.export.get(str(obj.snapshot.get("suspend_VDI")))
                if exported is not None:
                    self._images.append((image, str(exported.snapshot.get("uuid", ""))))
                vm_metrics = st.store.get("VM_metrics", metrics)
                if vm_metrics is not None and "domain_type" in rec:
                    st.store.update(
                        "VM_metrics", metrics, {"current_domain_type": rec["domain_type"]}
                    )
            elif not self.force:
                raise ApiError(
                    "IMPORT_ERROR_FAILED_TO_FIND_OBJECT", str(obj.snapshot.get("suspend_VDI"))
                )
        if not self.force:
            changes["current_operations"] = {self.ctx.task or ref: "import"}
        self.storage.put("VM", ref, **changes)
        domains_of(st).refresh(ref)
        self._claim_uuid("VM", ref, obj.snapshot.get("uuid"))
        self.table[obj.id] = ref
        self.vms.append(ref)

    async def _network(self, obj: OvaObject) -> None:
        st = self.state
        rec = self._typed("network", obj.snapshot)
        label = rec.get("name_label", "")
        found = st.store.refs_by_name_label("network", label)
        if not found:
            bridge = rec.get("bridge", "")
            found = [r for r, n in st.store.table("network").items() if n["bridge"] == bridge]
        if found:
            self.table[obj.id] = found[0]
            return
        from openxapi.api.handlers.network import create as create_network

        wanted = ("name_label", "name_description", "MTU", "other_config", "bridge", "tags")
        args = {k: rec[k] for k in wanted if k in rec}
        try:
            ref = await create_network(st, self.ctx, args)
        except ApiError as e:
            if e.code not in ("INVALID_VALUE", "BRIDGE_NAME_EXISTS"):
                raise
            ref = await create_network(st, self.ctx, {**args, "bridge": ""})
        self.made.append(("network", ref))
        if self.ctx.task:
            other = dict(st.record("network", ref)["other_config"])
            other[IMPORT_TASK_KEY] = self.ctx.task
            st.store.update("network", ref, {"other_config": other})
        self.table[obj.id] = ref

    async def _vbd(self, obj: OvaObject) -> None:
        snap = obj.snapshot
        rec = self._typed("VBD", snap)
        vm = self._lookup(snap.get("VM"))
        original_vm = self._export_vms.get(str(snap.get("VM")), {})
        has_qemu = _is_hvm(original_vm)
        vdi_id = str(snap.get("VDI", NULL_REF))
        present = vdi_id in self.table
        vbd_type = rec.get("type", "Disk")
        if rec.get("currently_attached") and not present and not (vbd_type == "CD" and has_qemu):
            raise ApiError("IMPORT_ERROR_ATTACHED_DISKS_NOT_FOUND")
        values = {
            "VM": vm,
            "VDI": self.table.get(vdi_id, NULL_REF),
            "device": rec.get("device", ""),
            "userdevice": rec.get("userdevice", "autodetect"),
            "bootable": rec.get("bootable", False),
            "mode": rec.get("mode", "RW"),
            "type": vbd_type,
            "unpluggable": rec.get("unpluggable", False),
            "empty": rec.get("empty", False),
            "other_config": rec.get("other_config", {}),
            "currently_attached": rec.get("currently_attached", False),
            "qos_algorithm_type": rec.get("qos_algorithm_type", ""),
            "qos_algorithm_params": rec.get("qos_algorithm_params", {}),
        }
        if not present:
            if vbd_type == "Disk":
                log.warning("import: VBD %s has no disk here (an ISO as a disk?): left out", obj.id)
                return
            values.update(VDI=NULL_REF, empty=True, currently_attached=False)
        ref = create_vbd(self.storage, values)
        self.made.append(("VBD", ref))
        self._claim_uuid("VBD", ref, snap.get("uuid"))
        self.table[obj.id] = ref

    async def _vif(self, obj: OvaObject) -> None:
        st = self.state
        snap = obj.snapshot
        rec = self._typed("VIF", snap)
        vm = self._lookup(snap.get("VM"))
        network = self._lookup(snap.get("network"))
        mode = rec.get("locking_mode", "network_default")
        values = {
            "VM": vm,
            "network": network,
            "device": rec.get("device", "0"),
            "MAC": rec.get("MAC", "") if self.restore else "",
            "MTU": rec.get("MTU", 1500),
            "other_config": rec.get("other_config", {}),
            "qos_algorithm_type": rec.get("qos_algorithm_type", ""),
            "qos_algorithm_params": rec.get("qos_algorithm_params", {}),
            "locking_mode": "network_default" if mode == "locked" else mode,
            "ipv4_allowed": [],
            "ipv6_allowed": [],
            "currently_attached": (
                rec.get("currently_attached", False)
                and st.record("VM", vm)["power_state"] != "Halted"
            ),
        }
        ref = create_vif(st, values)
        metrics = st.record("VIF", ref)["metrics"]
        if metrics != NULL_REF:
            self.made.append(("VIF_metrics", metrics))
        self.made.append(("VIF", ref))
        self._claim_uuid("VIF", ref, snap.get("uuid"))
        self.table[obj.id] = ref

    def _link_snapshots(self) -> None:
        """snapshot_of and parent name exported VMs only through export ids."""
        for oid, snap in self._export_vms.items():
            ref = self.table.get(oid)
            if ref is None:
                continue
            changes = {}
            for field in ("snapshot_of", "parent"):
                target = self.table.get(str(snap.get(field, NULL_REF)))
                if target is not None:
                    changes[field] = target
            if changes:
                self.storage.put("VM", ref, **changes)

    def _streamed(self, header: OvaHeader) -> list[ImportedDisk]:
        """The reference's choice of disks in the stream: those of non-CD drives outside
        ISO SRs, and memory images; in the order of their ids as strings."""
        ids: set[str] = set()
        for obj in header.objects:
            if obj.cls == "VBD" and obj.snapshot.get("type") != "CD":
                vdi = self.export.get(str(obj.snapshot.get("VDI")))
                if vdi is None or vdi.cls != "VDI":
                    continue
                sr = self.export.get(str(vdi.snapshot.get("SR")))
                if sr is not None and sr.snapshot.get("content_type") != "iso":
                    ids.add(vdi.id)
            elif obj.cls == "VDI" and obj.snapshot.get("type") == "suspend":
                ids.add(obj.id)
        out = []
        for oid in sorted(ids):
            ref = self.table.get(oid)
            if ref is None or self.state.store.get("VDI", ref) is None:
                continue
            try:
                size = int(self.export[oid].snapshot.get("virtual_size", 0))
            except (TypeError, ValueError):
                raise ApiError("IMPORT_ERROR", f"VDI {oid} has a bad size") from None
            out.append(ImportedDisk(oid, ref, size))
        return out

    # ---- disks ---------------------------------------------------------------------------
    async def receive(self, reader: XvaReader, verify: bool) -> None:
        """Write every disk of the stream into its new VDI (contents replaced atomically
        per disk); progress and cancellation through the task."""
        st = self.state
        total = sum(d.size for d in self.disks)
        done = 0
        for disk in self.disks:
            rec = st.record("VDI", disk.vdi)
            sr = rec["SR"]
            drv = await self.storage.driver(sr)
            base = done

            def progress(n: int, base: int = base) -> None:
                self.storage.progress(self.ctx, min((base + n) / max(total, 1), 1.0) * 0.99)

            with self.storage.errors(sr, disk.vdi):
                writer = await drv.open_writer(rec["location"])
                try:
                    await write_disk(
                        reader.disk_pieces(disk.id, disk.size, verify, progress), writer
                    )
                    info = await writer.commit()
                except BaseException:
                    await writer.abort()
                    raise
            self.storage.put("VDI", disk.vdi, physical_utilisation=info.physical_utilisation)
            await self.storage.refresh_capacity(sr, drv)
            done += disk.size
            await st.store.sync()
        await self._adopt_images()

    async def _adopt_images(self) -> None:
        """A memory image is in its VDI for backends that keep it there; a backend that
        keeps images aside (the simulator) is told of the copy when the exported image
        is on this host."""
        st = self.state
        for vdi, exported_uuid in self._images:
            source = st.store.ref_of_uuid("VDI", exported_uuid) if exported_uuid else None
            if source is not None and source != vdi:
                await copy_suspend_image(st, source, vdi)

    # ---- the end -------------------------------------------------------------------------
    async def complete(self) -> list[str]:
        """The import succeeded: VMs lose the ``import`` mark, replaced VMs go, restored
        uuids are given; returns the new VMs (only snapshots if nothing else came)."""
        st = self.state
        for old in self._replaced:
            await self._remove_replaced(old)
        for cls, ref, uuid in self._claims:
            if st.store.ref_of_uuid(cls, uuid) is None and st.store.get(cls, ref) is not None:
                st.store.update(cls, ref, {"uuid": uuid})
        key = self.ctx.task
        for vm in self.vms:
            rec = st.store.get("VM", vm)
            if rec is None:
                continue
            ops = {k: v for k, v in rec["current_operations"].items() if k != key and v != "import"}
            st.store.update("VM", vm, {"current_operations": ops})
            domains_of(st).refresh(vm)
            self.storage.refresh_vm(vm)
            refresh_vm_vifs(st, vm)
        await st.store.sync()
        plain = [vm for vm in self.vms if not st.record("VM", vm)["is_a_snapshot"]]
        return plain or list(self.vms)

    async def _remove_replaced(self, vm: str) -> None:
        """What the reference's restore does to the VM it replaces: its VIFs, VBDs and
        record go (its disks stay)."""
        st = self.state
        rec = st.store.get("VM", vm)
        if rec is None:
            return
        for vif in list(rec["VIFs"]):
            destroy_vif_record(st, vif)
        for vbd in list(rec["VBDs"]):
            self.storage.destroy_vbd_record(vbd)
        g = _generic(st)
        for field, cls in (("metrics", "VM_metrics"), ("guest_metrics", "VM_guest_metrics")):
            if rec[field] != NULL_REF and st.store.get(cls, rec[field]) is not None:
                g.destroy_object(st, cls, rec[field])
        g.destroy_object(st, "VM", vm)

    async def undo(self) -> None:
        """Remove everything this import made, newest first."""
        try:
            await undo_made(self.state, self.made)
        finally:
            self.made = []
            await self.state.store.sync()


def mark_objects_created(state: ServerState, ctx: CallContext) -> None:
    """The reference's signal on the import's task that the objects exist (clients then
    remap networks); nothing without a task."""
    rec = state.store.get("task", ctx.task) if ctx.task else None
    if rec is not None:
        other = {**rec["other_config"], "object_creation": "complete"}
        state.store.update("task", ctx.task, {"other_config": other})


async def import_xva(job: VmImport, reader: XvaReader, force: bool = False) -> list[str]:
    """Read one XVA into ``job``: the objects, then the disks (checked unless ``force``),
    then the finishing touches; returns the refs made. On any failure what was made is
    removed and an XVA format error becomes its XenAPI error. The caller closes ``reader``."""
    try:
        header = parse_ova(await reader.read_ova())
        await job.create(header)
        mark_objects_created(job.state, job.ctx)
        vsn = header.export_vsn
        reader.keep_checksums = vsn < 2
        await job.receive(reader, verify=not force and vsn > 0)
        if vsn < 2:
            table = await reader.checksum_table()
            if not reader.table_matches(table) and not force:
                raise ApiError("IMPORT_ERROR_SOME_CHECKSUMS_FAILED")
        with contextlib.suppress(XvaError):
            await reader.finish()
        return await job.complete()
    except BaseException as exc:
        try:
            await job.undo()
        except Exception:
            log.exception("could not remove what a failed import made")
        if isinstance(exc, XvaError):
            raise ApiError(exc.code, *exc.params) from None
        raise
