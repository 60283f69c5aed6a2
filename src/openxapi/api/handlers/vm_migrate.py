"""VM.pool_migrate within this one-host pool: the reference's localhost migration.

The guest moves, live, to a new instance of its domain on the same host (a new domid, its
memory and devices carried over); VM.restart_device_models is built on it. Migration to
other hosts or pools (migrate_send) needs a second host and is not offered.
"""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.handlers.vif import refresh_vm_vifs
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.storage_access import storage_of
from openxapi.api.tasks import tasks_of
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError
from openxapi.xenops.backend import BackendError


@handler("VM.pool_migrate")
async def pool_migrate(
    state: ServerState, ctx: CallContext, vm: str, host: str, options: dict[str, str]
) -> Any:
    state.record("host", host)
    domains = domains_of(state)
    backend = await domains.ready()
    tasks = tasks_of(state)
    async with domains.operation(vm, "pool_migrate", ctx) as rec:
        if not backend.capabilities.get("live_migrate"):
            raise ApiError(
                "OPERATION_NOT_ALLOWED", f"the {backend.name} backend cannot migrate VMs"
            )
        tasks.set_progress(ctx, 0.1)
        try:
            info = await backend.migrate_local(rec["uuid"])
        except BackendError as e:
            raise ApiError("VM_MIGRATE_FAILED", vm, state.host_ref, host, str(e)) from None
        domains.record_running(vm, info)
        storage_of(state).refresh_vm(vm)
        refresh_vm_vifs(state, vm)
        tasks.set_progress(ctx, 1.0)
    await state.store.sync()
    return ""
