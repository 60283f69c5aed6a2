"""VM.migrate_send to another pool: the VM, its snapshots and disks, then its running guest.

The VM and its snapshots go as one XVA stream to the destination's migration service,
each disk into the SR the VDI map names and each VIF onto the network the VIF map names
(snapshot disks follow the disk they are a snapshot of, memory images go to the
destination's suspend SR, anything else to its default SR). A running VM is then moved by
its hypervisor: the destination builds a paused domain waiting for it, the domain's state
streams across over loopback TCP and the guest runs on there. Backends whose running
domains hold their disks open (QEMU) mirror those disks during that stream; for the others
the guest is paused while its disks are copied, so the copy matches its memory.

Until the guest runs on the destination every failure undoes the destination's side and
leaves the VM here as it was. Then the VM here goes (its disks, VBDs, VIFs and snapshots
with it) unless ``copy`` was asked for.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from openxapi.api.context import CallContext
from openxapi.api.handlers.vdi import delete_vdi
from openxapi.api.handlers.vif import destroy_vif_record, detach_vm_vifs
from openxapi.api.handlers.vm_power import suspend_image
from openxapi.api.migrate_checks import Checked, assert_can_migrate_vdis
from openxapi.api.migrate_export import plan_migration, streamed_vdis
from openxapi.api.migrate_remote import RemoteApi, Unreachable
from openxapi.api.state import ServerState
from openxapi.api.storage_access import storage_of
from openxapi.api.tasks import tasks_of
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF
from openxapi.storage.driver import DiskReader
from openxapi.storage.xva_format import ExportDisk, xva_stream
from openxapi.xenops.backend import BackendError, DomainBackend

log = logging.getLogger("openxapi.migrate")


def failed(state: ServerState, vm: str, checked: Checked, why: str) -> ApiError:
    return ApiError("VM_MIGRATE_FAILED", vm, state.host_ref, checked.remote.host, why)


async def _remote_default(api: RemoteApi) -> tuple[str, str]:
    """The destination pool's default SR and the SR its memory images go to."""
    pool = (await api.call("pool.get_all"))[0]
    default = str(await api.call("pool.get_default_SR", pool))
    suspend = str(await api.call("pool.get_suspend_image_SR", pool))
    if suspend == NULL_REF:
        host = api.remote.host
        suspend = str(await api.call("host.get_suspend_image_sr", host))
    return default, suspend


async def complete_vdi_map(
    state: ServerState,
    checked: Checked,
    vm: str,
    snapshots: list[str],
    vdi_map: Mapping[str, str],
) -> dict[str, str]:
    """The VDI map with snapshot disks and memory images placed as the reference does."""
    full = dict(vdi_map)
    extra = [v for v in streamed_vdis(state, [vm, *snapshots]) if v not in full]
    if not extra:
        return full
    default, suspend = await _remote_default(checked.api)
    for vdi in extra:
        rec = state.record("VDI", vdi)
        if rec["snapshot_of"] in vdi_map:
            full[vdi] = vdi_map[rec["snapshot_of"]]
        elif rec["type"] == "suspend" and suspend != NULL_REF:
            full[vdi] = suspend
        elif default != NULL_REF:
            full[vdi] = default
        else:
            raise ApiError("VDI_NOT_IN_MAP", vdi)
    return full


def _opener(state: ServerState, vdi: str) -> Callable[[], Awaitable[DiskReader]]:
    async def open_disk() -> DiskReader:
        storage = storage_of(state)
        rec = state.record("VDI", vdi)
        drv = await storage.driver(rec["SR"])
        with storage.errors(rec["SR"], vdi):
            return await drv.open_reader(rec["location"])

    return open_disk


async def _stream(
    state: ServerState, ctx: CallContext, ova: bytes, disks: list[tuple[str, str]]
) -> AsyncIterator[bytes]:
    storage = storage_of(state)
    exported = []
    for oid, vdi in disks:
        rec = state.record("VDI", vdi)
        await storage.driver(rec["SR"])
        exported.append(ExportDisk(oid, int(rec["virtual_size"]), _opener(state, vdi)))
    total = max(sum(d.size for d in exported), 1)

    def progress(done: int) -> None:
        storage.progress(ctx, 0.1 + 0.6 * min(done / total, 1.0))

    async for piece in xva_stream(ova, exported, "", progress):
        yield piece


def _mirrored(state: ServerState, vm: str, backend: DomainBackend, live: bool) -> set[str]:
    """Disks the hypervisor carries itself: the writable disks of a running domain."""
    if not live or not backend.migration_copies_disks():
        return set()
    out = set()
    for vbd in state.record("VM", vm)["VBDs"]:
        rec = state.store.get("VBD", vbd)
        if rec is not None and not rec["empty"] and rec["type"] != "CD" and rec["mode"] == "RW":
            out.add(rec["VDI"])
    return out


async def _move_guest(
    state: ServerState, checked: Checked, vm: str, new_vm: str, backend: DomainBackend
) -> None:
    api = checked.api
    uuid = state.record("VM", vm)["uuid"]
    target = await api.service("incoming", {"vm": new_vm})
    if not isinstance(target, dict) or target.get("backend") != backend.name:
        theirs = target.get("backend") if isinstance(target, dict) else "?"
        raise failed(state, vm, checked, f"the destination runs the {theirs} backend")
    try:
        await backend.migrate_send(uuid, str(target.get("target", "")))
    except BackendError as e:
        raise failed(state, vm, checked, str(e)) from None
    await api.service("finish", {"vm": new_vm})


async def send_cross_pool(
    state: ServerState,
    ctx: CallContext,
    vm: str,
    checked: Checked,
    vdi_map: Mapping[str, str],
) -> str:
    """Move (or with ``copy``, copy) ``vm`` to the destination; the VM made there."""
    st = state
    rec = st.record("VM", vm)
    tasks = tasks_of(st)
    snapshots = [] if checked.copy else [s for s in rec["snapshots"] if st.store.get("VM", s)]
    for vdi in checked.vm_vdis:
        if st.record("VDI", vdi)["on_boot"] == "reset":
            raise ApiError("VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION", vdi)
    api = checked.api
    try:
        full_map = await complete_vdi_map(st, checked, vm, snapshots, vdi_map)
    except Unreachable as e:
        raise failed(st, vm, checked, f"the destination cannot be reached: {e}") from None
    assert_can_migrate_vdis(st, full_map)
    backend = await domains_of(st).ready()
    live = rec["power_state"] in ("Running", "Paused")
    uuid = rec["uuid"]
    mirrored = _mirrored(st, vm, backend, live)
    paused = False
    new_vm = ""
    try:
        if live and not mirrored and rec["power_state"] == "Running":
            await backend.pause(uuid)  # the disks are copied as the guest left them
            paused = True
        plan = plan_migration(st, vm, snapshots, full_map, checked.vif_map, mirrored)
        tasks.set_progress(ctx, 0.1)
        body = _stream(st, ctx, plan.ova_xml, plan.disks)
        restore = "false" if checked.copy else "true"
        made = await api.service("import", {"restore": restore}, body=body, method="PUT")
        new_vm = str(made["vm"]) if isinstance(made, dict) else ""
        if not new_vm:
            raise failed(st, vm, checked, "the destination made no VM")
        tasks.set_progress(ctx, 0.7)
        await _send_images(st, api, [vm, *snapshots], made.get("uuids", {}), backend)
        if live:
            await _move_guest(st, checked, vm, new_vm, backend)
    except BaseException as e:
        await _undo(st, checked, vm, new_vm, backend, live, paused)
        if isinstance(e, Unreachable):
            raise failed(st, vm, checked, f"the destination went away: {e}") from None
        if isinstance(e, BackendError):
            raise failed(st, vm, checked, str(e)) from None
        raise
    tasks.set_progress(ctx, 0.9)
    if live:
        with contextlib.suppress(BackendError):
            await backend.hard_shutdown(uuid)
        domains_of(st).record_halted(vm)
        await detach_vm_vifs(st, vm)
    with contextlib.suppress(ApiError, Unreachable):
        await api.service("complete", {"vm": new_vm})
    if not checked.copy:
        await _remove_source(st, ctx, [vm, *snapshots])
    await st.store.sync()
    return new_vm


async def _send_images(
    state: ServerState,
    api: RemoteApi,
    vms: list[str],
    uuids: Mapping[str, str],
    backend: DomainBackend,
) -> None:
    """Memory images the backend keeps aside from their VDIs go after them."""
    for vm in vms:
        rec = state.record("VM", vm)
        target = uuids.get(rec["uuid"]) if isinstance(uuids, dict) else None
        if rec["power_state"] != "Suspended" or not target:
            continue
        data = await backend.read_image(await suspend_image(state, rec["suspend_VDI"]))
        if data is not None:
            await api.service("image", {"vm": str(target)}, body=data, method="PUT")


async def _undo(
    state: ServerState,
    checked: Checked,
    vm: str,
    new_vm: str,
    backend: DomainBackend,
    live: bool,
    paused: bool,
) -> None:
    """The destination's side goes; the guest here runs on as before."""
    if new_vm:
        try:
            await checked.api.service("abort", {"vm": new_vm})
        except (ApiError, Unreachable) as e:
            log.warning("migration of %s: the destination kept %s: %s", vm, new_vm, e)
    if live:
        uuid = state.record("VM", vm)["uuid"]
        info = await backend.info(uuid)
        was_running = state.record("VM", vm)["power_state"] == "Running"
        if info is not None and info.state == "paused" and (paused or was_running):
            with contextlib.suppress(BackendError):
                await backend.unpause(uuid)


async def _remove_source(state: ServerState, ctx: CallContext, vms: list[str]) -> None:
    """The VMs that moved, here: their copied disks, devices and records."""
    st = state
    storage = storage_of(st)
    g = st.extras["generic"]
    disks = streamed_vdis(st, vms)
    for vm in vms:
        rec = st.store.get("VM", vm)
        if rec is None:
            continue
        for vif in list(rec["VIFs"]):
            destroy_vif_record(st, vif)
        for vbd in list(rec["VBDs"]):
            storage.destroy_vbd_record(vbd)
    for vdi in disks:
        if st.store.get("VDI", vdi) is not None:
            try:
                await delete_vdi(storage, ctx, vdi)
            except ApiError as e:
                log.warning("migration: the disk %s stays here: %s", vdi, e.description())
    for vm in reversed(vms):
        rec = st.store.get("VM", vm)
        if rec is None:
            continue
        for field, cls in (("metrics", "VM_metrics"), ("guest_metrics", "VM_guest_metrics")):
            if rec[field] != NULL_REF and st.store.get(cls, rec[field]) is not None:
                g.destroy_object(st, cls, rec[field])
        g.destroy_object(st, "VM", vm)
