"""VM VCPU setters with the reference's rules: 0 < VCPUs_at_startup <= VCPUs_max, the
maximum only while halted, the live count only while running (through the backend)."""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError
from openxapi.spec.values import now
from openxapi.xenops.backend import BackendError

_STARTUP_RULE = "VCPU values must satisfy: 0 < VCPUs_at_startup ≤ VCPUs_max"
_LIVE_RULE = "VCPU values must satisfy: 0 < VCPUs ≤ VCPUs_max"


def _is_dom0(rec: dict[str, Any]) -> bool:
    return bool(rec["is_control_domain"]) and rec["domid"] == 0


@handler("VM.set_VCPUs_max")
async def set_VCPUs_max(state: ServerState, ctx: CallContext, self: str, value: int) -> Any:
    """Changing the maximum is the ``changing_VCPUs`` operation (halted VMs only)."""
    domains = domains_of(state)
    async with domains.operation(self, "changing_VCPUs", ctx) as rec:
        if value < 1 or value < int(rec["VCPUs_at_startup"]):
            raise ApiError("INVALID_VALUE", _STARTUP_RULE, str(value))
        changes: dict[str, Any] = {"VCPUs_max": value}
        if rec["is_control_domain"] and rec["power_state"] == "Running":
            changes["requires_reboot"] = True
        state.store.update("VM", self, changes)
    domains.refresh(self)
    await state.store.sync()
    return ""


@handler("VM.set_VCPUs_at_startup")
async def set_VCPUs_at_startup(state: ServerState, ctx: CallContext, self: str, value: int) -> Any:
    """No lifecycle check, as in the reference: only the bounds."""
    rec = state.record("VM", self)
    if _is_dom0(rec):
        raise ApiError("OPERATION_NOT_ALLOWED", "set_VCPUs_at_startup is not allowed on dom0")
    if value < 1 or value > int(rec["VCPUs_max"]):
        raise ApiError("INVALID_VALUE", _STARTUP_RULE, str(value))
    state.store.update("VM", self, {"VCPUs_at_startup": value})
    await state.store.sync()
    return ""


@handler("VM.set_VCPUs_number_live")
async def set_VCPUs_number_live(state: ServerState, ctx: CallContext, self: str, nvcpu: int) -> Any:
    """Hot-plug vCPUs of a running VM; VCPUs_at_startup and VM_metrics follow."""
    domains = domains_of(state)
    backend = await domains.ready()
    async with domains.operation(self, "changing_VCPUs_live", ctx) as rec:
        if nvcpu < 1 or nvcpu > int(rec["VCPUs_max"]):
            raise ApiError("INVALID_VALUE", _LIVE_RULE, str(nvcpu))
        try:
            await backend.set_vcpus(rec["uuid"], nvcpu)
        except BackendError as e:
            raise ApiError("OPERATION_NOT_ALLOWED", str(e)) from None
        state.store.update("VM", self, {"VCPUs_at_startup": nvcpu})
        metrics = rec["metrics"]
        if state.store.get("VM_metrics", metrics) is not None:
            state.store.update(
                "VM_metrics", metrics, {"VCPUs_number": nvcpu, "last_updated": now()}
            )
    await state.store.sync()
    return ""
