"""Disaster-recovery checks: which of a VM's SRs the database behind ``session_to`` lacks.

The reference looks the VM's SRs up by uuid in the database ``session_to`` reads — a
foreign one opened with VDI.open_database, or else its own. This server has one database,
so both messages answer against it: an SR is missing when no PBD of it is plugged.
"""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.errors import ApiError


def required_srs(state: ServerState, vm: str) -> list[str]:
    """The SRs of the VM's non-CD disks (ISO SRs left out), in ref order as the reference."""
    rec = state.record("VM", vm)
    srs = set()
    for vbd in rec["VBDs"]:
        vrec = state.record("VBD", vbd)
        if vrec["type"] == "CD":
            continue
        sr = state.record("VDI", vrec["VDI"])["SR"]
        if state.record("SR", sr)["content_type"] != "iso":
            srs.add(sr)
    return sorted(srs)


def _plugged(state: ServerState, sr: str) -> bool:
    rec = state.store.get("SR", sr)
    if rec is None:
        return False
    return any(
        (p := state.store.get("PBD", pbd)) is not None and p["currently_attached"]
        for pbd in rec["PBDs"]
    )


@handler("VM.get_SRs_required_for_recovery")
async def get_SRs_required_for_recovery(
    state: ServerState, ctx: CallContext, self: str, session_to: str
) -> Any:
    return [sr for sr in required_srs(state, self) if not _plugged(state, sr)]


@handler("VM.assert_can_be_recovered")
async def assert_can_be_recovered(
    state: ServerState, ctx: CallContext, self: str, session_to: str
) -> Any:
    """VM_REQUIRES_SR [vm; sr] for the first required SR with no plugged PBD."""
    for sr in required_srs(state, self):
        if not _plugged(state, sr):
            raise ApiError("VM_REQUIRES_SR", self, sr)
    return ""
