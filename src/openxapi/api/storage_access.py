"""Storage as the API layer sees it: SR drivers bound to SR records, and the records kept
true (sizes, allowed and current operations, VDIs matching what the drivers report).

One :class:`Storage` per server (``storage_of(state)``). It owns the attached driver of
every SR whose PBD on this host is plugged, turns driver failures into the reference's
errors with the right SR and VDI references, and runs operations the way the reference
does: an operation marks the object it works on (``current_operations``), waits while a
conflicting one is in progress, and refreshes ``allowed_operations`` as it starts and
ends. The VM layer supplies two optional hooks: ``device_hooks`` (hot-plug a disk into a
running VM) and ``live_snapshot`` (snapshot a disk a running VM writes to).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from openxapi.api.context import CallContext
from openxapi.api.generic import Generic
from openxapi.api.state import ServerState, new_ref, new_uuid
from openxapi.api.storage_rules import (
    VDI_OPERATIONS,
    Error,
    sr_allowed,
    sr_errors,
    vbd_allowed,
    vbd_errors,
    vdi_allowed,
    vdi_error,
)
from openxapi.api.tasks import tasks_of
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF
from openxapi.storage import errors as se
from openxapi.storage.driver import DriverContext, LiveSnapshot, SRDriver, VdiInfo
from openxapi.storage.paths import UUID_RE
from openxapi.storage.registry import driver_class

log = logging.getLogger("openxapi.storage")

#: Seconds an operation waits for a conflicting one on the same object to end.
WAIT_LIMIT = 30.0


class DeviceHooks(Protocol):
    """What the VM layer does for VBD operations on a running VM."""

    async def vbd_plug(self, vm: str, vbd: str) -> None: ...

    async def vbd_unplug(self, vm: str, vbd: str, force: bool) -> None: ...

    async def vbd_insert(self, vm: str, vbd: str, vdi: str) -> None: ...

    async def vbd_eject(self, vm: str, vbd: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Pbd:
    ref: str
    record: dict[str, Any]


def _raise(err: Error | None) -> None:
    if err is not None:
        raise ApiError(err[0], *err[1])


class Storage:
    """The server's storage: drivers of attached SRs and the bookkeeping around them."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        cfg = state.config
        iso_dir = getattr(cfg, "iso_dir", None)
        default_iso = cfg.data_dir / "iso"
        roots = (default_iso,) if iso_dir is None else (iso_dir, default_iso)
        self.ctx = DriverContext(cfg.data_dir / "sr", tuple(roots), cfg.data_dir / "tmp")
        self.drivers: dict[str, SRDriver] = {}
        self._attach_locks: dict[str, asyncio.Lock] = {}
        self._events: dict[tuple[str, str], asyncio.Event] = {}
        self.wait_limit = WAIT_LIMIT
        self.device_hooks: DeviceHooks | None = None
        #: Given an attached VBD, the hypervisor's live-snapshot path for its disk (or None).
        self.live_snapshot: Callable[[str], LiveSnapshot | None] | None = None

    # ---- records ----------------------------------------------------------------------
    @property
    def generic(self) -> Generic:
        g = self.state.extras["generic"]
        assert isinstance(g, Generic)
        return g

    def insert(self, cls: str, values: dict[str, Any]) -> str:
        """Create a record with defaults filled in and its relations linked."""
        st = self.state
        ref = new_ref()
        if "uuid" in st.cls(cls).field_map and not values.get("uuid"):
            values = {**values, "uuid": new_uuid()}
        record = st.new_record(cls, values)
        st.store.create(cls, ref, record)
        g = self.generic
        for r, owner in g.relations.links(cls, record):
            g._link(st, r.owner_cls, r.set_field, owner, ref)
        return ref

    def put(self, cls: str, ref: str, **values: Any) -> None:
        """Update fields, keeping relations in step and skipping unchanged values."""
        st = self.state
        rec = st.record(cls, ref)
        for name, value in values.items():
            if rec[name] != value:
                self.generic.set_field(st, cls, ref, rec, name, value)
                rec = st.record(cls, ref)

    def local_pbd(self, sr: str) -> Pbd | None:
        st = self.state
        for pbd in st.record("SR", sr)["PBDs"]:
            rec = st.store.get("PBD", pbd)
            if rec is not None and rec["host"] == st.host_ref:
                return Pbd(pbd, rec)
        return None

    def is_attached(self, sr: str) -> bool:
        pbd = self.local_pbd(sr)
        return pbd is not None and bool(pbd.record["currently_attached"])

    def features(self, sr: str) -> Mapping[str, int]:
        cls = driver_class(self.state.record("SR", sr)["type"])
        return cls.features if cls is not None else {}

    # ---- drivers ------------------------------------------------------------------------
    def driver_class(self, sr_type: str) -> type[SRDriver]:
        cls = driver_class(sr_type)
        if cls is None:
            raise ApiError("SR_UNKNOWN_DRIVER", sr_type)
        return cls

    def make_driver(self, sr: str, device_config: Mapping[str, str]) -> SRDriver:
        rec = self.state.record("SR", sr)
        cls = self.driver_class(rec["type"])
        try:
            return cls(self.ctx, rec["uuid"], device_config)
        except se.InvalidLocation as e:
            raise ApiError("INVALID_VALUE", "device_config:location", e.location) from None

    def known(self, sr: str) -> list[VdiInfo]:
        """The SR's disks as the store records them (for drivers that rebuild from it)."""
        out = []
        for vdi in self.state.record("SR", sr)["VDIs"]:
            rec = self.state.store.get("VDI", vdi)
            if rec is not None and rec["managed"]:
                out.append(
                    VdiInfo(
                        rec["location"],
                        rec["virtual_size"],
                        rec["physical_utilisation"],
                        rec["read_only"],
                        rec["uuid"],
                    )
                )
        return out

    async def driver(self, sr: str) -> SRDriver:
        """The attached driver of an SR, or SR_HAS_NO_PBDS when it is not plugged here."""
        drv = self.drivers.get(sr)
        if drv is not None:
            return drv
        pbd = self.local_pbd(sr)
        if pbd is None or not pbd.record["currently_attached"]:
            raise ApiError("SR_HAS_NO_PBDS", sr)
        lock = self._attach_locks.setdefault(sr, asyncio.Lock())
        async with lock:
            drv = self.drivers.get(sr)
            if drv is None:
                drv = self.make_driver(sr, pbd.record["device_config"])
                with self.errors(sr):
                    await drv.attach(self.known(sr))
                self.drivers[sr] = drv
                await self.refresh_capacity(sr, drv)
        return drv

    @contextlib.contextmanager
    def errors(self, sr: str, vdi: str = "") -> Iterator[None]:
        """Driver failures become the reference's errors, naming ``sr`` and ``vdi``."""
        try:
            yield
        except se.SrFull as e:
            raise ApiError("SR_FULL", str(e.requested), str(e.available)) from None
        except se.VdiMissing as e:
            if vdi:
                raise ApiError("VDI_MISSING", sr, vdi) from None
            raise ApiError("VDI_LOCATION_MISSING", sr, e.location) from None
        except se.InvalidLocation as e:
            raise ApiError("VDI_LOCATION_MISSING", sr, e.location) from None
        except se.NotSupported:
            raise ApiError("SR_OPERATION_NOT_SUPPORTED", sr) from None
        except NotImplementedError:
            raise ApiError("SR_OPERATION_NOT_SUPPORTED", sr) from None
        except se.InvalidSize as e:
            raise ApiError(
                "SR_BACKEND_FAILURE_79", "", f"VDI Invalid size [opterr={e.reason}]", ""
            ) from None
        except se.ImageTooLarge as e:
            raise ApiError("VDI_TOO_SMALL", vdi, str(e.needed)) from None
        except se.BadImage as e:
            raise ApiError("VDI_IO_ERROR", str(e)) from None
        except se.BackendFailure as e:
            raise ApiError("SR_BACKEND_FAILURE", e.status, e.stdout, e.stderr) from None
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise ApiError("SR_FULL", "0", "0") from None
            raise ApiError(
                "SR_BACKEND_FAILURE", str(e.errno or ""), "", e.strerror or str(e)
            ) from None

    # ---- SR bookkeeping ----------------------------------------------------------------
    async def refresh_capacity(self, sr: str, drv: SRDriver) -> None:
        with self.errors(sr):
            stat = await drv.stat()
        self.put(
            "SR",
            sr,
            physical_size=stat.physical_size,
            physical_utilisation=stat.physical_utilisation,
        )

    def recount_allocation(self, sr: str) -> None:
        total = 0
        for vdi in self.state.record("SR", sr)["VDIs"]:
            rec = self.state.store.get("VDI", vdi)
            if rec is not None and rec["managed"]:
                total += rec["virtual_size"]
        self.put("SR", sr, virtual_allocation=total)

    def add_allocation(self, sr: str, delta: int) -> None:
        rec = self.state.record("SR", sr)
        self.put("SR", sr, virtual_allocation=max(rec["virtual_allocation"], 0) + delta)

    def sr_table(self, sr: str) -> dict[str, Error | None]:
        st = self.state
        rec = st.record("SR", sr)
        pbds = [st.store.get("PBD", p) for p in rec["PBDs"]]
        attached = sum(1 for p in pbds if p is not None and p["currently_attached"])
        has_vdis = False
        for vdi in rec["VDIs"]:
            v = st.store.get("VDI", vdi)
            if v is not None and v["managed"] and v["type"] != "rrd":
                has_vdis = True
                break
        return sr_errors(
            sr,
            rec,
            self.features(sr),
            attached_pbds=attached,
            pbds=sum(1 for p in pbds if p is not None),
            has_managed_vdis=has_vdis,
        )

    def refresh_sr(self, sr: str) -> None:
        if self.state.store.get("SR", sr) is None:
            return
        self.put("SR", sr, allowed_operations=sr_allowed(self.sr_table(sr)))

    def check_sr(self, sr: str, op: str) -> None:
        _raise(self.sr_table(sr)[op])

    # ---- VDI bookkeeping --------------------------------------------------------------
    def vdi_check(self, vdi: str, op: str) -> Error | None:
        st = self.state
        rec = st.record("VDI", vdi)
        sr = rec["SR"]
        sr_rec = st.store.get("SR", sr)
        vbds = [v for v in (st.store.get("VBD", b) for b in rec["VBDs"]) if v is not None]
        return vdi_error(
            op,
            vdi,
            rec,
            self.features(sr) if sr_rec is not None else {},
            sr_ref=sr,
            sr_attached=sr_rec is not None and self.is_attached(sr),
            sr_type=sr_rec["type"] if sr_rec is not None else "",
            is_tools_sr=bool(sr_rec and sr_rec["is_tools_sr"]),
            vbds=vbds,
        )

    def check_vdi(self, vdi: str, op: str) -> None:
        _raise(self.vdi_check(vdi, op))

    def refresh_vdi(self, vdi: str) -> None:
        if self.state.store.get("VDI", vdi) is None:
            return
        allowed = vdi_allowed({op: self.vdi_check(vdi, op) for op in VDI_OPERATIONS})
        self.put("VDI", vdi, allowed_operations=allowed)

    def new_vdi(self, sr: str, info: VdiInfo, **values: Any) -> str:
        """A record for a disk the driver made or found; returns its ref."""
        st = self.state
        uuid = values.pop("uuid", "") or info.uuid
        if not UUID_RE.match(uuid) or st.store.ref_of_uuid("VDI", uuid) is not None:
            uuid = new_uuid()
        fields: dict[str, Any] = {
            "uuid": uuid,
            "name_label": info.name_label,
            "SR": sr,
            "virtual_size": info.virtual_size,
            "physical_utilisation": info.physical_utilisation,
            "type": "user",
            "sharable": False,
            "read_only": info.read_only,
            "location": info.location,
            "managed": True,
            "missing": False,
            "sm_config": dict(info.sm_config),
            "on_boot": "persist",
        }
        fields.update(values)
        ref = self.insert("VDI", fields)
        self.refresh_vdi(ref)
        return ref

    def destroy_vdi_record(self, vdi: str) -> None:
        """Remove a VDI record with the VBDs that point at it (the disk is not touched)."""
        st = self.state
        rec = st.store.get("VDI", vdi)
        if rec is None:
            return
        for vbd in list(rec["VBDs"]):
            self.destroy_vbd_record(vbd, refresh=False)
        for vm, vrec in st.store.table("VM").items():
            if vrec.get("suspend_VDI") == vdi:
                st.store.update("VM", vm, {"suspend_VDI": NULL_REF})
        self.generic.destroy_object(st, "VDI", vdi)

    def reconcile(self, sr: str, infos: list[VdiInfo]) -> None:
        """Make the SR's VDI records match what its driver reports (SR.scan)."""
        st = self.state
        by_location = {i.location: i for i in infos}
        seen: set[str] = set()
        for vdi in list(st.record("SR", sr)["VDIs"]):
            rec = st.store.get("VDI", vdi)
            if rec is None or not rec["managed"]:
                continue
            info = by_location.get(rec["location"])
            if info is None or rec["location"] in seen:
                if any(
                    (b := st.store.get("VBD", v)) is not None and b["currently_attached"]
                    for v in rec["VBDs"]
                ):
                    self.put("VDI", vdi, missing=True)
                else:
                    self.destroy_vdi_record(vdi)
                continue
            seen.add(rec["location"])
            self.put(
                "VDI",
                vdi,
                virtual_size=info.virtual_size,
                physical_utilisation=info.physical_utilisation,
                missing=False,
            )
        for info in infos:
            if info.location not in seen:
                self.new_vdi(sr, info)
        self.recount_allocation(sr)

    # ---- VBD bookkeeping --------------------------------------------------------------
    def vbd_table(self, vbd: str) -> dict[str, Error | None]:
        st = self.state
        rec = st.record("VBD", vbd)
        vm = rec["VM"]
        vm_rec = st.store.get("VM", vm) or {}
        vdi = rec["VDI"]
        vdi_rec = st.store.get("VDI", vdi) if vdi != NULL_REF else None
        others: list[dict[str, Any]] = []
        suspended: list[bool] = []
        if vdi_rec is not None:
            for other in vdi_rec["VBDs"]:
                orec = st.store.get("VBD", other)
                if other == vbd or orec is None:
                    continue
                others.append(orec)
                ovm = st.store.get("VM", orec["VM"]) or {}
                suspended.append(ovm.get("power_state") == "Suspended")
        return vbd_errors(
            vbd,
            rec,
            vm,
            vm_rec,
            vdi_ref=vdi,
            vdi=vdi_rec,
            others=others,
            others_suspended=suspended,
            control_domain=bool(vm_rec.get("is_control_domain")),
        )

    def check_vbd(self, vbd: str, op: str) -> None:
        _raise(self.vbd_table(vbd)[op])

    def refresh_vbd(self, vbd: str) -> None:
        if self.state.store.get("VBD", vbd) is None:
            return
        self.put("VBD", vbd, allowed_operations=vbd_allowed(self.vbd_table(vbd)))

    def refresh_vm(self, vm: str) -> None:
        """After a VM's power state changed: its VBDs' allowed operations."""
        rec = self.state.store.get("VM", vm)
        if rec is not None:
            for vbd in rec["VBDs"]:
                self.refresh_vbd(vbd)

    def destroy_vbd_record(self, vbd: str, refresh: bool = True) -> None:
        """Remove a VBD record with its metrics; the VDI's operations are refreshed."""
        st = self.state
        rec = st.store.get("VBD", vbd)
        if rec is None:
            return
        metrics = rec["metrics"]
        if metrics != NULL_REF and st.store.get("VBD_metrics", metrics) is not None:
            self.generic.destroy_object(st, "VBD_metrics", metrics)
        self.generic.destroy_object(st, "VBD", vbd)
        if refresh and rec["VDI"] != NULL_REF:
            self.refresh_vdi(rec["VDI"])

    # ---- operations in progress ---------------------------------------------------------
    @staticmethod
    def _conflict(cls: str, current: Mapping[str, str], op: str) -> tuple[str, str] | None:
        for task, other in current.items():
            if cls == "SR" and op == "plug" and other == "plug":
                continue
            if cls == "VDI" and op == "copy" and other == "copy":
                continue
            if cls == "VBD" and op in ("pause", "unpause") and other in ("pause", "unpause"):
                continue
            return task, other
        return None

    def _refresh(self, cls: str, ref: str) -> None:
        if cls == "SR":
            self.refresh_sr(ref)
        elif cls == "VDI":
            self.refresh_vdi(ref)
            rec = self.state.store.get("VDI", ref)
            for vbd in rec["VBDs"] if rec is not None else ():
                self.refresh_vbd(vbd)
        elif cls == "VBD":
            self.refresh_vbd(ref)

    @contextlib.asynccontextmanager
    async def operation(
        self,
        cls: str,
        ref: str,
        op: str,
        ctx: CallContext,
        check: Callable[[], None] | None = None,
    ) -> AsyncIterator[str]:
        """Run as ``op`` on ``cls``/``ref``: wait (up to ``wait_limit``) while a
        conflicting operation is in progress, run ``check`` (which raises to refuse), then
        list ours in current_operations until the block ends. Yields the key used (the
        task ref)."""
        st = self.state
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_limit
        while True:
            rec = st.record(cls, ref)
            held = self._conflict(cls, rec["current_operations"], op)
            if held is None:
                break
            left = deadline - loop.time()
            if left <= 0:
                raise ApiError("OTHER_OPERATION_IN_PROGRESS", cls, ref, held[1], held[0])
            event = self._events.setdefault((cls, ref), asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), left)
        if check is not None:
            check()
            rec = st.record(cls, ref)
        key = ctx.task or new_ref()
        st.store.update(cls, ref, {"current_operations": {**rec["current_operations"], key: op}})
        self._refresh(cls, ref)
        try:
            yield key
        finally:
            rec2 = st.store.get(cls, ref)
            if rec2 is not None and key in rec2["current_operations"]:
                rest = {k: v for k, v in rec2["current_operations"].items() if k != key}
                st.store.update(cls, ref, {"current_operations": rest})
                self._refresh(cls, ref)
            waiting = self._events.pop((cls, ref), None)
            if waiting is not None:
                waiting.set()

    # ---- tasks --------------------------------------------------------------------------
    def progress(self, ctx: CallContext, fraction: float) -> None:
        """Report progress on the call's task; TASK_CANCELLED once the task was cancelled
        (long copies call this often, so cancelling stops them at the next block)."""
        if not ctx.task:
            return
        tasks = tasks_of(self.state)
        if tasks.cancel_requested(ctx.task):
            raise ApiError("TASK_CANCELLED", ctx.task)
        tasks.set_progress(ctx, fraction)


def storage_of(state: ServerState) -> Storage:
    """The server's Storage, made on first use."""
    s = state.extras.get("storage")
    if not isinstance(s, Storage):
        s = Storage(state)
        state.extras["storage"] = s
    return s


def live_hook(storage: Storage, vdi: str) -> LiveSnapshot | None:
    """The hypervisor's live-snapshot path for a disk attached to a running VM, if any."""
    provider = storage.live_snapshot
    if provider is None:
        return None
    st = storage.state
    for vbd in st.record("VDI", vdi)["VBDs"]:
        rec = st.store.get("VBD", vbd)
        if rec is not None and rec["currently_attached"]:
            hook = provider(vbd)
            if hook is not None:
                return hook
    return None
