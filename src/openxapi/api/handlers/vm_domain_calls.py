"""Calls on a VM's live domain whose answer the reference fixes: the boot record, the
guest's services, VCPU parameters applied live, and restarting the device models.

Each runs its lifecycle operation first, so the power-state, template and concurrency
errors are the reference's; query_services and add_to_VCPUs_params_live then answer
NOT_IMPLEMENTED as the reference itself does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import handler, handlers
from openxapi.api.state import ServerState
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError


@handler("VM.get_boot_record")
async def get_boot_record(state: ServerState, ctx: CallContext, self: str) -> Any:
    """The VM's record as it stands during the get_boot_record operation (deprecated)."""
    domains = domains_of(state)
    async with domains.operation(self, "get_boot_record", ctx) as rec:
        record = dict(rec)
    await state.store.sync()
    return record


@handler("VM.query_services")
async def query_services(state: ServerState, ctx: CallContext, self: str) -> Any:
    async with domains_of(state).operation(self, "query_services", ctx):
        pass
    await state.store.sync()
    raise ApiError("NOT_IMPLEMENTED", "query_services")


@handler("VM.add_to_VCPUs_params_live")
async def add_to_VCPUs_params_live(
    state: ServerState, ctx: CallContext, self: str, key: str, value: str
) -> Any:
    async with domains_of(state).operation(self, "changing_VCPUs_live", ctx):
        pass
    await state.store.sync()
    raise ApiError("NOT_IMPLEMENTED", "add_to_VCPUs_params_live")


@handler("VM.restart_device_models")
async def restart_device_models(state: ServerState, ctx: CallContext, self: str) -> Any:
    """A running VM only; the restart is a live VM.pool_migrate to the host it runs on,
    exactly as the reference performs it (with that message's checks and errors)."""
    rec = state.record("VM", self)
    if rec["power_state"] != "Running":
        raise ApiError("VM_BAD_POWER_STATE", self, "Running", rec["power_state"])
    migrate = handlers().get("VM.pool_migrate")
    if migrate is None:
        raise ApiError("NOT_IMPLEMENTED", "VM.pool_migrate")
    inner = dataclasses.replace(ctx, wire_name="VM.pool_migrate")
    await migrate(state, inner, self, rec["resident_on"], {"live": "true"})
    return ""
