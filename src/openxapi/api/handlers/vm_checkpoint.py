"""VM.checkpoint and VM.revert: snapshots with the memory image, and going back to one.

A checkpoint of a running VM saves its memory to a suspend image, snapshots the disks while
the guest is stopped, gives the snapshot its own copy of the image (the snapshot is then
Suspended) and resumes the VM, which stays Running throughout as far as its record shows.
A suspended VM's checkpoint snapshots its suspend image; a paused VM's is a plain snapshot.

Revert, as in the reference, is destructive and cannot be cancelled: the VM is shut down if
needed, takes the snapshot's settings, loses the disks that were snapshotted (and its suspend
image), gets clones of the snapshot's disks, VIFs and suspend image, and ends in the
snapshot's power state with the snapshot as its parent. On failure it is left Halted and the
error is VM_REVERT_FAILED [snapshot, vm].
"""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.generic import Generic
from openxapi.api.handlers.vbd import create_vbd
from openxapi.api.handlers.vdi import create_vdi, delete_vdi, fork_vdi
from openxapi.api.handlers.vif import create_vif, destroy_vif_record
from openxapi.api.handlers.vm_clone import copy_suspend_image, undo_made
from openxapi.api.handlers.vm_power import (
    _backend_error,
    _halt,
    _plugged_nics,
    _suspend_sr,
    domain_spec,
    suspend_image,
)
from openxapi.api.handlers.vm_snapshot import (
    SNAPSHOT_VBD_FIELDS,
    SNAPSHOT_VIF_FIELDS,
    adopt_snapshot,
    take_snapshot,
)
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.storage_access import storage_of
from openxapi.api.tasks import tasks_of
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError
from openxapi.spec import types
from openxapi.spec.model import NULL_REF
from openxapi.xenops.backend import BackendError

# VM fields revert leaves alone: identity, live state, relations and the snapshot's own marks.
_NOT_REVERTED = frozenset(
    {
        "uuid",
        "suspend_VDI",
        "power_state",
        "parent",
        "current_operations",
        "allowed_operations",
        "metrics",
        "guest_metrics",
        "resident_on",
        "domid",
        "protection_policy",
        "snapshot_schedule",
        "scheduled_to_be_resident_on",
        "tags",
        "affinity",
        "groups",
        "attached_PCIs",
        "is_snapshot_from_vmpp",
        "name_label",
        "is_a_snapshot",
        "is_a_template",
        "is_default_template",
        "snapshot_of",
        "snapshot_time",
        "snapshot_info",
        "snapshot_metadata",
        "transportable_snapshot_id",
        "ha_always_run",
    }
)
# Errors revert passes on as they are; every other failure becomes VM_REVERT_FAILED.
_PASSED_ON = frozenset({"SR_BACKEND_FAILURE_44", "SR_BACKEND_FAILURE_109", "VDI_INCOMPATIBLE_TYPE"})


async def _assert_disks_snapshottable(state: ServerState, vm: str) -> None:
    """A live checkpoint needs every disk's SR to snapshot natively."""
    storage = storage_of(state)
    for vbd in state.record("VM", vm)["VBDs"]:
        rec = state.store.get("VBD", vbd)
        if rec is None or rec["type"] == "CD" or rec["empty"]:
            continue
        vdi = state.store.get("VDI", rec["VDI"])
        if vdi is not None and not (await storage.driver(vdi["SR"])).has("VDI_SNAPSHOT"):
            raise ApiError("SR_OPERATION_NOT_SUPPORTED", vm)


async def _save_memory(state: ServerState, ctx: CallContext, vm: str) -> str:
    """Write the running guest's memory to a new suspend VDI; the domain is stopped."""
    backend = await domains_of(state).ready()
    storage = storage_of(state)
    rec = state.record("VM", vm)
    size = int(rec["memory_static_max"])
    values = {
        "name_label": "Suspend image",
        "name_description": "Suspend image",
        "type": "suspend",
        "other_config": {},
    }
    vdi = await create_vdi(storage, ctx, _suspend_sr(state, rec), size, values)
    try:
        await backend.suspend(rec["uuid"], await suspend_image(state, vdi))
    except BaseException as e:
        await delete_vdi(storage, ctx, vdi)
        if isinstance(e, BackendError):
            raise _backend_error(vm, e) from None
        raise
    return vdi


async def _resume_from(state: ServerState, ctx: CallContext, vm: str, image: str) -> None:
    """Bring the checkpointed guest back from ``image``, which is then deleted."""
    domains = domains_of(state)
    backend = await domains.ready()
    nics = await _plugged_nics(state, vm)
    try:
        info = await backend.resume(
            await domain_spec(state, vm, nics), await suspend_image(state, image)
        )
    except BackendError as e:
        raise _backend_error(vm, e) from None
    finally:
        await delete_vdi(storage_of(state), CallContext(), image)
    domains.record_running(vm, info)


@handler("VM.checkpoint")
async def checkpoint(state: ServerState, ctx: CallContext, vm: str, new_name: str) -> Any:
    domains = domains_of(state)
    await domains.ready()
    made: list[tuple[str, str]] = []
    async with domains.operation(vm, "checkpoint", ctx) as rec:
        power = rec["power_state"]
        saved = NULL_REF
        if power == "Running":
            await _assert_disks_snapshottable(state, vm)
            saved = await _save_memory(state, ctx, vm)
        try:
            try:
                snap = await take_snapshot(state, ctx, vm, new_name, set(), made)
                source = saved if power == "Running" else rec["suspend_VDI"]
                if power in ("Running", "Suspended") and state.store.get("VDI", source):
                    image = await fork_vdi(storage_of(state), ctx, source, "snapshot")
                    made.append(("VDI", image))
                    await copy_suspend_image(state, source, image)
                    state.store.update(
                        "VM", snap, {"power_state": "Suspended", "suspend_VDI": image}
                    )
            finally:
                if saved != NULL_REF:
                    await _resume_from(state, ctx, vm, saved)
        except BaseException:
            await undo_made(state, made)
            await state.store.sync()
            raise
        adopt_snapshot(state, vm, snap)
        storage_of(state).refresh_vm(vm)
    await state.store.sync()
    return snap


@handler("VM.revert")
async def revert(state: ServerState, ctx: CallContext, snapshot: str) -> Any:
    domains = domains_of(state)
    await domains.ready()
    srec = state.record("VM", snapshot)
    vm = srec["snapshot_of"]
    async with domains.operation(snapshot, "revert", ctx):
        if vm == NULL_REF or state.store.get("VM", vm) is None:
            raise ApiError("VM_REVERT_FAILED", snapshot, vm)
        async with domains.operation(vm, "reverting", ctx):
            try:
                if state.record("VM", vm)["power_state"] != "Halted":
                    await _halt(state, ctx, vm)
                await _revert(state, ctx, snapshot, vm)
            except BaseException as e:
                if state.store.get("VM", vm) is not None:
                    domains.record_halted(vm)
                    domains.refresh(vm)
                await state.store.sync()
                if isinstance(e, ApiError) and e.code in _PASSED_ON:
                    raise
                if isinstance(e, Exception):
                    raise ApiError("VM_REVERT_FAILED", snapshot, vm) from e
                raise
    domains.refresh(vm)
    storage_of(state).refresh_vm(vm)
    await state.store.sync()
    return ""


def _revert_fields(state: ServerState, snapshot: str, vm: str) -> None:
    cls = state.cls("VM")
    srec = state.record("VM", snapshot)
    values: dict[str, Any] = {}
    for f in cls.fields:
        t = f.type.elem if isinstance(f.type, types.Set) else f.type
        if f.name in _NOT_REVERTED or isinstance(t, types.Ref):
            continue
        values[f.name] = srec[f.name]
    values["ha_always_run"] = False
    state.store.update("VM", vm, values)


async def _revert(state: ServerState, ctx: CallContext, snapshot: str, vm: str) -> None:
    storage = storage_of(state)
    tasks = tasks_of(state)
    _revert_fields(state, snapshot, vm)
    tasks.set_progress(ctx, 0.1)
    snap_vbds = [
        r for v in state.record("VM", snapshot)["VBDs"] if (r := state.store.get("VBD", v))
    ]
    snap_disks = [r for r in snap_vbds if r["type"] == "Disk" and not r["empty"]]
    snapshot_of = {state.record("VDI", r["VDI"])["snapshot_of"] for r in snap_disks}
    vrec = state.record("VM", vm)
    doomed_vdis = []
    for vbd in list(vrec["VBDs"]):
        r = state.store.get("VBD", vbd)
        if r is None:
            continue
        if r["type"] == "Disk" and r["VDI"] in snapshot_of:
            doomed_vdis.append(r["VDI"])
        storage.destroy_vbd_record(vbd)
    if vrec["suspend_VDI"] != NULL_REF:
        doomed_vdis.append(vrec["suspend_VDI"])
        state.store.update("VM", vm, {"suspend_VDI": NULL_REF})
    for vdi in doomed_vdis:
        if state.store.get("VDI", vdi) is not None:
            await delete_vdi(storage, ctx, vdi)
    tasks.set_progress(ctx, 0.2)
    made: list[tuple[str, str]] = []
    try:
        for r in snap_vbds:
            target = r["VDI"]
            if r["type"] != "CD" and not r["empty"]:
                old = state.record("VDI", target)["snapshot_of"]
                target = await fork_vdi(storage, ctx, r["VDI"], "clone")
                made.append(("VDI", target))
                if old != NULL_REF:
                    _repoint_snapshots(state, old, target)
            values = {k: r[k] for k in SNAPSHOT_VBD_FIELDS}
            values.update(VM=vm, VDI=target, device="", empty=bool(r["empty"]))
            values["currently_attached"] = False
            made.append(("VBD", create_vbd(storage, values)))
        tasks.set_progress(ctx, 0.6)
        image = state.record("VM", snapshot)["suspend_VDI"]
        if image != NULL_REF and state.store.get("VDI", image) is not None:
            clone = await fork_vdi(storage, ctx, image, "clone")
            made.append(("VDI", clone))
            await copy_suspend_image(state, image, clone)
            state.store.update("VM", vm, {"suspend_VDI": clone})
        for vif in list(state.record("VM", vm)["VIFs"]):
            destroy_vif_record(state, vif)
        for vif in state.record("VM", snapshot)["VIFs"]:
            vif_rec = state.store.get("VIF", vif)
            if vif_rec is not None:
                values = {k: vif_rec[k] for k in SNAPSHOT_VIF_FIELDS}
                made.append(("VIF", create_vif(state, {**values, "VM": vm})))
    except BaseException:
        await undo_made(state, made)
        raise
    tasks.set_progress(ctx, 0.9)
    _revert_metrics(state, snapshot, vm)
    old_parent = state.record("VM", vm)["parent"]
    if old_parent != snapshot:
        if old_parent != NULL_REF:
            Generic._unlink(state, "VM", "children", old_parent, vm)
        state.store.update("VM", vm, {"parent": snapshot})
        Generic._link(state, "VM", "children", snapshot, vm)
    if state.record("VM", snapshot)["power_state"] == "Suspended":
        domains_of(state).record_suspended(vm, state.record("VM", vm)["suspend_VDI"])
    else:
        domains_of(state).record_halted(vm)
    tasks.set_progress(ctx, 1.0)


def _repoint_snapshots(state: ServerState, old: str, new: str) -> None:
    """Snapshots of the disk revert replaced now belong to its clone."""
    for ref, rec in list(state.store.table("VDI").items()):
        if rec["snapshot_of"] == old:
            Generic._unlink(state, "VDI", "snapshots", old, ref)
            state.store.update("VDI", ref, {"snapshot_of": new})
            Generic._link(state, "VDI", "snapshots", new, ref)


def _revert_metrics(state: ServerState, snapshot: str, vm: str) -> None:
    """The VM's metrics become a copy of the snapshot's; its guest metrics go."""
    g = domains_of(state).generic
    vrec, srec = state.record("VM", vm), state.record("VM", snapshot)
    gm = vrec["guest_metrics"]
    if gm != NULL_REF and state.store.get("VM_guest_metrics", gm) is not None:
        g.destroy_object(state, "VM_guest_metrics", gm)
        state.store.update("VM", vm, {"guest_metrics": NULL_REF})
    smetrics = state.store.get("VM_metrics", srec["metrics"])
    if smetrics is None:
        return
    fresh = {k: v for k, v in smetrics.items() if k not in ("uuid",)}
    old = vrec["metrics"]
    new = state.create("VM_metrics", fresh)
    state.store.update("VM", vm, {"metrics": new})
    if old != NULL_REF and state.store.get("VM_metrics", old) is not None:
        g.destroy_object(state, "VM_metrics", old)
