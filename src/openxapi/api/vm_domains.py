"""Where VM records meet the domain backend: selection, bookkeeping and re-adoption.

The backend reports plain domain facts; this module records them in the store as the
reference does (power_state, domid, resident_on, VM_metrics, VM_guest_metrics, devices'
currently_attached), keeps allowed_operations in step with every power-state or
current-operations change, and reacts to domains changing on their own (a guest agent
reporting, a guest shutting itself down or crashing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator
from typing import Any

from openxapi.api.consoles import sync_consoles
from openxapi.api.context import CallContext
from openxapi.api.generic import Generic
from openxapi.api.state import ServerState, new_ref
from openxapi.api.uefi import install as install_uefi
from openxapi.api.vm_lifecycle import VmFacts, allowed_operations, assert_operation_valid
from openxapi.spec.model import NULL_REF
from openxapi.spec.values import DateTime, now
from openxapi.xenops.backend import DomainBackend, DomainInfo, GuestInfo
from openxapi.xenops.simulator import SimulatorBackend, SimulatorSettings

log = logging.getLogger("openxapi.vm")

RUNNING_STATES = ("Running", "Paused")


def backend_choice(backend: str, qemu_binary: str) -> str:
    """ "simulator" or "qemu": what ``--backend`` resolves to ("auto": QEMU when installed)."""
    if backend == "auto":
        return "qemu" if shutil.which(qemu_binary) else "simulator"
    return backend


def make_backend(state: ServerState) -> DomainBackend:
    """The domain backend ``--backend`` names."""
    cfg = state.config
    if backend_choice(cfg.backend, cfg.qemu_binary) == "qemu":
        from openxapi.xenops.qemu import QemuBackend, QemuSettings

        image = cfg.guest_image_dir
        return QemuBackend(
            cfg.data_dir / "qemu" if cfg.durable else None,
            QemuSettings(
                binary=cfg.qemu_binary,
                accel=cfg.accel,
                probe_kernel=str(image / "vmlinuz"),
                probe_initrd=str(image / "initrd.gz"),
            ),
        )
    settings = SimulatorSettings(
        boot_time=cfg.sim_boot_time,
        shutdown_time=cfg.sim_shutdown_time,
        host_memory=cfg.sim_host_memory,
        host_cpus=cfg.sim_host_cpus,
    )
    state_dir = cfg.data_dir / "simulator" if cfg.durable else None
    return SimulatorBackend(state_dir, settings)


def _changed_fields(rec: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``values`` that differ from ``rec``."""
    return {k: v for k, v in values.items() if rec.get(k) != v}


def _update_changed(
    st: ServerState, cls: str, ref: str, rec: dict[str, Any], values: dict[str, Any]
) -> bool:
    """Write only the fields whose value differs (re-adopting thousands of unchanged domains
    at start-up then writes nothing); True when something was written."""
    changed = _changed_fields(rec, values)
    if changed:
        st.store.update(cls, ref, changed)
    return bool(changed)


def _stamp(seconds: float) -> DateTime:
    import datetime as dt

    moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return DateTime(moment.strftime("%Y%m%dT%H:%M:%SZ"))


class VmDomains:
    """The server's domain backend and the records it drives."""

    def __init__(self, state: ServerState, backend: DomainBackend) -> None:
        self.state = state
        self.backend = backend
        self._opened = False
        self._open_lock = asyncio.Lock()
        self._pending: set[asyncio.Task[None]] = set()
        self._unresident: dict[str, set[str]] | None = None
        backend.set_listener(self._on_change)

    @property
    def generic(self) -> Generic:
        g = self.state.extras["generic"]
        assert isinstance(g, Generic)
        return g

    # ---- start-up ---------------------------------------------------------------------
    async def ready(self) -> DomainBackend:
        """The opened backend; the first call re-adopts the domains that outlived a restart."""
        if not self._opened:
            async with self._open_lock:
                if not self._opened:
                    adopted = await self.backend.open()
                    self._opened = True
                    await self._adopt(adopted)
        return self.backend

    async def _adopt(self, adopted: list[DomainInfo]) -> None:
        st = self.state
        live = {d.uuid: d for d in adopted}
        # VMs leaving a host are taken off its resident_VMs in one write at the end.
        self._unresident = {}
        try:
            for i, (ref, rec) in enumerate(list(st.store.table("VM").items())):
                if i % 256 == 255:
                    await asyncio.sleep(0)  # thousands of VMs must not hold up other calls
                self._adopt_one(ref, rec, live)
        finally:
            gone, self._unresident = self._unresident, None
            for host, refs in gone.items():
                hrec = st.store.get("host", host)
                if hrec is not None:
                    kept = [r for r in hrec["resident_VMs"] if r not in refs]
                    st.store.update("host", host, {"resident_VMs": kept})
        for uuid in live:  # domains with no VM any more
            task = asyncio.get_running_loop().create_task(self.backend.hard_shutdown(uuid))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _adopt_one(self, ref: str, rec: dict[str, Any], live: dict[str, DomainInfo]) -> None:
        st = self.state
        if rec["is_control_domain"]:
            return
        if rec["current_operations"]:
            st.store.update("VM", ref, {"current_operations": {}})
        info = live.pop(rec["uuid"], None)
        alive = info is not None and info.state in ("running", "paused")
        if alive and info is not None:  # the domain is the truth, as in the reference
            self.record_running(ref, info)
        elif rec["power_state"] in RUNNING_STATES:
            self.record_halted(ref)
            if self.backend.exit_reason(rec["uuid"]) == "vanished":
                self._alert_vanished(rec)
        if not alive and info is not None:
            live[rec["uuid"]] = info  # a crashed domain left behind: destroyed below
        if rec["current_operations"]:
            self.refresh(ref)

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        if self._opened:
            await self.backend.close()
            self._opened = False

    # ---- allowed operations -------------------------------------------------------------
    def facts(self, rec: dict[str, Any]) -> VmFacts:
        """What the lifecycle checks need from the VM's metrics and devices."""
        st = self.state
        metrics = st.store.get("VM_metrics", rec["metrics"]) if rec["metrics"] else None
        gm = (
            st.store.get("VM_guest_metrics", rec["guest_metrics"]) if rec["guest_metrics"] else None
        )
        pv = False
        other: dict[str, str] = {}
        if gm is not None:
            version = gm["PV_drivers_version"]
            pv = "major" in version and "minor" in version
            other = gm["other"]
        reset = ""
        for vbd in rec["VBDs"]:
            vrec = st.store.get("VBD", vbd)
            if vrec is None or vrec["empty"]:
                continue
            vdi = st.store.get("VDI", vrec["VDI"])
            if vdi is not None and vdi["on_boot"] == "reset":
                reset = vrec["VDI"]
        return VmFacts(
            booted_hvm=bool(metrics and metrics["hvm"]),
            pv_drivers=pv,
            guest_other=other,
            vtpms=len(rec["VTPMs"]),
            pcis=len(rec["attached_PCIs"]),
            vgpus=len(rec["VGPUs"]),
            vusbs=len(rec["VUSBs"]),
            reset_on_boot_vdi=reset,
        )

    def allowed(self, rec: dict[str, Any], ref: str) -> list[str]:
        """allowed_operations for a record as it is (or is about to be)."""
        return allowed_operations(rec, ref, self.facts(rec))

    def refresh(self, ref: str) -> None:
        """Recompute allowed_operations of ``ref`` (written only when it changed)."""
        rec = self.state.store.get("VM", ref)
        if rec is None:
            return
        ops = allowed_operations(rec, ref, self.facts(rec))
        if ops != rec["allowed_operations"]:
            self.state.store.update("VM", ref, {"allowed_operations": ops})
        if rec["appliance"] != NULL_REF:  # its operations depend on its VMs' states
            from openxapi.api.handlers.vm_grouping import refresh_appliance

            refresh_appliance(self.state, rec["appliance"])

    def check(self, ref: str, op: str, *, strict: bool = True) -> dict[str, Any]:
        """The VM's record, or the lifecycle error for ``op``."""
        rec = self.state.record("VM", ref)
        assert_operation_valid(rec, ref, op, self.facts(rec), strict=strict)
        return rec

    @contextlib.asynccontextmanager
    async def operation(
        self, ref: str, op: str, ctx: CallContext, *, strict: bool = True
    ) -> AsyncIterator[dict[str, Any]]:
        """Run ``op`` on the VM: checked, listed in current_operations while it runs."""
        rec = self.check(ref, op, strict=strict)
        key = ctx.task or new_ref()
        st = self.state
        st.store.update("VM", ref, {"current_operations": {**rec["current_operations"], key: op}})
        self.refresh(ref)
        await st.store.sync()
        try:
            yield st.record("VM", ref)
        finally:
            now_rec = st.store.get("VM", ref)
            if now_rec is not None and key in now_rec["current_operations"]:
                rest = {k: v for k, v in now_rec["current_operations"].items() if k != key}
                st.store.update("VM", ref, {"current_operations": rest})
                self.refresh(ref)

    # ---- recording domain facts ------------------------------------------------------------
    def _set_resident(self, ref: str, host: str) -> None:
        st = self.state
        old = st.record("VM", ref)["resident_on"]
        if old == host:
            return
        if self._unresident is not None and host == NULL_REF and old != NULL_REF:
            self._unresident.setdefault(old, set()).add(ref)
            st.store.update("VM", ref, {"resident_on": host})
            return
        Generic._unlink(st, "host", "resident_VMs", old, ref)
        st.store.update("VM", ref, {"resident_on": host})
        Generic._link(st, "host", "resident_VMs", host, ref)

    def record_running(self, ref: str, info: DomainInfo) -> None:
        """The VM has a domain: Running or Paused, on this host, its metrics live."""
        st = self.state
        power = "Paused" if info.state == "paused" else "Running"
        rec = st.record("VM", ref)
        _update_changed(
            st,
            "VM",
            ref,
            rec,
            {"power_state": power, "domid": info.domid, "scheduled_to_be_resident_on": NULL_REF},
        )
        self._set_resident(ref, st.host_ref)
        metrics = st.store.get("VM_metrics", rec["metrics"]) if rec["metrics"] else None
        if metrics is not None:
            changed = _changed_fields(
                metrics,
                {
                    "memory_actual": info.memory_actual,
                    "VCPUs_number": info.vcpus,
                    "start_time": _stamp(info.start_time),
                    "hvm": info.hvm,
                    "current_domain_type": "hvm" if info.hvm else "pv",
                    "state": [info.state],
                },
            )
            if changed:
                st.store.update("VM_metrics", rec["metrics"], {**changed, "last_updated": now()})
        self._record_guest(ref, info.guest)
        sync_consoles(st, ref, info)
        self.refresh(ref)

    def set_devices_attached(self, ref: str, attached: bool) -> None:
        """VBDs (and, when detaching, VIFs) follow the domain."""
        st = self.state
        rec = st.record("VM", ref)
        for vbd in rec["VBDs"]:
            if st.store.get("VBD", vbd) is not None:
                st.store.update("VBD", vbd, {"currently_attached": attached})
        from openxapi.api.storage_access import storage_of

        storage_of(st).refresh_vm(ref)
        if not attached:
            from openxapi.api.handlers.vif import refresh_vif_operations

            for vif in rec["VIFs"]:
                if st.store.get("VIF", vif) is not None:
                    st.store.update("VIF", vif, {"currently_attached": False})
                    refresh_vif_operations(st, vif)

    def record_halted(self, ref: str) -> None:
        """The VM has no domain: Halted, nowhere, devices detached, guest metrics gone."""
        self._record_stopped(ref, "Halted")

    def record_suspended(self, ref: str, suspend_vdi: str) -> None:
        """The VM's memory is in ``suspend_vdi``; it runs nowhere."""
        self.state.store.update("VM", ref, {"suspend_VDI": suspend_vdi})
        self._record_stopped(ref, "Suspended")

    def _record_stopped(self, ref: str, power: str) -> None:
        st = self.state
        st.store.update(
            "VM",
            ref,
            {
                "power_state": power,
                "domid": -1,
                "scheduled_to_be_resident_on": NULL_REF,
                "requires_reboot": False,
            },
        )
        self._set_resident(ref, NULL_REF)
        if power == "Halted":
            self.set_devices_attached(ref, False)
        rec = st.record("VM", ref)
        if rec["metrics"] and st.store.get("VM_metrics", rec["metrics"]) is not None:
            st.store.update(
                "VM_metrics",
                rec["metrics"],
                {"memory_actual": 0, "VCPUs_number": 0, "state": [], "last_updated": now()},
            )
        self._record_guest(ref, None)
        sync_consoles(st, ref, None)
        self.refresh(ref)

    def _record_guest(self, ref: str, guest: GuestInfo | None) -> None:
        st = self.state
        rec = st.record("VM", ref)
        gm = rec["guest_metrics"]
        exists = gm != NULL_REF and st.store.get("VM_guest_metrics", gm) is not None
        if guest is None:
            if exists:
                self.generic.destroy_object(st, "VM_guest_metrics", gm)
            if gm != NULL_REF:
                st.store.update("VM", ref, {"guest_metrics": NULL_REF})
            return
        values = {
            "os_version": dict(guest.os_version),
            "PV_drivers_version": dict(guest.pv_drivers_version),
            "PV_drivers_up_to_date": guest.pv_drivers_detected,
            "PV_drivers_detected": guest.pv_drivers_detected,
            "networks": dict(guest.networks),
            "other": dict(guest.other),
            "netbios_name": dict(guest.netbios_name),
            "last_updated": _stamp(guest.last_updated) if guest.last_updated else now(),
            "live": True,
            "can_use_hotplug_vbd": "yes",
            "can_use_hotplug_vif": "yes",
        }
        if exists:
            old = st.record("VM_guest_metrics", gm)
            changed = {k: v for k, v in values.items() if old.get(k) != v and k != "last_updated"}
            if changed:
                st.store.update("VM_guest_metrics", gm, {**changed, "last_updated": now()})
        else:
            new = st.create("VM_guest_metrics", values)
            st.store.update("VM", ref, {"guest_metrics": new})

    # ---- domains changing on their own -------------------------------------------------------
    def _on_change(self, uuid: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._sync(uuid))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _sync(self, uuid: str) -> None:
        st = self.state
        ref = st.store.ref_of_uuid("VM", uuid)
        if ref is None:
            return
        rec = st.record("VM", ref)
        info = await self.backend.info(uuid)
        if rec["current_operations"] and (info is None or info.state != "crashed"):
            if info is not None and rec["power_state"] in RUNNING_STATES:
                self._record_guest(ref, info.guest)
                self.refresh(ref)
                await st.store.sync()
            return
        if rec["power_state"] not in RUNNING_STATES:
            return
        if info is None:
            reason = self.backend.exit_reason(uuid)
            if reason == "vanished":  # the hypervisor process died: no restart, an alert
                self._alert_vanished(rec)
                await self._after_exit(ref, False)
            elif reason == "crash":
                await self._after_exit(ref, "restart" in rec["actions_after_crash"])
            else:
                await self._after_exit(ref, rec["actions_after_shutdown"] == "restart")
        elif info.state == "crashed":
            await self.backend.hard_shutdown(uuid)
            await self._after_exit(ref, "restart" in rec["actions_after_crash"])
        else:
            self.record_running(ref, info)
        await st.store.sync()

    def _alert_vanished(self, rec: dict[str, Any]) -> None:
        """Record, as an alert, that a VM's domain disappeared without being asked to."""
        from openxapi.api.messages import raise_alert

        log.warning("VM %s: its domain is gone; recorded Halted", rec["uuid"])
        raise_alert(
            self.state,
            "VM_CRASHED",
            2,
            "VM",
            rec["uuid"],
            f"The domain of VM '{rec['name_label']}' disappeared (its {self.backend.name} "
            "process is gone); the VM is now Halted.",
        )

    async def _after_exit(self, ref: str, restart: bool) -> None:
        from openxapi.api.handlers.vm_power import boot_domain

        if restart:
            try:
                await boot_domain(self.state, ref, paused=False)
                return
            except Exception:  # a failed restart leaves the VM halted
                log.exception("restarting VM %s failed", ref)
        from openxapi.api.handlers.vif import detach_vm_vifs

        self.record_halted(ref)
        await detach_vm_vifs(self.state, ref)


class _LivePivot:
    """The storage layer's live-snapshot hook for one disk of a running domain."""

    def __init__(self, backend: Any, uuid: str, userdevice: str) -> None:
        self.backend = backend
        self.uuid = uuid
        self.userdevice = userdevice

    async def pivot(self, new_top: str) -> None:
        await self.backend.live_snapshot(self.uuid, self.userdevice, new_top, "qcow2")


def _install_storage_hooks(state: ServerState, backend: DomainBackend) -> None:
    """Backends that open disk images themselves snapshot attached disks live."""
    if not hasattr(backend, "live_snapshot") or not hasattr(backend, "has_domain"):
        return
    from openxapi.api.storage_access import storage_of

    def provider(vbd: str) -> _LivePivot | None:
        rec = state.store.get("VBD", vbd)
        vm = state.store.get("VM", rec["VM"]) if rec is not None else None
        if rec is None or vm is None or vm["power_state"] not in RUNNING_STATES:
            return None
        if not backend.has_domain(vm["uuid"]):
            return None  # stopped for a checkpoint: its disks are closed
        return _LivePivot(backend, vm["uuid"], rec["userdevice"])

    storage = storage_of(state)
    storage.live_snapshot = provider
    if hasattr(backend, "disk_plug"):
        storage.device_hooks = _DiskHooks(state, backend)


class _DiskHooks:
    """VBD plug, unplug, insert and eject on a running domain, through its backend."""

    def __init__(self, state: ServerState, backend: Any) -> None:
        self.state = state
        self.backend = backend

    def _live(self, vm: str) -> str:
        """The VM's uuid when its domain runs now, else ""."""
        rec = self.state.store.get("VM", vm)
        if rec is None or rec["power_state"] not in RUNNING_STATES:
            return ""
        return str(rec["uuid"]) if self.backend.has_domain(rec["uuid"]) else ""

    async def vbd_plug(self, vm: str, vbd: str) -> None:
        from openxapi.api.handlers.vm_power import attach_path
        from openxapi.xenops.backend import DiskSpec

        uuid = self._live(vm)
        rec = self.state.record("VBD", vbd)
        if not uuid:
            return
        if rec["type"] == "CD":
            from openxapi.errors import ApiError

            raise ApiError("OPERATION_NOT_ALLOWED", "CD drives cannot be plugged into a running VM")
        if rec["empty"]:
            return
        vdi = self.state.record("VDI", rec["VDI"])
        path, fmt = await attach_path(self.state, vdi, rec["mode"] == "RW")
        disk = DiskSpec(
            rec["userdevice"], vdi["location"], rec["mode"] == "RO", path=path, format=fmt
        )
        await self._call(self.backend.disk_plug(uuid, disk))

    async def vbd_unplug(self, vm: str, vbd: str, force: bool) -> None:
        uuid = self._live(vm)
        rec = self.state.record("VBD", vbd)
        if uuid and rec["type"] != "CD":
            await self._call(self.backend.disk_unplug(uuid, rec["userdevice"]))

    async def vbd_insert(self, vm: str, vbd: str, vdi: str) -> None:
        from openxapi.api.handlers.vm_power import attach_path

        uuid = self._live(vm)
        if uuid:
            path, fmt = await attach_path(self.state, self.state.record("VDI", vdi), False)
            ud = self.state.record("VBD", vbd)["userdevice"]
            await self._call(self.backend.cd_insert(uuid, ud, path, fmt))

    async def vbd_eject(self, vm: str, vbd: str) -> None:
        uuid = self._live(vm)
        if uuid:
            ud = self.state.record("VBD", vbd)["userdevice"]
            await self._call(self.backend.cd_eject(uuid, ud))

    @staticmethod
    async def _call(op: Any) -> None:
        from openxapi.errors import ApiError
        from openxapi.xenops.backend import BackendError

        try:
            await op
        except BackendError as e:
            raise ApiError("INTERNAL_ERROR", f"domain backend: {e}") from None


def domains_of(state: ServerState) -> VmDomains:
    """The server's VmDomains, made (with its backend) on first use."""
    d = state.extras.get("vm_domains")
    if not isinstance(d, VmDomains):
        d = VmDomains(state, make_backend(state))
        state.extras["vm_domains"] = d
        _install_storage_hooks(state, d.backend)
        install_uefi(state, d.backend)
    return d


async def start_domains(state: ServerState) -> None:
    """At server start: open the backend and re-adopt surviving domains."""
    await domains_of(state).ready()
    await state.store.sync()


async def stop_domains(state: ServerState) -> None:
    """At server stop: let the domains run on; they are re-adopted next start."""
    d = state.extras.get("vm_domains")
    if isinstance(d, VmDomains):
        await d.close()
