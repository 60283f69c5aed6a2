"""VM.clone and VM.copy: a long operation done in steps, disks through the storage layer.

The new VM is a top-level copy (no parent) with its own VM_metrics, a fresh MAC seed and a
copy of every VIF (MACs derived anew, as the reference does for clones). Disks are cloned
(VDI.clone semantics) or, for copy, copied to the SR given (or each disk's own SR); CDs are
shared and empty drives stay empty. A suspended source (a checkpoint) gives a suspended VM
with its own copy of the suspend image. Each step ends at a task checkpoint, so progress
shows through events and a cancellation stops the copy there; on any failure, cancellation
included, everything made so far is removed again.
"""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.generic import Generic
from openxapi.api.registry import handler
from openxapi.api.state import ServerState, new_uuid
from openxapi.api.storage_access import storage_of
from openxapi.api.tasks import tasks_of
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF
from openxapi.spec.values import now

# Dropped from other_config on copy (the reference's default-template and internal keys).
_DROPPED_KEYS = ("default_template", "xensource_internal", "mac_seed")
# Constructor fields the reference resets on a copy.
_RESET = {
    "power_state": "Halted",
    "suspend_VDI": NULL_REF,
    "protection_policy": NULL_REF,
    "is_snapshot_from_vmpp": False,
    "is_vmss_snapshot": False,
    "snapshot_schedule": NULL_REF,
    "appliance": NULL_REF,
    "start_delay": 0,
    "shutdown_delay": 0,
    "order": 0,
    "suspend_SR": NULL_REF,
    "version": 0,
    "ha_always_run": False,
}
_VBD_COPIED = (
    "device",
    "userdevice",
    "bootable",
    "mode",
    "type",
    "unpluggable",
    "currently_attached",
    "qos_algorithm_type",
    "qos_algorithm_params",
)
_VIF_COPIED = (
    "device",
    "network",
    "MTU",
    "other_config",
    "qos_algorithm_type",
    "qos_algorithm_params",
    "locking_mode",
    "ipv4_allowed",
    "ipv6_allowed",
)


def _generic(state: ServerState) -> Generic:
    g = state.extras["generic"]
    assert isinstance(g, Generic)
    return g


def _check_source(state: ServerState, vm: str) -> dict[str, Any]:
    rec = state.record("VM", vm)
    if rec["is_control_domain"]:
        raise ApiError("OPERATION_NOT_ALLOWED", "This operation is not allowed on dom0")
    return rec


def _record_copy(state: ServerState, src: dict[str, Any], new_name: str) -> dict[str, Any]:
    cls = state.cls("VM")
    args = {f.name: src[f.name] for f in cls.fields if f.in_constructor}
    args.update(_RESET)
    args["name_label"] = new_name
    other = {k: v for k, v in src["other_config"].items() if k not in _DROPPED_KEYS}
    if src["is_a_template"] and "base_template_name" not in other:
        other["base_template_name"] = src["name_label"]
    other["mac_seed"] = new_uuid()
    args["other_config"] = other
    args["generation_id"] = ""
    return args


async def copy_vm(
    state: ServerState, ctx: CallContext, vm: str, new_name: str, sr: str | None = None
) -> str:
    """Copy ``vm`` step by step (disks cloned, or copied to ``sr`` when given); on failure or
    cancellation nothing of the copy remains."""
    _check_source(state, vm)
    domains = domains_of(state)
    op = "clone" if sr is None else "copy"
    async with domains.operation(vm, op, ctx) as src:
        ref = await _copy_steps(state, ctx, src, new_name, sr)
    domains.refresh(ref)
    storage_of(state).refresh_vm(ref)
    await state.store.sync()
    return ref


async def _copy_steps(
    state: ServerState, ctx: CallContext, src: dict[str, Any], new_name: str, sr: str | None
) -> str:
    tasks = tasks_of(state)
    g = _generic(state)
    made: list[tuple[str, str]] = []  # (class, ref) in creation order
    try:
        ref = g.create_object(state, state.cls("VM"), _record_copy(state, src, new_name))
        made.append(("VM", ref))
        stamp = now()
        metrics = state.create(
            "VM_metrics", {"install_time": stamp, "last_updated": stamp, "start_time": stamp}
        )
        made.append(("VM_metrics", metrics))
        copied = {
            "metrics": metrics,
            "domid": -1,
            "memory_overhead": src["memory_overhead"],
            "bios_strings": src["bios_strings"],
            "power_state": "Suspended" if src["power_state"] == "Suspended" else "Halted",
        }
        state.store.update("VM", ref, copied)
        vbds = [v for v in src["VBDs"] if state.store.get("VBD", v) is not None]
        vifs = [v for v in src["VIFs"] if state.store.get("VIF", v) is not None]
        steps = len(vbds) + len(vifs) + 2
        done = 1
        tasks.set_progress(ctx, done / steps)
        await tasks.checkpoint(ctx)
        for vbd in vbds:
            made += await _copy_vbd(state, ctx, vbd, ref, sr)
            done += 1
            tasks.set_progress(ctx, done / steps)
            await tasks.checkpoint(ctx)
        for vif in vifs:
            made += _copy_vif(state, vif, ref)
            done += 1
            tasks.set_progress(ctx, done / steps)
            await tasks.checkpoint(ctx)
        suspend_vdi = src["suspend_VDI"]
        if src["power_state"] == "Suspended" and state.store.get("VDI", suspend_vdi) is not None:
            image = await _copy_disk(state, ctx, suspend_vdi, sr)
            made.append(("VDI", image))
            await copy_suspend_image(state, suspend_vdi, image)
            state.store.update("VM", ref, {"suspend_VDI": image})
            await tasks.checkpoint(ctx)
    except BaseException:
        await undo_made(state, made)
        await state.store.sync()
        raise
    return ref


async def copy_suspend_image(state: ServerState, src: str, dst: str) -> None:
    """Tell the backend that suspend VDI ``dst`` was copied from ``src`` by the storage."""
    backend = await domains_of(state).ready()
    from openxapi.api.handlers.vm_power import suspend_image

    await backend.copy_image(await suspend_image(state, src), await suspend_image(state, dst))


async def _copy_disk(state: ServerState, ctx: CallContext, vdi: str, sr: str | None) -> str:
    from openxapi.api.handlers.vdi import copy_vdi, fork_vdi

    storage = storage_of(state)
    if sr is None:
        return await fork_vdi(storage, ctx, vdi, "clone")
    return await copy_vdi(storage, ctx, vdi, sr)


async def _copy_vbd(
    state: ServerState, ctx: CallContext, vbd: str, vm: str, sr: str | None
) -> list[tuple[str, str]]:
    """The reference's rule: empty drives stay empty, CDs are shared, disks are copied and
    owned by the new VM (``owner`` in the VBD's other_config)."""
    from openxapi.api.handlers.vbd import create_vbd

    rec = state.record("VBD", vbd)
    made: list[tuple[str, str]] = []
    target = rec["VDI"]
    other = dict(rec["other_config"])
    if not rec["empty"] and rec["type"] != "CD":
        target = await _copy_disk(state, ctx, rec["VDI"], sr)
        made.append(("VDI", target))
        if rec["type"] == "Disk":
            other.setdefault("owner", "")
    values = {k: rec[k] for k in _VBD_COPIED}
    values.update(VM=vm, VDI=target, other_config=other, empty=bool(rec["empty"]))
    made.append(("VBD", create_vbd(storage_of(state), values)))
    return made


def _copy_vif(state: ServerState, vif: str, vm: str) -> list[tuple[str, str]]:
    from openxapi.api.handlers.vif import create_vif

    rec = state.record("VIF", vif)
    values = {k: rec[k] for k in _VIF_COPIED if k in rec}
    values.update({"VM": vm, "MAC": ""})
    ref = create_vif(state, values)
    out = [("VIF", ref)]
    created = state.store.get("VIF", ref)
    if created is not None and created["metrics"] != NULL_REF:
        out.insert(0, ("VIF_metrics", created["metrics"]))
    return out


async def undo_made(state: ServerState, made: list[tuple[str, str]]) -> None:
    """Remove what a failed copy, snapshot or checkpoint made, newest first."""
    from openxapi.api.handlers.vdi import delete_vdi

    storage = storage_of(state)
    g = _generic(state)
    for cls, ref in reversed(made):
        if state.store.get(cls, ref) is None:
            continue
        if cls == "VDI":
            await delete_vdi(storage, CallContext(), ref)
        elif cls == "VBD":
            storage.destroy_vbd_record(ref)
        elif cls == "VIF":
            from openxapi.api.handlers.vif import destroy_vif_record

            destroy_vif_record(state, ref)
        else:
            g.destroy_object(state, cls, ref)


@handler("VM.clone")
async def clone(state: ServerState, ctx: CallContext, vm: str, new_name: str) -> Any:
    return await copy_vm(state, ctx, vm, new_name)


@handler("VM.copy")
async def copy(state: ServerState, ctx: CallContext, vm: str, new_name: str, sr: str) -> Any:
    """As the reference: an SR that does not exist means each disk's own SR, an ISO SR is
    refused, and a copy of a suspended snapshot ends up halted."""
    target = state.store.get("SR", sr) if sr != NULL_REF else None
    if target is not None and target["content_type"] == "iso":
        raise ApiError("OPERATION_NOT_ALLOWED", "Cannot copy a VM's disks to an ISO SR")
    ref = await copy_vm(state, ctx, vm, new_name, sr if target is not None else NULL_REF)
    rec = state.record("VM", ref)
    if state.record("VM", vm)["is_a_snapshot"] and rec["power_state"] != "Halted":
        await _drop_image(state, ctx, ref)
    return ref


async def _drop_image(state: ServerState, ctx: CallContext, vm: str) -> None:
    """A suspended copy is shut down: its suspend image goes, the VM is Halted."""
    from openxapi.api.handlers.vdi import delete_vdi

    image = state.record("VM", vm)["suspend_VDI"]
    if image != NULL_REF and state.store.get("VDI", image) is not None:
        await delete_vdi(storage_of(state), ctx, image)
    state.store.update("VM", vm, {"suspend_VDI": NULL_REF})
    domains = domains_of(state)
    domains.record_halted(vm)
    domains.refresh(vm)
    await state.store.sync()
