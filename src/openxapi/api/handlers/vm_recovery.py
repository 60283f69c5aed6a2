"""Disaster recovery of VMs and appliances into the database ``session_to`` names.

Called on a database session (VDI.open_database), ``self`` and the SRs it needs are read
from the foreign copy; called on an ordinary session, from this server's own database.
Either way each needed SR is looked up by uuid on this server: an SR is missing when it
is not here or no PBD of it is plugged.
"""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.dr_recover import assert_recoverable, recover_vms, srs_lacking
from openxapi.api.foreign_db import assert_session_allows_dr, home_of, session_to_state
from openxapi.api.handlers.vm_grouping import refresh_appliance
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF


@handler("VM.get_SRs_required_for_recovery")
async def get_SRs_required_for_recovery(
    state: ServerState, ctx: CallContext, self: str, session_to: str
) -> Any:
    state.record("VM", self)
    session_to_state(state, session_to, "VM.get_SRs_required_for_recovery")
    return srs_lacking(state, self)


@handler("VM.assert_can_be_recovered")
async def assert_can_be_recovered(
    state: ServerState, ctx: CallContext, self: str, session_to: str
) -> Any:
    """VM_REQUIRES_SR [vm; sr] for the first required SR that is missing or unplugged."""
    state.record("VM", self)
    session_to_state(state, session_to, "VM.assert_can_be_recovered")
    assert_recoverable(state, self)
    return ""


@handler("VM.recover")
async def recover(
    state: ServerState, ctx: CallContext, self: str, session_to: str, force: bool
) -> Any:
    """VM_IS_PART_OF_AN_APPLIANCE first (recover the appliance instead), then the DR
    permission of ``session_to``, the SRs, and the import."""
    rec = state.record("VM", self)
    appliance = rec["appliance"]
    if appliance != NULL_REF and state.store.get("VM_appliance", appliance) is not None:
        raise ApiError("VM_IS_PART_OF_AN_APPLIANCE", self, appliance)
    assert_session_allows_dr(state, session_to, "VM.recover")
    assert_recoverable(state, self)
    await recover_vms(state, ctx, [self], force)
    return ""


def _appliance_vms(state: ServerState, appliance: str) -> list[str]:
    return [v for v in state.record("VM_appliance", appliance)["VMs"] if state.store.get("VM", v)]


@handler("VM_appliance.get_SRs_required_for_recovery")
async def appliance_srs_required(
    state: ServerState, ctx: CallContext, self: str, session_to: str
) -> Any:
    vms = _appliance_vms(state, self)
    session_to_state(state, session_to, "VM_appliance.get_SRs_required_for_recovery")
    return sorted({sr for vm in vms for sr in srs_lacking(state, vm)})


@handler("VM_appliance.assert_can_be_recovered")
async def appliance_assert_can_be_recovered(
    state: ServerState, ctx: CallContext, self: str, session_to: str
) -> Any:
    vms = _appliance_vms(state, self)
    session_to_state(state, session_to, "VM_appliance.assert_can_be_recovered")
    for vm in vms:
        assert_recoverable(state, vm)
    return ""


@handler("VM_appliance.recover")
async def appliance_recover(
    state: ServerState, ctx: CallContext, self: str, session_to: str, force: bool
) -> Any:
    """Recover every VM of the appliance, then the appliance (same uuid) holding them."""
    old = state.record("VM_appliance", self)
    vms = _appliance_vms(state, self)
    assert_session_allows_dr(state, session_to, "VM_appliance.recover")
    for vm in vms:
        assert_recoverable(state, vm)
    made = await recover_vms(state, ctx, vms, force)
    home = home_of(state)
    generic = domains_of(home).generic
    here = home.store.ref_of_uuid("VM_appliance", old["uuid"])
    if here is not None:
        for vm in list(home.record("VM_appliance", here)["VMs"]):
            vrec = home.store.get("VM", vm)
            if vrec is not None:
                generic.set_field(home, "VM", vm, vrec, "appliance", NULL_REF)
        home.store.update(
            "VM_appliance",
            here,
            {"name_label": old["name_label"], "name_description": old["name_description"]},
        )
    else:
        here = home.create(
            "VM_appliance",
            {
                "uuid": old["uuid"],
                "name_label": old["name_label"],
                "name_description": old["name_description"],
            },
        )
    for vm in made:
        vrec = home.record("VM", vm)
        if not vrec["is_a_template"]:
            generic.set_field(home, "VM", vm, vrec, "appliance", here)
            domains_of(home).refresh(vm)
    refresh_appliance(home, here)
    await home.store.sync()
    return ""
