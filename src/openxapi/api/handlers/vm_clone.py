"""VM.clone and VM.copy of a halted VM without disks: a long operation done in steps.

The new VM is a top-level copy (no parent) with its own VM_metrics, a fresh MAC seed and a
copy of every VIF (MACs derived anew, as the reference does for clones). Each step ends at a
task checkpoint, so progress shows through events and a cancellation stops the copy there;
on any failure, cancellation included, everything made so far is removed again. Disks are
the storage layer's: a VM with VBDs is refused.
"""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.generic import Generic
from openxapi.api.registry import handler
from openxapi.api.state import ServerState, new_uuid
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
    if rec["power_state"] != "Halted":
        raise ApiError("VM_BAD_POWER_STATE", vm, "halted", rec["power_state"].lower())
    if rec["VBDs"]:
        raise ApiError(
            "OPERATION_NOT_ALLOWED", "Copying a VM with disks is not supported by this server"
        )
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


async def copy_vm(state: ServerState, ctx: CallContext, vm: str, new_name: str) -> str:
    """Copy ``vm`` step by step; on failure or cancellation nothing of the copy remains."""
    src = _check_source(state, vm)
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
        }
        state.store.update("VM", ref, copied)
        vifs = [v for v in src["VIFs"] if state.store.get("VIF", v) is not None]
        steps = len(vifs) + 1
        tasks.set_progress(ctx, 1 / steps)
        await tasks.checkpoint(ctx)
        for i, vif in enumerate(vifs, start=2):
            made += _copy_vif(state, vif, ref)
            tasks.set_progress(ctx, i / steps)
            await tasks.checkpoint(ctx)
    except BaseException:
        _undo(state, g, made)
        await state.store.sync()
        raise
    domains_of(state).refresh(ref)
    return ref


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


def _undo(state: ServerState, g: Generic, made: list[tuple[str, str]]) -> None:
    for cls, ref in reversed(made):
        if state.store.get(cls, ref) is not None:
            g.destroy_object(state, cls, ref)


@handler("VM.clone")
async def clone(state: ServerState, ctx: CallContext, vm: str, new_name: str) -> Any:
    return await copy_vm(state, ctx, vm, new_name)


@handler("VM.copy")
async def copy(state: ServerState, ctx: CallContext, vm: str, new_name: str, sr: str) -> Any:
    """Without disks there is nothing to place on ``sr``; an SR given must exist."""
    if sr != NULL_REF:
        state.record("SR", sr)
    return await copy_vm(state, ctx, vm, new_name)
