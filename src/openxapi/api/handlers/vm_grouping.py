"""Collections a VM belongs to: its appliance, its VM groups and its snapshot schedule.

Only ordinary VMs join them (not control domains, templates or snapshots). Joining or
leaving an appliance recomputes the appliance's allowed operations; a change of groups
re-evaluates the anti-affinity alert of each anti-affinity group involved, as the
reference does.
"""

from __future__ import annotations

import re
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.handlers.pool_features import assert_feature_enabled, feature_enabled
from openxapi.api.messages import destroy as destroy_message
from openxapi.api.messages import raise_alert
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF

APPLIANCE_OPERATIONS = ("start", "clean_shutdown", "hard_shutdown", "shutdown")
ANTI_AFFINITY_ALERT = "ALL_RUNNING_VMS_IN_ANTI_AFFINITY_GRP_ON_SINGLE_HOST"
ANTI_AFFINITY_PRIORITY = 3


def _ordinary(rec: dict[str, Any]) -> bool:
    return not (rec["is_control_domain"] or rec["is_a_template"] or rec["is_a_snapshot"])


# ---- appliances -------------------------------------------------------------------------
def appliance_operation_error(state: ServerState, appliance: str, op: str) -> ApiError | None:
    """Why ``op`` cannot run on the appliance now (the reference's appliance lifecycle)."""
    rec = state.record("VM_appliance", appliance)
    current = rec["current_operations"]
    if current:
        task, running = next(iter(current.items()))
        return ApiError("OTHER_OPERATION_IN_PROGRESS", "VM_appliance", appliance, running, task)
    states = [
        vm["power_state"] for ref in rec["VMs"] if (vm := state.store.get("VM", ref)) is not None
    ]
    if not states:
        return ApiError("OPERATION_NOT_ALLOWED", "Appliance has no VMs.")
    if op == "start":
        ok, why = "Halted" in states, "There are no halted VMs in this appliance."
    elif op == "clean_shutdown":
        ok, why = "Running" in states, "There are no running VMs in this appliance."
    else:
        ok = any(s != "Halted" for s in states)
        why = "All VMs in this appliance are halted."
    return None if ok else ApiError("OPERATION_NOT_ALLOWED", why)


def refresh_appliance(state: ServerState, appliance: str) -> None:
    """Recompute an appliance's allowed_operations (nothing for a missing appliance)."""
    rec = state.store.get("VM_appliance", appliance)
    if rec is None:
        return
    ops = [
        op for op in APPLIANCE_OPERATIONS if appliance_operation_error(state, appliance, op) is None
    ]
    if ops != rec["allowed_operations"]:
        state.store.update("VM_appliance", appliance, {"allowed_operations": ops})


@handler("VM.set_appliance")
async def set_appliance(state: ServerState, ctx: CallContext, self: str, value: str) -> Any:
    rec = state.record("VM", self)
    if not _ordinary(rec):
        raise ApiError(
            "OPERATION_NOT_ALLOWED",
            "Control domains, templates and snapshots cannot be assigned to appliances.",
        )
    previous = rec["appliance"]
    domains = domains_of(state)
    domains.generic.set_field(state, "VM", self, rec, "appliance", value)
    refresh_appliance(state, previous)
    domains.refresh(self)
    refresh_appliance(state, value)
    await state.store.sync()
    return ""


# ---- VM groups --------------------------------------------------------------------------
def _breach_host(state: ServerState, group: str) -> str | None:
    """The host running every running VM of the group, when there are two or more."""
    hosts = []
    for vm in state.record("VM_group", group)["VMs"]:
        rec = state.store.get("VM", vm)
        if rec is not None and rec["power_state"] == "Running" and rec["resident_on"] != NULL_REF:
            hosts.append(rec["resident_on"])
    if len(hosts) < 2 or any(h != hosts[0] for h in hosts[1:]):
        return None
    return str(hosts[0])


def _body_field(body: str, tag: str) -> str | None:
    found = re.findall(f"<{tag}>([^<]*)</{tag}>", body)
    return found[0] if len(found) == 1 else None


def _group_alerts(state: ServerState, group_uuid: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (ref, m)
        for ref, m in state.store.table("message").items()
        if m["name"] == ANTI_AFFINITY_ALERT and _body_field(m["body"], "VM_group") == group_uuid
    ]


def update_anti_affinity_alert(state: ServerState, group: str) -> None:
    """Raise the alert when all running VMs of an anti-affinity group share one host;
    dismiss stale alerts otherwise (or when they name another host)."""
    grec = state.store.get("VM_group", group)
    if grec is None or grec["placement"] != "anti_affinity":
        return
    host = _breach_host(state, group)
    alerts = _group_alerts(state, grec["uuid"])
    host_uuid = state.record("host", host)["uuid"] if host is not None else ""
    if host is not None and any(_body_field(m["body"], "host") == host_uuid for _, m in alerts):
        return  # the alert already names the host
    for ref, _ in alerts:
        destroy_message(state, ref)
    if host is None:
        return
    body = (
        "<body><message>Breach on VM anti-affinity rules</message>"
        f"<VM_group>{grec['uuid']}</VM_group><host>{host_uuid}</host></body>"
    )
    pool_uuid = state.record("pool", state.pool_ref)["uuid"]
    raise_alert(state, ANTI_AFFINITY_ALERT, ANTI_AFFINITY_PRIORITY, "Pool", pool_uuid, body)


@handler("VM.set_groups")
async def set_groups(state: ServerState, ctx: CallContext, self: str, value: list[str]) -> Any:
    """At most one group; VM_group.VMs follows."""
    assert_feature_enabled(state, "VM_groups")
    rec = state.record("VM", self)
    if not _ordinary(rec):
        raise ApiError(
            "OPERATION_NOT_ALLOWED",
            "Control domains, templates, and snapshots cannot be added to VM groups.",
        )
    if len(value) > 1:
        raise ApiError("TOO_MANY_GROUPS")
    original = list(rec["groups"])
    for group in original:
        grec = state.store.get("VM_group", group)
        if grec is not None and group not in value:
            state.store.update("VM_group", group, {"VMs": [v for v in grec["VMs"] if v != self]})
    for group in value:
        grec = state.store.get("VM_group", group)
        if grec is not None and self not in grec["VMs"]:
            state.store.update("VM_group", group, {"VMs": [*grec["VMs"], self]})
    state.store.update("VM", self, {"groups": list(value)})
    if feature_enabled(state, "VM_groups"):
        for group in dict.fromkeys([*original, *value]):
            update_anti_affinity_alert(state, group)
    await state.store.sync()
    return ""


# ---- snapshot schedules -----------------------------------------------------------------
def _supports_quiesce(state: ServerState, vm: str, rec: dict[str, Any]) -> None:
    """The reference's check that a VM can take quiesced snapshots."""
    for vbd in rec["VBDs"]:
        vrec = state.store.get("VBD", vbd)
        vdi = state.store.get("VDI", vrec["VDI"]) if vrec is not None else None
        if vdi is not None and vdi["sm_config"].get("on_boot") == "reset":
            raise ApiError("VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION")
    gm = state.store.get("VM_guest_metrics", rec["guest_metrics"])
    other = gm["other"] if gm is not None else {}
    if not any(other.get(f) == "1" for f in ("feature-snapshot", "feature-quiesce")):
        raise ApiError("VM_SNAPSHOT_WITH_QUIESCE_NOT_SUPPORTED", vm)


@handler("VM.set_snapshot_schedule")
async def set_snapshot_schedule(state: ServerState, ctx: CallContext, self: str, value: str) -> Any:
    """A VMSS ref or NULL; the schedule is checked before the VM, as the reference."""
    assert_feature_enabled(state, "VMSS")
    known = state.store.class_of(value) is not None
    if not (known or value in (NULL_REF, "")):
        raise ApiError("INVALID_VALUE", value)
    rec = state.record("VM", self)
    if known and value != NULL_REF:
        if rec["is_control_domain"]:
            raise ApiError("INVALID_VALUE", value)
        if rec["is_a_template"]:
            raise ApiError("VM_IS_TEMPLATE", self)
        if state.record("VMSS", value)["type"] == "snapshot_with_quiesce":
            assert_feature_enabled(state, "VSS")
            _supports_quiesce(state, self, rec)
    domains = domains_of(state)
    domains.generic.set_field(state, "VM", self, rec, "snapshot_schedule", value)
    domains.refresh(self)
    await state.store.sync()
    return ""
