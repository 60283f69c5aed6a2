"""VM: construction and destruction with the objects a VM owns."""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.generic import Generic
from openxapi.api.handlers.vif import destroy_vif_record
from openxapi.api.registry import handler
from openxapi.api.state import ServerState, new_uuid
from openxapi.api.storage_access import storage_of
from openxapi.api.vm_domains import domains_of
from openxapi.spec.model import NULL_REF
from openxapi.spec.values import now

# Devices and metrics that go with their VM.
OWNED_SETS = ("VBDs", "VIFs", "VTPMs", "VUSBs", "consoles", "crash_dumps")


def _generic(state: ServerState) -> Generic:
    g = state.extras["generic"]
    assert isinstance(g, Generic)
    return g


@handler("VM.create")
async def create(state: ServerState, ctx: CallContext, args: dict[str, Any]) -> Any:
    """As the reference: a VM_metrics object comes with every VM, and domid is -1."""
    ref = _generic(state).create_object(state, state.cls("VM"), args)
    other_config = state.record("VM", ref)["other_config"]
    if "mac_seed" not in other_config:  # what VIFs with an empty MAC derive theirs from
        state.store.update("VM", ref, {"other_config": {**other_config, "mac_seed": new_uuid()}})
    stamp = now()
    metrics = state.create(
        "VM_metrics",
        {"install_time": stamp, "last_updated": stamp, "start_time": stamp},
    )
    changes: dict[str, Any] = {"metrics": metrics, "domid": -1}
    merged = {**state.record("VM", ref), **changes}
    changes["allowed_operations"] = domains_of(state).allowed(merged, ref)
    state.store.update("VM", ref, changes)
    await state.store.sync()
    return ref


@handler("VM.destroy")
async def destroy(state: ServerState, ctx: CallContext, self: str) -> Any:
    rec = domains_of(state).check(self, "destroy")  # the lifecycle's checks and errors
    g = _generic(state)
    storage = storage_of(state)
    suspend_vdi = rec["suspend_VDI"]  # the memory image goes with its VM
    if suspend_vdi != NULL_REF and state.store.get("VDI", suspend_vdi) is not None:
        from openxapi.api.handlers.vdi import delete_vdi

        await delete_vdi(storage, ctx, suspend_vdi)
    for vbd in list(rec["VBDs"]):  # with their metrics; their VDIs' operations refreshed
        storage.destroy_vbd_record(vbd)
    for vif in list(rec["VIFs"]):  # with their metrics
        destroy_vif_record(state, vif)
    for field in OWNED_SETS:
        cls = state.cls("VM").field_map[field].type
        owned_cls = getattr(getattr(cls, "elem", None), "cls", "")
        for dev in list(rec[field]):
            if owned_cls and state.store.get(owned_cls, dev) is not None:
                g.destroy_object(state, owned_cls, dev)
    for field, cls_name in (("metrics", "VM_metrics"), ("guest_metrics", "VM_guest_metrics")):
        ref = rec[field]
        if ref != NULL_REF and state.store.get(cls_name, ref) is not None:
            g.destroy_object(state, cls_name, ref)
    _leave_groups(state, self, rec)
    g.destroy_object(state, "VM", self)
    await state.store.sync()
    return ""


def _leave_groups(state: ServerState, vm: str, rec: dict[str, Any]) -> None:
    """VM.groups and VM_group.VMs are kept in step by hand (many to many)."""
    from openxapi.api.handlers.vm_grouping import update_anti_affinity_alert

    for group in rec["groups"]:
        grec = state.store.get("VM_group", group)
        if grec is not None:
            state.store.update("VM_group", group, {"VMs": [v for v in grec["VMs"] if v != vm]})
            update_anti_affinity_alert(state, group)
    if rec["groups"]:
        state.store.update("VM", vm, {"groups": []})
