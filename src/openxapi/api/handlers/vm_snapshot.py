"""VM.snapshot: a halted template-like copy of a VM, its disks snapshotted by the storage layer.

As in the reference the snapshot is a template (``is_a_template`` and ``is_a_snapshot``), names
its VM in ``snapshot_of`` (which lists it in ``snapshots``), records ``snapshot_time``, keeps
the VIFs' MACs, and becomes the VM's ``parent``. CDs are shared, not snapshotted; disks in
``ignore_vdis`` are left out. On failure everything made so far is removed. The steps are
shared with VM.checkpoint, which adds the memory image.
"""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.generic import Generic
from openxapi.api.handlers.vbd import create_vbd
from openxapi.api.handlers.vdi import fork_vdi
from openxapi.api.handlers.vif import create_vif
from openxapi.api.handlers.vm_clone import undo_made
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.storage_access import storage_of
from openxapi.api.tasks import tasks_of
from openxapi.api.vm_domains import domains_of
from openxapi.spec.model import NULL_REF
from openxapi.spec.values import now

# Device fields a snapshot (and a revert from one) carries over.
SNAPSHOT_VBD_FIELDS = (
    "userdevice",
    "bootable",
    "mode",
    "type",
    "unpluggable",
    "other_config",
    "qos_algorithm_type",
    "qos_algorithm_params",
)
SNAPSHOT_VIF_FIELDS = (
    "device",
    "network",
    "MAC",
    "MTU",
    "other_config",
    "qos_algorithm_type",
    "qos_algorithm_params",
)


def _generic(state: ServerState) -> Generic:
    g = state.extras["generic"]
    assert isinstance(g, Generic)
    return g


def _snapshot_record(state: ServerState, src: dict[str, Any], name: str) -> dict[str, Any]:
    cls = state.cls("VM")
    args = {f.name: src[f.name] for f in cls.fields if f.in_constructor}
    args.update(
        name_label=name,
        is_a_template=True,
        power_state="Halted",
        suspend_VDI=NULL_REF,
        other_config=dict(src["other_config"]),
    )
    return args


async def take_snapshot(
    state: ServerState,
    ctx: CallContext,
    vm: str,
    new_name: str,
    ignore_vdis: set[str],
    made: list[tuple[str, str]],
) -> str:
    """Make the snapshot record of ``vm`` with its disks' snapshots and its VIFs; what is
    made is appended to ``made`` so the caller can undo it."""
    tasks = tasks_of(state)
    g = _generic(state)
    src = state.record("VM", vm)
    snap = g.create_object(state, state.cls("VM"), _snapshot_record(state, src, new_name))
    made.append(("VM", snap))
    stamp = now()
    metrics = state.create(
        "VM_metrics", {"install_time": stamp, "last_updated": stamp, "start_time": stamp}
    )
    made.append(("VM_metrics", metrics))
    state.store.update(
        "VM",
        snap,
        {
            "is_a_snapshot": True,
            "snapshot_of": vm,
            "snapshot_time": stamp,
            "snapshot_info": {
                "disk-snapshot-type": "crash_consistent",
                "power-state-at-snapshot": src["power_state"],
            },
            "metrics": metrics,
            "domid": -1,
            "bios_strings": src["bios_strings"],
        },
    )
    Generic._link(state, "VM", "snapshots", vm, snap)
    vbds = [v for v in src["VBDs"] if state.store.get("VBD", v) is not None]
    for i, vbd in enumerate(vbds, start=1):
        made += await _snapshot_vbd(state, ctx, vbd, snap, ignore_vdis)
        tasks.set_progress(ctx, i / (len(vbds) + 1))
        await tasks.checkpoint(ctx)
    for vif in src["VIFs"]:
        vrec = state.store.get("VIF", vif)
        if vrec is not None:
            values = {k: vrec[k] for k in SNAPSHOT_VIF_FIELDS}
            made.append(("VIF", create_vif(state, {**values, "VM": snap})))
    return snap


def adopt_snapshot(state: ServerState, vm: str, snap: str) -> None:
    """The snapshot becomes the VM's parent; both records' operations are refreshed."""
    old_parent = state.record("VM", vm)["parent"]
    if old_parent != NULL_REF:
        Generic._unlink(state, "VM", "children", old_parent, vm)
    state.store.update("VM", vm, {"parent": snap})
    Generic._link(state, "VM", "children", snap, vm)
    domains_of(state).refresh(snap)
    storage_of(state).refresh_vm(snap)


@handler("VM.snapshot")
async def snapshot(
    state: ServerState, ctx: CallContext, vm: str, new_name: str, ignore_vdis: list[str]
) -> Any:
    domains = domains_of(state)
    made: list[tuple[str, str]] = []
    async with domains.operation(vm, "snapshot", ctx):
        try:
            snap = await take_snapshot(state, ctx, vm, new_name, set(ignore_vdis), made)
        except BaseException:
            await undo_made(state, made)
            await state.store.sync()
            raise
        adopt_snapshot(state, vm, snap)
    await state.store.sync()
    return snap


async def _snapshot_vbd(
    state: ServerState, ctx: CallContext, vbd: str, snap: str, ignore: set[str]
) -> list[tuple[str, str]]:
    storage = storage_of(state)
    rec = state.record("VBD", vbd)
    vdi = rec["VDI"]
    if vdi in ignore and rec["type"] != "CD":
        return []
    made: list[tuple[str, str]] = []
    target = vdi
    if rec["type"] != "CD" and not rec["empty"]:
        target = await fork_vdi(storage, ctx, vdi, "snapshot")
        made.append(("VDI", target))
    values = {k: rec[k] for k in SNAPSHOT_VBD_FIELDS}
    values.update(
        VM=snap,
        VDI=target,
        device="",
        empty=bool(rec["empty"]),
        currently_attached=False,
    )
    made.append(("VBD", create_vbd(storage, values)))
    return made
