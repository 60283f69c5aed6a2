"""VBD: create (device naming, "autodetect", CD rules), destroy, plug, unplug, insert,
eject, set_mode, assert_attachable."""

from __future__ import annotations

from typing import Any

from openxapi.api import vbd_devices
from openxapi.api.context import CallContext
from openxapi.api.handlers.pbd import constructor_args
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.storage_access import Storage, storage_of
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF

#: VDI types a VBD may point at.
ATTACHABLE_TYPES = frozenset(
    {"system", "user", "ephemeral", "suspend", "crashdump", "metadata", "rrd", "pvs_cache"}
)


def _is_hvm(vm: dict[str, Any]) -> bool:
    domain_type = str(vm.get("domain_type", ""))
    if domain_type in ("hvm", "pv_in_pvh", "pvh", "pv"):
        return domain_type == "hvm"
    return bool(vm.get("HVM_boot_policy"))


def create_vbd(storage: Storage, values: dict[str, Any]) -> str:
    """Validate a VBD constructor struct as the reference does and make the VBD."""
    st = storage.state
    vm = values["VM"]
    vm_rec = st.record("VM", vm)
    vdi = values["VDI"]
    empty = bool(values["empty"])
    vbd_type = values["type"]
    mode = values["mode"]
    vdi_rec = None
    if not empty:
        vdi_rec = st.record("VDI", vdi)
        if vdi_rec["type"] not in ATTACHABLE_TYPES:
            raise ApiError("VDI_INCOMPATIBLE_TYPE", vdi, vdi_rec["type"])
    if vbd_type == "CD" and mode != "RO":
        raise ApiError("VBD_CDS_MUST_BE_READONLY")
    if vbd_type != "CD" and empty:
        raise ApiError("VBD_NOT_REMOVABLE_MEDIA", "in constructor")
    if mode == "RW" and vdi_rec is not None and vdi_rec["read_only"]:
        raise ApiError("VDI_READONLY", vdi)
    for task, op in vm_rec["current_operations"].items():
        if op in ("migrate_send", "pool_migrate"):
            raise ApiError("OTHER_OPERATION_IN_PROGRESS", "VM", vm, op, task)
    if vbd_type == "Floppy" and not _is_hvm(vm_rec):
        raise ApiError("NOT_IMPLEMENTED", "Floppy drives are only supported on HVM guests")
    userdevice = values["userdevice"]
    existing = []
    for other in vm_rec["VBDs"]:
        orec = st.store.get("VBD", other)
        if orec is not None:
            existing += [orec["device"], orec["userdevice"]]
    taken = vbd_devices.used(existing)
    control = bool(vm_rec["is_control_domain"])
    if not vbd_devices.is_valid(userdevice, vbd_type):
        raise ApiError("INVALID_DEVICE", userdevice)
    if userdevice == vbd_devices.AUTODETECT:
        found = vbd_devices.autodetect(taken, vbd_type, control)
        if found is None:
            raise ApiError("INVALID_DEVICE", userdevice)
        userdevice = found
    if vbd_devices.clashes(userdevice, taken):
        raise ApiError("DEVICE_ALREADY_EXISTS", userdevice)
    suspended = vm_rec["power_state"] == "Suspended"
    other_config = dict(values["other_config"])
    if vdi_rec is not None and "backend-kind" in vdi_rec["sm_config"]:
        other_config["backend-kind"] = vdi_rec["sm_config"]["backend-kind"]
    metrics = storage.insert("VBD_metrics", {})
    ref = storage.insert(
        "VBD",
        {
            "VM": vm,
            "VDI": NULL_REF if empty else vdi,
            "device": values["device"] if suspended else "",
            "userdevice": userdevice,
            "bootable": values["bootable"],
            "mode": mode,
            "type": vbd_type,
            "unpluggable": values["unpluggable"],
            "empty": empty,
            "other_config": other_config,
            "currently_attached": bool(values["currently_attached"]) and suspended,
            "qos_algorithm_type": values["qos_algorithm_type"],
            "qos_algorithm_params": dict(values["qos_algorithm_params"]),
            "metrics": metrics,
        },
    )
    storage.refresh_vbd(ref)
    if vdi_rec is not None:
        storage.refresh_vdi(vdi)
    return ref


@handler("VBD.create")
async def create(state: ServerState, ctx: CallContext, args: dict[str, Any]) -> Any:
    ref = create_vbd(storage_of(state), constructor_args(state, "VBD", args))
    await state.store.sync()
    return ref


@handler("VBD.destroy")
async def destroy(state: ServerState, ctx: CallContext, self: str) -> Any:
    rec = state.record("VBD", self)
    if rec["currently_attached"]:
        vm = state.store.get("VM", rec["VM"]) or {"uuid": ""}
        raise ApiError(
            "OPERATION_NOT_ALLOWED", f"VBD '{rec['uuid']}' still attached to '{vm['uuid']}'"
        )
    storage_of(state).destroy_vbd_record(self)
    await state.store.sync()
    return ""


def _after_change(storage: Storage, vbd: str, *vdis: str) -> None:
    storage.refresh_vbd(vbd)
    for vdi in vdis:
        if vdi != NULL_REF:
            storage.refresh_vdi(vdi)
            rec = storage.state.store.get("VDI", vdi)
            for other in rec["VBDs"] if rec is not None else ():
                if other != vbd:
                    storage.refresh_vbd(other)


@handler("VBD.plug")
async def plug(state: ServerState, ctx: CallContext, self: str) -> Any:
    storage = storage_of(state)
    rec = state.record("VBD", self)
    async with storage.operation("VBD", self, "plug", ctx, lambda: storage.check_vbd(self, "plug")):
        rec = state.record("VBD", self)
        vm = state.record("VM", rec["VM"])
        vdi = rec["VDI"]
        if not rec["empty"] and vdi != NULL_REF:
            vrec = state.record("VDI", vdi)
            drv = await storage.driver(vrec["SR"])
            with storage.errors(vrec["SR"], vdi):
                await drv.vdi_attach(vrec["location"], rec["mode"] == "RW")
        if storage.device_hooks is not None:
            await storage.device_hooks.vbd_plug(rec["VM"], self)
        storage.put(
            "VBD",
            self,
            currently_attached=True,
            device=vbd_devices.linux_name(rec["userdevice"], _is_hvm(vm)),
        )
    _after_change(storage, self, rec["VDI"])
    await state.store.sync()
    return ""


async def _unplug(state: ServerState, ctx: CallContext, vbd: str, force: bool) -> Any:
    storage = storage_of(state)
    op = "unplug_force" if force else "unplug"
    rec = state.record("VBD", vbd)
    async with storage.operation("VBD", vbd, op, ctx, lambda: storage.check_vbd(vbd, op)):
        if storage.device_hooks is not None:
            await storage.device_hooks.vbd_unplug(rec["VM"], vbd, force)
        vdi = state.record("VBD", vbd)["VDI"]
        if vdi != NULL_REF and (vrec := state.store.get("VDI", vdi)) is not None:
            drv = storage.drivers.get(vrec["SR"])
            if drv is not None:
                with storage.errors(vrec["SR"], vdi):
                    await drv.vdi_detach(vrec["location"])
        storage.put("VBD", vbd, currently_attached=False)
    _after_change(storage, vbd, rec["VDI"])
    await state.store.sync()
    return ""


@handler("VBD.unplug")
async def unplug(state: ServerState, ctx: CallContext, self: str) -> Any:
    return await _unplug(state, ctx, self, False)


@handler("VBD.unplug_force")
async def unplug_force(state: ServerState, ctx: CallContext, self: str) -> Any:
    return await _unplug(state, ctx, self, True)


def _not_suspended(state: ServerState, vm: str) -> None:
    if state.record("VM", vm)["power_state"] == "Suspended":
        raise ApiError("VM_BAD_POWER_STATE", vm, "halted, running", "suspended")


@handler("VBD.insert")
async def insert(state: ServerState, ctx: CallContext, vbd: str, vdi: str) -> Any:
    storage = storage_of(state)
    rec = state.record("VBD", vbd)
    vdi_rec = state.record("VDI", vdi)

    def check() -> None:
        r = state.record("VBD", vbd)
        _not_suspended(state, r["VM"])
        if r["type"] != "CD":
            raise ApiError("VBD_NOT_REMOVABLE_MEDIA", vbd)
        if not r["empty"]:
            raise ApiError("VBD_NOT_EMPTY", vbd)
        if not vdi_rec["managed"]:
            raise ApiError("VDI_NOT_MANAGED", vdi)

    async with storage.operation("VBD", vbd, "insert", ctx, check):
        running = state.record("VM", rec["VM"])["power_state"] == "Running"
        if running and storage.device_hooks is not None:
            await storage.device_hooks.vbd_insert(rec["VM"], vbd, vdi)
        storage.put("VBD", vbd, VDI=vdi, empty=False)
    _after_change(storage, vbd, vdi)
    await state.store.sync()
    return ""


@handler("VBD.eject")
async def eject(state: ServerState, ctx: CallContext, vbd: str) -> Any:
    storage = storage_of(state)
    rec = state.record("VBD", vbd)

    def check() -> None:
        r = state.record("VBD", vbd)
        if r["type"] != "CD":
            raise ApiError("VBD_NOT_REMOVABLE_MEDIA", vbd)
        if r["empty"]:
            raise ApiError("VBD_IS_EMPTY", vbd)
        _not_suspended(state, r["VM"])

    async with storage.operation("VBD", vbd, "eject", ctx, check):
        old = state.record("VBD", vbd)["VDI"]
        running = state.record("VM", rec["VM"])["power_state"] == "Running"
        if running and storage.device_hooks is not None:
            await storage.device_hooks.vbd_eject(rec["VM"], vbd)
        storage.put("VBD", vbd, VDI=NULL_REF, empty=True)
    _after_change(storage, vbd, old)
    await state.store.sync()
    return ""


@handler("VBD.set_mode")
async def set_mode(state: ServerState, ctx: CallContext, self: str, value: str) -> Any:
    rec = state.record("VBD", self)
    vm = state.record("VM", rec["VM"])
    if vm["power_state"] != "Halted":
        raise ApiError("VM_BAD_POWER_STATE", rec["VM"], "halted", vm["power_state"].lower())
    storage = storage_of(state)
    storage.put("VBD", self, mode=value)
    _after_change(storage, self, rec["VDI"])
    await state.store.sync()
    return ""


@handler("VBD.assert_attachable")
async def assert_attachable(state: ServerState, ctx: CallContext, self: str) -> Any:
    state.record("VBD", self)
    storage_of(state).check_vbd(self, "attach")
    return ""
