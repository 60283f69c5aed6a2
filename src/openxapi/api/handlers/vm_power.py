"""VM power operations: start, stop, reboot, pause, suspend and resume through the backend.

Each operation is checked by the lifecycle rules, listed in current_operations while it
runs, and recorded as the reference does once the backend has acted. A failed operation
leaves the VM as it found it: VIFs plugged for a start are unplugged again, a suspend image
that could not be written is deleted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.handlers.vif import attach_vm_vifs, detach_vm_vifs, refresh_vm_vifs
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.storage_access import storage_of
from openxapi.api.tasks import tasks_of
from openxapi.api.uefi import firmware_spec
from openxapi.api.vm_domains import RUNNING_STATES, domains_of
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF
from openxapi.xenops.backend import (
    BackendError,
    DiskSpec,
    DomainInfo,
    DomainSpec,
    InsufficientResources,
    NicSpec,
    ShutdownTimeout,
    SuspendImage,
)

#: VM.other_config keys passed to the backend as hints (simulated guest behaviour).
HINT_PREFIX = "sim_"
#: One port forward of VIF.other_config["hostfwd"]: host port, then guest port.
FORWARD = re.compile(r"[0-9]{1,5}-:[0-9]{1,5}")


def ocaml_float(value: float) -> str:
    """A float as the reference prints it in error parameters ("1200.", "2.5")."""
    text = repr(float(value))
    return text[:-1] if text.endswith(".0") else text


def _is_hvm(rec: dict[str, Any]) -> bool:
    if rec["domain_type"] in ("hvm", "pv", "pvh", "pv_in_pvh"):
        return bool(rec["domain_type"] == "hvm")
    return bool(rec["HVM_boot_policy"])


async def attach_path(state: ServerState, vdi: dict[str, Any], writable: bool) -> tuple[str, str]:
    """The image file and format a hypervisor opens for a VDI ("" when it has none)."""
    storage = storage_of(state)
    drv = await storage.driver(vdi["SR"])
    try:
        att = await drv.vdi_attach(vdi["location"], writable)
    except Exception as e:  # a driver error names the disk, never a traceback
        raise ApiError("VDI_MISSING", vdi["SR"], vdi["location"]) from e
    return (att.path or "", att.format if att.path else "")


async def suspend_image(state: ServerState, vdi: str, size: int = 0) -> SuspendImage:
    """The backend's view of a suspend VDI: its identity and, when it has one, its file."""
    rec = state.record("VDI", vdi)
    path, fmt = await attach_path(state, rec, True)
    return SuspendImage(rec["uuid"], rec["location"], size or int(rec["virtual_size"]), path, fmt)


def _kernel_path(state: ServerState, ref: str, path: str) -> str:
    """A PV kernel or ramdisk path, allowed only inside the guest image directory."""
    if not path:
        return ""
    allowed = state.config.guest_image_dir.resolve()
    real = Path(path).resolve()
    simulated = domains_of(state).backend.name == "simulator"  # boots no kernel
    if not real.is_relative_to(allowed) or not (simulated or real.is_file()):
        raise ApiError("BOOTLOADER_FAILED", ref, f"{path} is not a kernel file in {allowed}")
    return str(real)


def _forwards(state: ServerState, ref: str) -> dict[str, tuple[str, ...]]:
    """Port forwards per VIF device from VIF.other_config["hostfwd"] ("HOSTPORT-:GUESTPORT",
    comma-separated); bound to 127.0.0.1 by the backend."""
    out: dict[str, tuple[str, ...]] = {}
    for vif in state.record("VM", ref)["VIFs"]:
        rec = state.store.get("VIF", vif)
        if rec is None:
            continue
        spec = rec["other_config"].get("hostfwd", "")
        fwds = tuple(f for f in (x.strip() for x in spec.split(",")) if FORWARD.fullmatch(f))
        if fwds:
            out[rec["device"]] = fwds
    return out


async def domain_spec(state: ServerState, ref: str, nics: list[NicSpec]) -> DomainSpec:
    """The plain description a backend builds the VM's domain from."""
    rec = state.record("VM", ref)
    disks = []
    for vbd in rec["VBDs"]:
        vrec = state.store.get("VBD", vbd)
        if vrec is None:
            continue
        if vrec["empty"]:
            if vrec["type"] == "CD":  # a drive with no medium: media may be inserted later
                disks.append(DiskSpec(userdevice=vrec["userdevice"], location="", cdrom=True))
            continue
        vdi = state.store.get("VDI", vrec["VDI"])
        if vdi is None:
            continue
        path, fmt = await attach_path(state, vdi, vrec["mode"] == "RW")
        disks.append(
            DiskSpec(
                userdevice=vrec["userdevice"],
                location=vdi["location"],
                read_only=vrec["mode"] == "RO",
                cdrom=vrec["type"] == "CD",
                bootable=bool(vrec["bootable"]),
                path=path,
                format=fmt,
            )
        )
    hints = {k: v for k, v in rec["other_config"].items() if k.startswith(HINT_PREFIX)}
    kernel = _kernel_path(state, ref, rec["PV_kernel"])
    return DomainSpec(
        uuid=rec["uuid"],
        name=rec["name_label"],
        memory=int(rec["memory_dynamic_max"]),
        vcpus=int(rec["VCPUs_at_startup"]),
        vcpus_max=int(rec["VCPUs_max"]),
        hvm=_is_hvm(rec),
        boot_order=rec["HVM_boot_params"].get("order", "cd"),
        disks=tuple(disks),
        nics=tuple(nics),
        hints=hints,
        kernel=kernel,
        initrd=_kernel_path(state, ref, rec["PV_ramdisk"]) if kernel else "",
        cmdline=rec["PV_args"] if kernel else "",
        forwards=_forwards(state, ref),
        firmware=firmware_spec(state, ref),
    )


def _check_memory(ref: str, rec: dict[str, Any]) -> None:
    smin, dmin = rec["memory_static_min"], rec["memory_dynamic_min"]
    dmax, smax = rec["memory_dynamic_max"], rec["memory_static_max"]
    if not (0 <= smin <= dmin <= dmax <= smax):
        raise ApiError(
            "MEMORY_CONSTRAINT_VIOLATION",
            "Memory limits must satisfy: static_min <= dynamic_min <= dynamic_max <= static_max",
        )


async def _plugged_nics(state: ServerState, ref: str) -> list[NicSpec]:
    done = await attach_vm_vifs(state, ref)
    out = []
    for vif, attachment in done:
        vrec = state.record("VIF", vif)
        out.append(
            NicSpec(
                vrec["device"],
                attachment.mac,
                int(vrec["MTU"] or 1500),
                attachment.bridge,
                netdev=dict(attachment.netdev),
                netns=attachment.netns,
            )
        )
    return out


def _backend_error(ref: str, e: BackendError, needed: int = 0, free: int = 0) -> ApiError:
    if isinstance(e, InsufficientResources):
        return ApiError("HOST_NOT_ENOUGH_FREE_MEMORY", str(needed), str(free))
    return ApiError("INTERNAL_ERROR", f"domain backend: {e}")


def _after_power_change(state: ServerState, ref: str) -> None:
    storage_of(state).refresh_vm(ref)
    refresh_vm_vifs(state, ref)


async def boot_domain(state: ServerState, ref: str, paused: bool) -> DomainInfo:
    """Plug the VIFs, build and boot the domain, record it; undo the plugging on failure."""
    domains = domains_of(state)
    backend = await domains.ready()
    rec = state.record("VM", ref)
    _check_memory(ref, rec)
    cap = await backend.host_capacity()
    needed = int(rec["memory_dynamic_max"])
    if needed > cap.memory_free:
        raise ApiError("HOST_NOT_ENOUGH_FREE_MEMORY", str(needed), str(cap.memory_free))
    state.store.update("VM", ref, {"scheduled_to_be_resident_on": state.host_ref})
    try:
        nics = await _plugged_nics(state, ref)
        try:
            info = await backend.start(await domain_spec(state, ref, nics), paused=paused)
        except BackendError as e:
            await detach_vm_vifs(state, ref)
            raise _backend_error(ref, e, needed, cap.memory_free) from None
    except BaseException:
        if state.store.get("VM", ref) is not None:
            state.store.update("VM", ref, {"scheduled_to_be_resident_on": NULL_REF})
        raise
    domains.record_running(ref, info)
    domains.set_devices_attached(ref, True)
    _after_power_change(state, ref)
    return info


async def _start(state: ServerState, ctx: CallContext, vm: str, paused: bool, op: str) -> Any:
    tasks = tasks_of(state)
    async with domains_of(state).operation(vm, op, ctx):
        tasks.set_progress(ctx, 0.1)
        await tasks.checkpoint(ctx)
        await boot_domain(state, vm, paused)
        tasks.set_progress(ctx, 1.0)
    await state.store.sync()
    return ""


@handler("VM.start")
async def start(
    state: ServerState, ctx: CallContext, vm: str, start_paused: bool, force: bool
) -> Any:
    return await _start(state, ctx, vm, start_paused, "start")


@handler("VM.start_on")
async def start_on(
    state: ServerState, ctx: CallContext, vm: str, host: str, start_paused: bool, force: bool
) -> Any:
    state.record("host", host)
    return await _start(state, ctx, vm, start_paused, "start_on")


async def _simple(state: ServerState, ctx: CallContext, vm: str, op: str) -> Any:
    domains = domains_of(state)
    backend = await domains.ready()
    async with domains.operation(vm, op, ctx) as rec:
        try:
            if op == "pause":
                info = await backend.pause(rec["uuid"])
            elif op == "unpause":
                info = await backend.unpause(rec["uuid"])
            else:
                info = await backend.hard_reboot(rec["uuid"])
        except BackendError as e:
            raise _backend_error(vm, e) from None
        domains.record_running(vm, info)
        _after_power_change(state, vm)
    await state.store.sync()
    return ""


@handler("VM.pause")
async def pause(state: ServerState, ctx: CallContext, vm: str) -> Any:
    return await _simple(state, ctx, vm, "pause")


@handler("VM.unpause")
async def unpause(state: ServerState, ctx: CallContext, vm: str) -> Any:
    return await _simple(state, ctx, vm, "unpause")


@handler("VM.hard_reboot")
async def hard_reboot(state: ServerState, ctx: CallContext, vm: str) -> Any:
    return await _simple(state, ctx, vm, "hard_reboot")


async def _halt(state: ServerState, ctx: CallContext, vm: str) -> None:
    """Destroy the domain (or the suspend image) and record the VM Halted."""
    domains = domains_of(state)
    backend = await domains.ready()
    rec = state.record("VM", vm)
    if rec["power_state"] == "Suspended":
        await _drop_suspend_image(state, ctx, vm)
    else:
        await backend.hard_shutdown(rec["uuid"])
    domains.record_halted(vm)
    await detach_vm_vifs(state, vm)
    _after_power_change(state, vm)


async def _clean(state: ServerState, ctx: CallContext, vm: str, reboot: bool) -> DomainInfo | None:
    """Ask the guest; VM_SHUTDOWN_TIMEOUT [vm, timeout] leaves it running."""
    backend = await domains_of(state).ready()
    uuid = state.record("VM", vm)["uuid"]
    timeout = float(state.config.vm_shutdown_timeout)
    tasks = tasks_of(state)
    try:
        if reboot:
            return await tasks.interruptible(ctx, backend.clean_reboot(uuid, timeout))
        await tasks.interruptible(ctx, backend.clean_shutdown(uuid, timeout))
    except ShutdownTimeout:
        raise ApiError("VM_SHUTDOWN_TIMEOUT", vm, ocaml_float(timeout)) from None
    except BackendError as e:
        raise _backend_error(vm, e) from None
    return None


@handler("VM.clean_shutdown")
async def clean_shutdown(state: ServerState, ctx: CallContext, vm: str) -> Any:
    async with domains_of(state).operation(vm, "clean_shutdown", ctx, strict=False):
        tasks_of(state).set_progress(ctx, 0.1)
        await _clean(state, ctx, vm, reboot=False)
        await _halt(state, ctx, vm)
    await state.store.sync()
    return ""


@handler("VM.hard_shutdown")
async def hard_shutdown(state: ServerState, ctx: CallContext, vm: str) -> Any:
    async with domains_of(state).operation(vm, "hard_shutdown", ctx):
        await _halt(state, ctx, vm)
    await state.store.sync()
    return ""


@handler("VM.shutdown")
async def shutdown(state: ServerState, ctx: CallContext, vm: str) -> Any:
    """Clean when the guest is running and complies in time, hard otherwise."""
    async with domains_of(state).operation(vm, "shutdown", ctx) as rec:
        if rec["power_state"] == "Running":
            try:
                await _clean(state, ctx, vm, reboot=False)
            except ApiError as e:
                if e.code != "VM_SHUTDOWN_TIMEOUT":
                    raise
        await _halt(state, ctx, vm)
    await state.store.sync()
    return ""


@handler("VM.clean_reboot")
async def clean_reboot(state: ServerState, ctx: CallContext, vm: str) -> Any:
    domains = domains_of(state)
    async with domains.operation(vm, "clean_reboot", ctx, strict=False):
        info = await _clean(state, ctx, vm, reboot=True)
        assert info is not None
        domains.record_running(vm, info)
        _after_power_change(state, vm)
    await state.store.sync()
    return ""


def _suspend_sr(state: ServerState, rec: dict[str, Any]) -> str:
    """Where a suspend image goes: the VM's suspend_SR, else the pool's, else the default SR."""
    pool = state.record("pool", state.pool_ref)
    host = state.record("host", state.host_ref)
    for sr in (
        rec["suspend_SR"],
        pool["suspend_image_SR"],
        host["suspend_image_sr"],
        pool["default_SR"],
    ):
        if sr != NULL_REF and state.store.get("SR", sr) is not None:
            return str(sr)
    raise ApiError("VM_NO_SUSPEND_SR", rec["uuid"])


async def _drop_suspend_image(state: ServerState, ctx: CallContext, vm: str) -> None:
    from openxapi.api.handlers.vdi import delete_vdi

    vdi = state.record("VM", vm)["suspend_VDI"]
    if vdi != NULL_REF and state.store.get("VDI", vdi) is not None:
        await delete_vdi(storage_of(state), ctx, vdi)
    state.store.update("VM", vm, {"suspend_VDI": NULL_REF})


@handler("VM.suspend")
async def suspend(state: ServerState, ctx: CallContext, vm: str) -> Any:
    """Write the memory image to a new suspend VDI, then stop the domain."""
    from openxapi.api.handlers.vdi import create_vdi, delete_vdi

    domains = domains_of(state)
    backend = await domains.ready()
    tasks = tasks_of(state)
    storage = storage_of(state)
    async with domains.operation(vm, "suspend", ctx) as rec:
        sr = _suspend_sr(state, rec)
        size = int(rec["memory_static_max"])
        vdi = await create_vdi(
            storage,
            ctx,
            sr,
            size,
            {
                "name_label": "Suspend image",
                "name_description": "Suspend image",
                "type": "suspend",
                "other_config": {},
            },
        )
        tasks.set_progress(ctx, 0.3)
        image = await suspend_image(state, vdi, size)
        try:
            await tasks.interruptible(ctx, backend.suspend(rec["uuid"], image))
        except BaseException as e:
            await delete_vdi(storage, ctx, vdi)
            if isinstance(e, BackendError):
                raise _backend_error(vm, e) from None
            raise
        domains.record_suspended(vm, vdi)
        await detach_vm_vifs(state, vm)
        _after_power_change(state, vm)
    await state.store.sync()
    return ""


async def _resume(state: ServerState, ctx: CallContext, vm: str, paused: bool, op: str) -> Any:
    domains = domains_of(state)
    backend = await domains.ready()
    async with domains.operation(vm, op, ctx) as rec:
        vdi = rec["suspend_VDI"]
        vrec = state.store.get("VDI", vdi) if vdi != NULL_REF else None
        if vrec is None:
            raise ApiError("VM_HAS_NO_SUSPEND_VDI", vm)
        image = await suspend_image(state, vdi)
        nics = await _plugged_nics(state, vm)
        try:
            info = await backend.resume(await domain_spec(state, vm, nics), image, paused=paused)
        except BackendError as e:
            await detach_vm_vifs(state, vm)
            raise _backend_error(vm, e, int(rec["memory_dynamic_max"])) from None
        await _drop_suspend_image(state, ctx, vm)
        domains.record_running(vm, info)
        domains.set_devices_attached(vm, True)
        _after_power_change(state, vm)
    await state.store.sync()
    return ""


@handler("VM.resume")
async def resume(
    state: ServerState, ctx: CallContext, vm: str, start_paused: bool, force: bool
) -> Any:
    return await _resume(state, ctx, vm, start_paused, "resume")


@handler("VM.resume_on")
async def resume_on(
    state: ServerState, ctx: CallContext, vm: str, host: str, start_paused: bool, force: bool
) -> Any:
    state.record("host", host)
    return await _resume(state, ctx, vm, start_paused, "resume_on")


@handler("VM.power_state_reset")
async def power_state_reset(state: ServerState, ctx: CallContext, vm: str) -> Any:
    """Force the record to Halted (the domain, if any, is destroyed to match)."""
    domains = domains_of(state)
    backend = await domains.ready()
    rec = state.record("VM", vm)
    if rec["is_control_domain"]:
        raise ApiError("OPERATION_NOT_ALLOWED", "This operation is not allowed on dom0")
    if rec["power_state"] in RUNNING_STATES:
        await backend.hard_shutdown(rec["uuid"])
    if rec["power_state"] == "Suspended":
        await _drop_suspend_image(state, ctx, vm)
    domains.record_halted(vm)
    await detach_vm_vifs(state, vm)
    _after_power_change(state, vm)
    await state.store.sync()
    return ""


@handler("VM.assert_operation_valid")
async def assert_operation_valid(state: ServerState, ctx: CallContext, self: str, op: str) -> Any:
    domains_of(state).check(self, op)
    return ""


@handler("VM.update_allowed_operations")
async def update_allowed_operations(state: ServerState, ctx: CallContext, self: str) -> Any:
    state.record("VM", self)
    domains_of(state).refresh(self)
    await state.store.sync()
    return ""
