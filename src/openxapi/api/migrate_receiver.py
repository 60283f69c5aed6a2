"""The destination's side of a cross-pool migration, as its migration service runs it.

``check`` is the reference's dry-run import (may this VM come here?); ``receive`` makes
the VM's objects and disks from the sender's stream; for a running VM ``incoming`` builds
a paused domain waiting for the sender's hypervisor, ``finish`` runs it once the guest
is in and ``complete`` takes over what the sender's domain held. ``abort`` removes
everything a migration that failed made here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.handlers.vif import detach_vm_vifs
from openxapi.api.handlers.vm_power import (
    _after_power_change,
    _plugged_nics,
    domain_spec,
    suspend_image,
)
from openxapi.api.migrate_import import (
    MigrationImport,
    drop_incoming,
    forget_incoming,
    keep_incoming,
)
from openxapi.api.state import ServerState
from openxapi.api.vm_domains import domains_of
from openxapi.api.vm_import import import_xva
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF
from openxapi.storage.xva_format import ByteSource, XvaReader
from openxapi.xenops.backend import BackendError, InsufficientResources

log = logging.getLogger("openxapi.migrate")


def _failed(state: ServerState, vm: str, why: str) -> ApiError:
    rec = state.store.get("VM", vm) or {}
    return ApiError("VM_MIGRATE_FAILED", rec.get("uuid", vm), "", state.host_ref, why)


async def _free_memory(state: ServerState) -> int:
    backend = await domains_of(state).ready()
    return (await backend.host_capacity()).memory_free


async def check(state: ServerState, doc: Mapping[str, Any]) -> None:
    """The dry run, in the import's order: the disks' SRs, the VM (a halted, older VM of
    the same uuid may be replaced; a live VM needs the memory), the VIFs' networks."""
    st = state
    for sr in doc.get("srs", []):
        if st.store.get("SR", str(sr)) is None:
            raise ApiError("HANDLE_INVALID", "SR", str(sr))
    uuid = str(doc.get("uuid", ""))
    old = st.store.ref_of_uuid("VM", uuid) if doc.get("restore") else None
    if old is not None:
        orec = st.record("VM", old)
        version = int(doc.get("version", 0))
        if orec["power_state"] != "Halted":
            raise ApiError("VM_BAD_POWER_STATE", old, "halted", str(orec["power_state"]).lower())
        if orec["version"] >= version:
            raise ApiError(
                "VM_TO_IMPORT_IS_NOT_NEWER_VERSION", old, str(orec["version"]), str(version)
            )
    if doc.get("live") and doc.get("power_state") in ("Running", "Paused"):
        needed = int(doc.get("memory", 0))
        free = await _free_memory(st)
        if needed > free:
            raise ApiError("HOST_NOT_ENOUGH_FREE_MEMORY", str(needed), str(free))
    for net in doc.get("networks", []):
        if st.store.get("network", str(net)) is None:
            raise ApiError("HANDLE_INVALID", "network", str(net))


async def receive(state: ServerState, source: ByteSource, restore: bool) -> dict[str, Any]:
    """Import the sender's stream: {"vm": the VM, "vms": it and its snapshots}."""
    job = MigrationImport(state, CallContext(), restore=restore)
    reader = XvaReader(source)
    try:
        plain = await import_xva(job, reader)
    finally:
        await reader.close()
    vm = plain[0]
    keep_incoming(state, vm, job.made)
    return {"vm": vm, "vms": list(job.vms), "uuids": job.by_uuid}


async def image(state: ServerState, vm: str, data: bytes) -> None:
    """The memory image of a suspended VM (or checkpoint) the sender's backend kept aside
    from its VDI."""
    rec = state.record("VM", vm)
    vdi = rec["suspend_VDI"]
    if rec["power_state"] != "Suspended" or state.store.get("VDI", vdi) is None:
        raise ApiError("VM_HAS_NO_SUSPEND_VDI", vm)
    backend = await domains_of(state).ready()
    try:
        await backend.write_image(rec["uuid"], await suspend_image(state, vdi), data)
    except BackendError as e:
        raise _failed(state, vm, str(e)) from None


async def incoming(state: ServerState, vm: str) -> dict[str, str]:
    """A paused domain for ``vm`` waiting for the sender's hypervisor: where it listens."""
    domains = domains_of(state)
    backend = await domains.ready()
    rec = state.record("VM", vm)
    if not backend.capabilities.get("live_migrate"):
        raise _failed(state, vm, f"the {backend.name} backend cannot receive VMs")
    needed = int(rec["memory_dynamic_max"])
    free = (await backend.host_capacity()).memory_free
    if needed > free:
        raise ApiError("HOST_NOT_ENOUGH_FREE_MEMORY", str(needed), str(free))
    state.store.update("VM", vm, {"scheduled_to_be_resident_on": state.host_ref})
    try:
        nics = await _plugged_nics(state, vm)
        try:
            target = await backend.migrate_receive(await domain_spec(state, vm, nics))
        except BackendError as e:
            await detach_vm_vifs(state, vm)
            if isinstance(e, InsufficientResources):
                raise ApiError("HOST_NOT_ENOUGH_FREE_MEMORY", str(needed), str(free)) from None
            raise _failed(state, vm, str(e)) from None
    except BaseException:
        if state.store.get("VM", vm) is not None:
            state.store.update("VM", vm, {"scheduled_to_be_resident_on": NULL_REF})
        raise
    return {"backend": backend.name, "target": target}


async def finish(state: ServerState, vm: str) -> int:
    """The guest is in: run it here. Returns its domid."""
    domains = domains_of(state)
    backend = await domains.ready()
    rec = state.record("VM", vm)
    try:
        info = await backend.migrate_finish(rec["uuid"])
    except BackendError as e:
        raise _failed(state, vm, str(e)) from None
    domains.record_running(vm, info)
    domains.set_devices_attached(vm, True)
    _after_power_change(state, vm)
    await state.store.sync()
    return info.domid


async def complete(state: ServerState, vm: str) -> None:
    """The sender's side is gone: the VM stays here for good."""
    state.record("VM", vm)
    forget_incoming(state, vm)
    backend = await domains_of(state).ready()
    try:
        await backend.migrate_complete(state.record("VM", vm)["uuid"])
    except BackendError as e:
        log.warning("migration of %s: %s", vm, e)


async def abort(state: ServerState, vm: str) -> None:
    """Undo a migration that failed: its domain, the VM and all its import made."""
    rec = state.store.get("VM", vm)
    if rec is None:
        return
    domains = domains_of(state)
    backend = await domains.ready()
    with contextlib.suppress(BackendError):
        await backend.migrate_abort(rec["uuid"])
    if rec["power_state"] != "Halted" or rec["resident_on"] != NULL_REF:
        domains.record_halted(vm)
    with contextlib.suppress(ApiError):
        await detach_vm_vifs(state, vm)
    if state.store.get("VM", vm) is not None:
        state.store.update("VM", vm, {"scheduled_to_be_resident_on": NULL_REF})
    await drop_incoming(state, vm)
    await state.store.sync()
