"""VM.migrate_send within this one-host pool: the reference's storage motion on one host.

Disks the VDI map sends to another SR are copied there, the VM's drives (and those of its
snapshots, whose disks follow the disk they are a snapshot of) are pointed at the copies
and the originals go; a running VM then moves, live, to a new domain on this host, as
VM.pool_migrate does. ``copy`` is refused, as in the reference. Backends whose running
domains hold their disks open (QEMU) cannot have those disks change SR under them here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from openxapi.api.context import CallContext
from openxapi.api.handlers.vdi import _copy_to_new, delete_vdi
from openxapi.api.handlers.vif import refresh_vm_vifs
from openxapi.api.migrate_checks import Checked
from openxapi.api.state import ServerState
from openxapi.api.storage_access import storage_of
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError
from openxapi.xenops.backend import BackendError

COPY_REFUSED = (
    "Copy mode is disallowed on intra pool storage migration, try efficient alternatives, "
    "for example, VM.copy/clone."
)


def _moves(state: ServerState, vm: str, vdi_map: Mapping[str, str]) -> dict[str, str]:
    """Disk -> new SR for every disk of the VM and its snapshots that changes SR."""
    st = state
    rec = st.record("VM", vm)
    out = {v: s for v, s in vdi_map.items() if st.record("VDI", v)["SR"] != s}
    for snap in rec["snapshots"]:
        srec = st.store.get("VM", snap)
        for vbd in srec["VBDs"] if srec is not None else []:
            vrec = st.store.get("VBD", vbd)
            if vrec is None or vrec["empty"] or vrec["type"] == "CD":
                continue
            vdi = st.record("VDI", vrec["VDI"])
            target = vdi_map.get(vdi["snapshot_of"])
            if target is not None and target != vdi["SR"]:
                out[vrec["VDI"]] = target
    return out


async def _move_disks(
    state: ServerState, ctx: CallContext, vm: str, moves: Mapping[str, str]
) -> None:
    """Copy each disk to its new SR, re-point its drives, drop the original; a failure
    leaves the originals in place."""
    st = state
    storage = storage_of(st)
    rec = st.record("VM", vm)
    vbds = list(rec["VBDs"])
    for snap in rec["snapshots"]:
        srec = st.store.get("VM", snap)
        vbds += srec["VBDs"] if srec is not None else []
    copies: dict[str, str] = {}
    try:
        for vdi, sr in moves.items():
            # the guest is paused (or halted): its disks may be read while attached
            copies[vdi] = await _copy_to_new(storage, ctx, vdi, sr)
    except BaseException:
        for new in copies.values():
            with contextlib.suppress(ApiError):
                await delete_vdi(storage, ctx, new)
        raise
    for vbd in vbds:
        vrec = st.store.get("VBD", vbd)
        if vrec is not None and vrec["VDI"] in copies:
            storage.put("VBD", vbd, VDI=copies[vrec["VDI"]])
    for old in copies:
        with contextlib.suppress(ApiError):
            await delete_vdi(storage, ctx, old)


async def send_intra_pool(
    state: ServerState,
    ctx: CallContext,
    vm: str,
    checked: Checked,
    vdi_map: Mapping[str, str],
) -> str:
    st = state
    if checked.copy:
        raise ApiError("OPERATION_NOT_ALLOWED", COPY_REFUSED)
    domains = domains_of(st)
    backend = await domains.ready()
    rec = st.record("VM", vm)
    live = rec["power_state"] == "Running"
    moves = _moves(st, vm, vdi_map)
    if live and moves and backend.migration_copies_disks():
        raise ApiError(
            "VM_MIGRATE_FAILED",
            vm,
            st.host_ref,
            checked.remote.host,
            f"the {backend.name} backend cannot move a running VM's disks between SRs",
        )
    if live and not backend.capabilities.get("live_migrate"):
        raise ApiError("OPERATION_NOT_ALLOWED", f"the {backend.name} backend cannot migrate VMs")
    if moves:
        paused = False
        try:
            if live:
                await backend.pause(rec["uuid"])
                paused = True
            await _move_disks(st, ctx, vm, moves)
        finally:
            if paused:
                with contextlib.suppress(BackendError):
                    await backend.unpause(rec["uuid"])
    if live:
        try:
            info = await backend.migrate_local(rec["uuid"])
        except BackendError as e:
            raise ApiError(
                "VM_MIGRATE_FAILED", vm, st.host_ref, checked.remote.host, str(e)
            ) from None
        domains.record_running(vm, info)
    storage_of(st).refresh_vm(vm)
    refresh_vm_vifs(st, vm)
    await st.store.sync()
    return vm
