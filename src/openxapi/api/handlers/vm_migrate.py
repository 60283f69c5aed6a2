"""VM migration: VM.pool_migrate within this one-host pool, VM.assert_can_migrate and
VM.migrate_send to this host or to another pool.

VM.pool_migrate is the reference's localhost migration: the guest moves, live, to a new
instance of its domain on the same host (a new domid, its memory and devices carried over);
VM.restart_device_models is built on it. VM.migrate_send takes the dest map of the
destination's host.migrate_receive: to this host it is storage motion plus a localhost
migration (:mod:`openxapi.api.migrate_intra`), to another pool the VM, its snapshots, disks
and running guest move there (:mod:`openxapi.api.migrate_send`).
"""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.handlers.vif import refresh_vm_vifs
from openxapi.api.migrate_checks import assert_can_migrate as check_migration
from openxapi.api.migrate_intra import send_intra_pool
from openxapi.api.migrate_send import send_cross_pool
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.storage_access import storage_of
from openxapi.api.tasks import tasks_of
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError
from openxapi.xenops.backend import BackendError

#: Migrations with storage a host runs at once (the reference's limit).
MAX_MIGRATIONS = 3
RUNNING_KEY = "migrate_send_running"


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


@handler("VM.assert_can_migrate")
async def assert_can_migrate(
    state: ServerState,
    ctx: CallContext,
    vm: str,
    dest: dict[str, str],
    live: bool,
    vdi_map: dict[str, str],
    vif_map: dict[str, str],
    options: dict[str, str],
    vgpu_map: dict[str, str] | None = None,
) -> Any:
    await check_migration(state, vm, dest, vdi_map, vif_map, options)
    return ""


@handler("VM.migrate_send")
async def migrate_send(
    state: ServerState,
    ctx: CallContext,
    vm: str,
    dest: dict[str, str],
    live: bool,
    vdi_map: dict[str, str],
    vif_map: dict[str, str],
    options: dict[str, str],
    vgpu_map: dict[str, str] | None = None,
    vdi_format_map: dict[str, str] | None = None,
) -> Any:
    """Checked as the operation ``migrate_send`` (power state, templates, snapshots,
    devices), then as VM.assert_can_migrate; returns the VM at the destination."""
    domains = domains_of(state)
    await domains.ready()
    async with domains.operation(vm, "migrate_send", ctx):
        checked = await check_migration(state, vm, dest, vdi_map, vif_map, options)
        running = int(state.extras.get(RUNNING_KEY, 0))
        if running >= MAX_MIGRATIONS:
            raise ApiError("TOO_MANY_STORAGE_MIGRATES", str(MAX_MIGRATIONS))
        state.extras[RUNNING_KEY] = running + 1
        try:
            tasks_of(state).set_progress(ctx, 0.05)
            if checked.intra_pool:
                result = await send_intra_pool(state, ctx, vm, checked, vdi_map)
            else:
                result = await send_cross_pool(state, ctx, vm, checked, vdi_map)
        finally:
            state.extras[RUNNING_KEY] = int(state.extras.get(RUNNING_KEY, 1)) - 1
        tasks_of(state).set_progress(ctx, 1.0)
    await state.store.sync()
    return result
