"""VM.sysprep: hand an unattend.xml to Windows sysprep in a running guest.

As the reference: the guest agent must advertise ``feature-sysprep`` (Windows guests
with their drivers), the answer file is at most 32 KiB, it travels on an ISO 9660 CD
(``unattend.xml`` in the root) kept in the host's "SYSPREP-<hostname>-<hash>" ISO SR and
inserted into the VM's empty CD drive; the agent is told to run sysprep and the call
waits up to ``timeout`` seconds for the guest to power off, then ejects the CD and
removes the ISO. Failures are SYSPREP [vm uuid; reason] with the reference's reasons.
The guest powering off is then handled as any guest shutdown (actions_after_shutdown).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import time
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.handlers import sr as sr_handlers
from openxapi.api.handlers.vbd import eject, insert
from openxapi.api.handlers.vif import detach_vm_vifs, refresh_vm_vifs
from openxapi.api.handlers.vm_power import boot_domain, ocaml_float
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.storage_access import storage_of
from openxapi.api.tasks import tasks_of
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError
from openxapi.storage.iso import IsoDriver
from openxapi.storage.iso9660 import build
from openxapi.xenops.backend import BackendError, ShutdownTimeout

log = logging.getLogger("openxapi.sysprep")

MAX_UNATTEND = 32 * 1024
ISO_SR_SIZE = 512 << 20
NOT_RUNNING = "VM is not running"
TOO_LARGE = "unattend.xml file too large"
NO_FEATURE = "VM driver does not support sysprep"
NO_CD = "CD-ROM drive not found"
INSERT_FAILED = "VM failed to insert CD"
EJECT_FAILED = "VM failed to eject CD"
TIMED_OUT = "No response from sysprep within allocated time"


def _fail(uuid: str, reason: str) -> ApiError:
    return ApiError("SYSPREP", uuid, reason)


def sr_name(state: ServerState) -> str:
    """The ISO SR's name: unique to the host, and unlikely to be a user's."""
    host = state.store.get("host", state.host_ref)
    hostname = str(host["hostname"]) if host is not None else socket.gethostname()
    digest = hashlib.md5(hostname.encode(), usedforsecurity=False).hexdigest()
    return f"SYSPREP-{hostname}-{digest[:4]}"


async def _iso_sr(state: ServerState, ctx: CallContext) -> str:
    label = sr_name(state)
    for ref in state.store.refs_by_name_label("SR", label):
        if state.record("SR", ref)["type"] == "iso":
            return ref
    sr = await sr_handlers.create(
        state, ctx, state.host_ref, {}, ISO_SR_SIZE, label, "Sysprep ISOs", "iso", "iso",
        False, {},
    )  # fmt: skip
    return str(sr)


def _empty_cd(state: ServerState, vm: str) -> str | None:
    for vbd in state.record("VM", vm)["VBDs"]:
        rec = state.store.get("VBD", vbd)
        if rec is not None and rec["type"] == "CD" and rec["empty"]:
            return str(vbd)
    return None


async def _make_iso(state: ServerState, ctx: CallContext, vm_uuid: str, unattend: str) -> str:
    """The answer-file ISO as a VDI of the sysprep SR."""
    storage = storage_of(state)
    sr = await _iso_sr(state, ctx)
    drv = await storage.driver(sr)
    if not isinstance(drv, IsoDriver):
        raise ApiError("INTERNAL_ERROR", f"SR {sr} is not an ISO library")
    name = f"sysprep-{vm_uuid}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.iso"
    image = build({"unattend.xml": unattend.encode()}, "SYSPREP")
    await asyncio.to_thread((drv.root / name).write_bytes, image)
    await sr_handlers.scan_sr(storage, sr, ctx)
    for vdi in state.record("SR", sr)["VDIs"]:
        rec = state.store.get("VDI", vdi)
        if rec is not None and rec["location"] == name:
            return str(vdi)
    raise ApiError("INTERNAL_ERROR", f"the sysprep ISO {name} did not appear in SR {sr}")


async def _remove_iso(state: ServerState, ctx: CallContext, vdi: str) -> None:
    rec = state.store.get("VDI", vdi)
    if rec is None:
        return
    storage = storage_of(state)
    drv = await storage.driver(rec["SR"])
    if isinstance(drv, IsoDriver):
        await asyncio.to_thread((drv.root / rec["location"]).unlink, True)
        await sr_handlers.scan_sr(storage, rec["SR"], ctx)


async def _guest_gone(state: ServerState, vm: str) -> None:
    """The guest powered off: what the VM's actions_after_shutdown says happens next."""
    domains = domains_of(state)
    if state.record("VM", vm)["actions_after_shutdown"] == "restart":
        await boot_domain(state, vm, paused=False)
        return
    domains.record_halted(vm)
    await detach_vm_vifs(state, vm)
    storage_of(state).refresh_vm(vm)
    refresh_vm_vifs(state, vm)


async def _run(
    state: ServerState, ctx: CallContext, vm: str, uuid: str, timeout: float, unattend: str
) -> None:
    backend = await domains_of(state).ready()
    info = await backend.info(uuid)
    if info is None or info.domid <= 0:
        raise _fail(uuid, NOT_RUNNING)
    if info.guest is None or info.guest.other.get("feature-sysprep") != "1":
        raise _fail(uuid, NO_FEATURE)
    vbd = _empty_cd(state, vm)
    if vbd is None:
        raise _fail(uuid, NO_CD)
    iso = await _make_iso(state, ctx, uuid, unattend)
    try:
        try:
            await insert(state, ctx, vbd, iso)
        except ApiError as e:
            log.info("sysprep of %s: inserting the CD failed: %s", uuid, e.description())
            raise _fail(uuid, INSERT_FAILED) from None
        timed_out = False
        try:
            await tasks_of(state).interruptible(ctx, backend.sysprep(uuid, timeout))
        except ShutdownTimeout:
            timed_out = True
        except BackendError as e:
            raise _fail(uuid, str(e)) from None
        if not timed_out:
            await _guest_gone(state, vm)
        try:
            await eject(state, ctx, vbd)
        except ApiError as e:
            log.info("sysprep of %s: ejecting the CD failed: %s", uuid, e.description())
            raise _fail(uuid, EJECT_FAILED) from None
        if timed_out:
            raise _fail(uuid, TIMED_OUT)
    finally:
        await _remove_iso(state, ctx, iso)


@handler("VM.sysprep")
async def sysprep(
    state: ServerState, ctx: CallContext, self: str, unattend: str, timeout: float
) -> Any:
    rec = state.record("VM", self)
    uuid = rec["uuid"]
    async with domains_of(state).operation(self, "sysprep", ctx):
        if timeout < 0:
            raise ApiError("INVALID_VALUE", "timeout", ocaml_float(timeout))
        if len(unattend.encode()) > MAX_UNATTEND:
            raise _fail(uuid, TOO_LARGE)
        await _run(state, ctx, self, uuid, timeout, unattend)
    await state.store.sync()
    return ""
