"""VIF: creation with the reference's device and MAC rules, plug, unplug, move.

The state machine (which of attach, plug and unplug a VIF allows, and the error each
refused one gets) is :func:`vif_operation_errors`, a pure function of the VIF and its
VM. The host side of a plugged VIF comes from the network backend; how it is attached
is decided by :mod:`openxapi.net.policy`.

:func:`create_vif` is the one way to make a VIF (clone and import use it too);
:func:`attach_vm_vifs` and :func:`detach_vm_vifs` are what VM start and stop call, and
:func:`refresh_vm_vifs` must run when a VM's power state or operations change.
"""

from __future__ import annotations

import re
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.handlers.network import (
    backend_of,
    constructor_values,
    drop_object,
    network_spec,
    new_object,
    policy_of,
    update_object,
)
from openxapi.api.registry import handler
from openxapi.api.state import ServerState, new_ref
from openxapi.errors import ApiError
from openxapi.net.backend import BridgeNotAvailable, NetworkBackendError, VifAttachment, VifSpec
from openxapi.net.mac import generate_mac, is_valid_mac
from openxapi.net.policy import choose_mode
from openxapi.spec.values import EPOCH

VIF_OPERATIONS = ("attach", "plug", "unplug")
MAC_SEED = "mac_seed"
ALLOWED_DEVICES = tuple(str(n) for n in range(16))
# Deriving a MAC hashes 2 * device + 1 times; larger device numbers are refused so a
# request cannot keep the server busy (the reference sets no bound).
MAX_DEVICE = 4095
_DEVICE_RE = re.compile(r"^[0-9]+$")
# VM operations during which VIFs may not be hot-plugged or unplugged.
_VM_OPS_BLOCKING_HOTPLUG = ("clean_shutdown", "hard_shutdown", "suspend", "pause")

Refusal = tuple[str, ...] | None


# ---- state machine (pure) ------------------------------------------------------------------
def vif_operation_errors(
    vif_ref: str, vif: dict[str, Any], vm_ref: str, vm: dict[str, Any]
) -> dict[str, Refusal]:
    """Each VIF operation mapped to None (allowed) or the error it would fail with.

    The first reason found for an operation wins, in the reference's order: another
    operation on the VIF, hotplug on a control domain, the VM's power state, VM
    operations that exclude hotplug.
    """
    table: dict[str, Refusal] = dict.fromkeys(VIF_OPERATIONS)

    def refuse(error: tuple[str, ...], ops: tuple[str, ...]) -> None:
        for op in ops:
            if table[op] is None:
                table[op] = error

    current = vif["current_operations"]
    if current:
        tasks = "; ".join(reversed(list(current)))
        ops = "; ".join(reversed(list(current.values())))
        refuse(
            ("OTHER_OPERATION_IN_PROGRESS", "VIF", vif_ref, f"{{{ops}}}", f"{{{tasks}}}"),
            VIF_OPERATIONS,
        )
    if vm["is_control_domain"]:
        refuse(("OPERATION_NOT_ALLOWED", "Control domain does not support hotplug"), ("plug",))
    power = vm["power_state"]
    if power == "Running":
        if vif["currently_attached"]:
            refuse(("DEVICE_ALREADY_ATTACHED", vif_ref), ("plug",))
        else:
            refuse(("DEVICE_ALREADY_DETACHED", vif_ref), ("unplug",))
    else:
        refuse(("VM_BAD_POWER_STATE", vm_ref, "running", power.lower()), ("plug", "unplug"))
    for op in vm["current_operations"].values():
        if op in _VM_OPS_BLOCKING_HOTPLUG:
            text = f"Current operation on VM:{vm_ref} is {op}"
            refuse(("OPERATION_NOT_ALLOWED", text), ("plug", "unplug"))
    return table


def allowed_vif_operations(
    vif_ref: str, vif: dict[str, Any], vm_ref: str, vm: dict[str, Any]
) -> list[str]:
    table = vif_operation_errors(vif_ref, vif, vm_ref, vm)
    return [op for op in VIF_OPERATIONS if table[op] is None]


def refresh_vif_operations(state: ServerState, vif_ref: str) -> None:
    """Recompute a VIF's allowed_operations from its state and its VM's."""
    vif = state.store.get("VIF", vif_ref)
    if vif is None:
        return
    vm = state.store.get("VM", vif["VM"])
    if vm is None:
        return
    allowed = allowed_vif_operations(vif_ref, vif, vif["VM"], vm)
    if vif["allowed_operations"] != allowed:
        state.store.update("VIF", vif_ref, {"allowed_operations": allowed})


def refresh_vm_vifs(state: ServerState, vm_ref: str) -> None:
    """Recompute the allowed_operations of every VIF of a VM (after a power change)."""
    vm = state.store.get("VM", vm_ref)
    if vm is not None:
        for vif in vm["VIFs"]:
            refresh_vif_operations(state, vif)


def _assert_operation(state: ServerState, vif_ref: str, op: str) -> dict[str, Any]:
    vif = state.record("VIF", vif_ref)
    vm = state.record("VM", vif["VM"])
    error = vif_operation_errors(vif_ref, vif, vif["VM"], vm)[op]
    if error is not None:
        raise ApiError(*error)
    return vif


class _Marked:
    """current_operations holds ``task -> op`` while the operation runs."""

    def __init__(self, state: ServerState, ctx: CallContext, vif_ref: str, op: str) -> None:
        self.state, self.vif_ref, self.op = state, vif_ref, op
        self.task = ctx.task or new_ref()

    def __enter__(self) -> dict[str, Any]:
        vif = _assert_operation(self.state, self.vif_ref, self.op)
        ops = {**vif["current_operations"], self.task: self.op}
        self.state.store.update("VIF", self.vif_ref, {"current_operations": ops})
        refresh_vif_operations(self.state, self.vif_ref)
        return vif

    def __exit__(self, *exc: object) -> None:
        vif = self.state.store.get("VIF", self.vif_ref)
        if vif is not None:
            ops = {k: v for k, v in vif["current_operations"].items() if k != self.task}
            self.state.store.update("VIF", self.vif_ref, {"current_operations": ops})
            refresh_vif_operations(self.state, self.vif_ref)


# ---- creation ------------------------------------------------------------------------------
def _device_number(device: str) -> int:
    if not _DEVICE_RE.fullmatch(device) or int(device) > MAX_DEVICE:
        raise ApiError("INVALID_DEVICE", device)
    return int(device)


def network_has_vlan_pif(state: ServerState, network: str) -> bool:
    for pif in state.record("network", network)["PIFs"]:
        rec = state.store.get("PIF", pif)
        if rec is not None and rec["VLAN"] != -1:
            return True
    return False


def create_vif(state: ServerState, values: dict[str, Any]) -> str:
    """Check and create a VIF with its metrics, as ``VIF.create`` does (not awaited)."""
    vm_ref, net_ref = values["VM"], values["network"]
    vm = state.record("VM", vm_ref)
    state.record("network", net_ref)
    if (
        values.get("locking_mode", "network_default") == "locked"
        or values.get("ipv4_allowed")
        or values.get("ipv6_allowed")
    ):
        raise ApiError("LICENCE_RESTRICTION", "VIF_locking")
    device = values["device"]
    number = _device_number(device)
    mac = values["MAC"]
    seed = vm["other_config"].get(MAC_SEED)
    autogenerated = False
    if seed is not None and mac == "":
        mac, autogenerated = generate_mac(number, seed), True
    if not is_valid_mac(mac):
        raise ApiError("MAC_INVALID", mac)
    if values.get("trunks") and network_has_vlan_pif(state, net_ref):
        raise ApiError("NETWORK_INCOMPATIBLE_WITH_TRUNKS", net_ref)
    for other in vm["VIFs"]:
        orec = state.store.get("VIF", other)
        odev = orec["device"] if orec is not None else ""
        if _DEVICE_RE.fullmatch(odev) and int(odev) == number:
            raise ApiError("DEVICE_ALREADY_EXISTS", device)
    metrics = new_object(
        state,
        "VIF_metrics",
        {"io_read_kbs": 0.0, "io_write_kbs": 0.0, "last_updated": EPOCH, "other_config": {}},
    )
    attached = bool(values.get("currently_attached")) and vm["power_state"] == "Suspended"
    ref = new_object(
        state,
        "VIF",
        {
            **values,
            "MAC": mac,
            "MAC_autogenerated": autogenerated,
            "currently_attached": attached,
            "metrics": metrics,
            "allowed_operations": [],
            "current_operations": {},
            "status_code": 0,
            "status_detail": "",
            "runtime_properties": {},
            "qos_supported_algorithms": [],
            "ipv4_configuration_mode": "None",
            "ipv4_addresses": [],
            "ipv4_gateway": "",
            "ipv6_configuration_mode": "None",
            "ipv6_addresses": [],
            "ipv6_gateway": "",
        },
    )
    refresh_vif_operations(state, ref)
    return ref


def destroy_vif_record(state: ServerState, vif_ref: str) -> None:
    """Remove a VIF and its metrics from the records (writes not awaited)."""
    vif = state.store.get("VIF", vif_ref)
    if vif is not None:
        drop_object(state, "VIF_metrics", vif["metrics"])
        drop_object(state, "VIF", vif_ref)


def vif_spec(state: ServerState, vif: dict[str, Any], network: str) -> VifSpec:
    """The plain description of a VIF (on ``network``) a backend is given."""
    spec = network_spec(state, network)
    backend = backend_of(state)
    return VifSpec(
        uuid=vif["uuid"],
        vm_uuid=state.record("VM", vif["VM"])["uuid"],
        device=int(vif["device"]) if _DEVICE_RE.fullmatch(vif["device"]) else 0,
        mac=vif["MAC"],
        mtu=vif["MTU"],
        network=spec,
        mode=choose_mode(spec, backend.capabilities, policy_of(state)),
    )


def _backend_failure(e: NetworkBackendError, vif_ref: str) -> ApiError:
    if isinstance(e, BridgeNotAvailable):
        return ApiError("BRIDGE_NOT_AVAILABLE", e.bridge)
    return ApiError("CANNOT_PLUG_VIF", vif_ref)


def _is_running(vm: dict[str, Any]) -> bool:
    return vm["power_state"] in ("Running", "Paused")


# ---- VM start and stop ---------------------------------------------------------------------
async def attach_vm_vifs(state: ServerState, vm_ref: str) -> list[tuple[str, VifAttachment]]:
    """Plug every VIF of a starting VM and return (VIF ref, attachment) in device order.

    What a domain backend builds the guest's NICs from. On a failure the VIFs plugged so
    far are unplugged again and the error is raised; records are updated, not awaited.
    """
    vm = state.record("VM", vm_ref)
    vifs = [(v, r) for v in vm["VIFs"] if (r := state.store.get("VIF", v)) is not None]
    vifs.sort(key=lambda vr: int(vr[1]["device"]) if _DEVICE_RE.fullmatch(vr[1]["device"]) else 0)
    backend = backend_of(state)
    done: list[tuple[str, VifAttachment]] = []
    try:
        for ref, rec in vifs:
            done.append((ref, await backend.plug_vif(vif_spec(state, rec, rec["network"]))))
    except NetworkBackendError as e:
        for _, attachment in done:
            try:
                await backend.unplug_vif(attachment.vif_uuid)
            except NetworkBackendError:
                pass
        failed = vifs[len(done)][0]
        raise _backend_failure(e, failed) from None
    for ref, _ in done:
        state.store.update("VIF", ref, {"currently_attached": True})
        refresh_vif_operations(state, ref)
    return done


async def detach_vm_vifs(state: ServerState, vm_ref: str) -> None:
    """Unplug every VIF of a stopped VM and mark them detached (writes not awaited)."""
    vm = state.record("VM", vm_ref)
    backend = backend_of(state)
    for ref in vm["VIFs"]:
        rec = state.store.get("VIF", ref)
        if rec is None:
            continue
        try:
            await backend.unplug_vif(rec["uuid"])
        except NetworkBackendError:
            pass
        state.store.update("VIF", ref, {"currently_attached": False})
        refresh_vif_operations(state, ref)


# ---- handlers ------------------------------------------------------------------------------
@handler("VIF.create")
async def create(state: ServerState, ctx: CallContext, args: dict[str, Any]) -> Any:
    values = constructor_values(state, "VIF", args)
    ref = create_vif(state, values)
    await state.store.sync()
    return ref


@handler("VIF.destroy")
async def destroy(state: ServerState, ctx: CallContext, self: str) -> Any:
    vif = state.record("VIF", self)
    vm = state.store.get("VM", vif["VM"])
    if vm is not None and _is_running(vm) and vif["currently_attached"]:
        raise ApiError("OPERATION_NOT_ALLOWED", "VIF currently attached to a running VM")
    try:
        await backend_of(state).unplug_vif(vif["uuid"])
    except NetworkBackendError as e:
        raise _backend_failure(e, self) from None
    destroy_vif_record(state, self)
    await state.store.sync()
    return ""


@handler("VIF.plug")
async def plug(state: ServerState, ctx: CallContext, self: str) -> Any:
    """Give a running VM's VIF its host side on the VIF's network."""
    try:
        with _Marked(state, ctx, self, "plug") as vif:
            try:
                await backend_of(state).plug_vif(vif_spec(state, vif, vif["network"]))
            except NetworkBackendError as e:
                raise _backend_failure(e, self) from None
            state.store.update("VIF", self, {"currently_attached": True})
    finally:
        await state.store.sync()
    return ""


async def _unplug(state: ServerState, ctx: CallContext, self: str) -> Any:
    try:
        with _Marked(state, ctx, self, "unplug") as vif:
            try:
                await backend_of(state).unplug_vif(vif["uuid"])
            except NetworkBackendError as e:
                raise _backend_failure(e, self) from None
            state.store.update("VIF", self, {"currently_attached": False})
    finally:
        await state.store.sync()
    return ""


@handler("VIF.unplug")
async def unplug(state: ServerState, ctx: CallContext, self: str) -> Any:
    return await _unplug(state, ctx, self)


@handler("VIF.unplug_force")
async def unplug_force(state: ServerState, ctx: CallContext, self: str) -> Any:
    return await _unplug(state, ctx, self)


async def move_vif_to(state: ServerState, vif_ref: str, network: str) -> None:
    """Point a VIF at ``network``; a plugged one is re-homed by the backend, without the
    guest. On a backend failure the VIF keeps its old network. Writes are not awaited."""
    vif = state.record("VIF", vif_ref)
    vm = state.record("VM", vif["VM"])
    active = vif["currently_attached"] and vm["power_state"] != "Suspended"
    old = vif["network"]
    update_object(state, "VIF", vif_ref, {"network": network})
    if active:
        try:
            await backend_of(state).move_vif(vif_spec(state, vif, network))
        except NetworkBackendError as e:
            update_object(state, "VIF", vif_ref, {"network": old})
            raise _backend_failure(e, vif_ref) from None


@handler("VIF.move")
async def move(state: ServerState, ctx: CallContext, self: str, network: str) -> Any:
    """Move the VIF to another network, even while its VM runs."""
    vif = state.record("VIF", self)
    state.record("network", network)
    if vif["trunks"] and network_has_vlan_pif(state, network):
        raise ApiError("NETWORK_INCOMPATIBLE_WITH_TRUNKS", network)
    try:
        await move_vif_to(state, self, network)
    finally:
        await state.store.sync()
    return ""


@handler("VM.get_allowed_VIF_devices")
async def get_allowed_VIF_devices(state: ServerState, ctx: CallContext, vm: str) -> Any:
    rec = state.record("VM", vm)
    used = {r["device"] for v in rec["VIFs"] if (r := state.store.get("VIF", v)) is not None}
    return [d for d in ALLOWED_DEVICES if d not in used]


# ---- locking and guest IP settings ---------------------------------------------------------
def _locking_unavailable() -> ApiError:
    """No backend filters guest traffic by address: the feature is absent, as unlicensed."""
    return ApiError("LICENCE_RESTRICTION", "VIF_locking")


@handler("VIF.set_locking_mode")
async def set_locking_mode(state: ServerState, ctx: CallContext, self: str, value: str) -> Any:
    vif = state.record("VIF", self)
    effective = value
    if value == "network_default":
        effective = state.record("network", vif["network"])["default_locking_mode"]
    if effective == "locked":
        raise _locking_unavailable()
    state.store.update("VIF", self, {"locking_mode": value})
    await state.store.sync()
    return ""


async def _set_allowed(state: ServerState, self: str, field: str, value: list[str]) -> Any:
    state.record("VIF", self)
    if value:
        raise _locking_unavailable()
    state.store.update("VIF", self, {field: []})
    await state.store.sync()
    return ""


async def _remove_allowed(state: ServerState, self: str, field: str, value: str) -> Any:
    rec = state.record("VIF", self)
    if value in rec[field]:
        state.store.update("VIF", self, {field: [a for a in rec[field] if a != value]})
        await state.store.sync()
    return ""


@handler("VIF.set_ipv4_allowed")
async def set_ipv4_allowed(
    state: ServerState, ctx: CallContext, self: str, value: list[str]
) -> Any:
    return await _set_allowed(state, self, "ipv4_allowed", value)


@handler("VIF.set_ipv6_allowed")
async def set_ipv6_allowed(
    state: ServerState, ctx: CallContext, self: str, value: list[str]
) -> Any:
    return await _set_allowed(state, self, "ipv6_allowed", value)


@handler("VIF.add_ipv4_allowed", "VIF.add_ipv6_allowed")
async def add_allowed(state: ServerState, ctx: CallContext, self: str, value: str) -> Any:
    state.record("VIF", self)
    raise _locking_unavailable()


@handler("VIF.remove_ipv4_allowed")
async def remove_ipv4_allowed(state: ServerState, ctx: CallContext, self: str, value: str) -> Any:
    return await _remove_allowed(state, self, "ipv4_allowed", value)


@handler("VIF.remove_ipv6_allowed")
async def remove_ipv6_allowed(state: ServerState, ctx: CallContext, self: str, value: str) -> Any:
    return await _remove_allowed(state, self, "ipv6_allowed", value)


def _guest_can_set_ip(state: ServerState, vm: dict[str, Any]) -> bool:
    gm = state.store.get("VM_guest_metrics", vm["guest_metrics"])
    return gm is not None and gm["other"].get("feature-static-ip-setting") == "1"


async def _configure_ip(
    state: ServerState, self: str, family: int, mode: str, address: str, gateway: str
) -> Any:
    """Static addresses need a feature this server lacks; other modes need the guest's."""
    vif = state.record("VIF", self)
    vm_ref = vif["VM"]
    if mode == "Static":
        raise ApiError("LICENCE_RESTRICTION", "Guest_ip_setting")
    if not _guest_can_set_ip(state, state.record("VM", vm_ref)):
        raise ApiError("VM_LACKS_FEATURE", vm_ref)
    prefix = "ipv4" if family == 4 else "ipv6"
    update_object(
        state,
        "VIF",
        self,
        {
            f"{prefix}_configuration_mode": mode,
            f"{prefix}_addresses": [address],
            f"{prefix}_gateway": gateway,
        },
    )
    await state.store.sync()
    return ""


@handler("VIF.configure_ipv4")
async def configure_ipv4(
    state: ServerState, ctx: CallContext, self: str, mode: str, address: str, gateway: str
) -> Any:
    return await _configure_ip(state, self, 4, mode, address, gateway)


@handler("VIF.configure_ipv6")
async def configure_ipv6(
    state: ServerState, ctx: CallContext, self: str, mode: str, address: str, gateway: str
) -> Any:
    return await _configure_ip(state, self, 6, mode, address, gateway)
