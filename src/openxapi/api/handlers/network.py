"""network: creation with the reference's bridge rules, destruction, purposes, locking.

Also the helpers the other networking handlers share: the network backend of this
server (the simulator unless :func:`use_linux_backend` installed the real one),
relation-aware record writes, and the plain description of a network a backend is given.
A network whose ``other_config`` names a network namespace (``netns``) is a bridge inside
that namespace. The system networks every host has (the host-internal management network and
the guests' NAT network with its own PIF) are made here too.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from openxapi.api.coerce import CoercionError, coerce
from openxapi.api.context import CallContext
from openxapi.api.generic import Generic
from openxapi.api.registry import handler
from openxapi.api.state import ServerState, new_ref, new_uuid
from openxapi.errors import ApiError
from openxapi.net.backend import (
    NAT_DHCP_END,
    NAT_DHCP_START,
    NAT_DNS,
    NAT_GATEWAY,
    NAT_NETMASK,
    NetworkBackend,
    NetworkBackendError,
    NetworkKind,
    NetworkSpec,
)
from openxapi.net.linux import LinuxBackend
from openxapi.net.mac import generate_mac
from openxapi.net.policy import NetPolicy
from openxapi.net.simulator import SimulatorBackend
from openxapi.spec.model import NULL_REF
from openxapi.spec.values import EPOCH, now

log = logging.getLogger("openxapi.net")

BACKEND_KEY = "net.backend"
POLICY_KEY = "net.policy"
BRIDGE_COUNTER_KEY = "net.bridge_counter"
NETNS_KEY = "netns"
"""The network's other_config key naming the network namespace its bridge lives in."""

BRIDGE_BLACKLIST = ("xen", "xapi", "vif", "tap", "eth")
BRIDGE_STEM = "xapi"
MAX_BRIDGE_LEN = 15
DEFAULT_MTU = 1500

HIMN_KEY = "is_host_internal_management_network"
HIMN_LABEL = "Host internal management network"
HIMN_DESCRIPTION = (
    "Network on which guests will be assigned a private link-local IP address which "
    "can be used to talk XenAPI"
)
HIMN_BRIDGE = "xenapi"
HIMN_OTHER_CONFIG = {
    "is_guest_installer_network": "true",
    HIMN_KEY: "true",
    "ip_begin": "169.254.0.1",
    "ip_end": "169.254.255.254",
    "netmask": "255.255.0.0",
}

NAT_DEVICE = "nat0"
NAT_LABEL = "NAT network"
NAT_DESCRIPTION = (
    "Guests on this network reach other networks through the host by address "
    "translation; nothing outside the host can reach them"
)
NAT_OTHER_CONFIG = {"ip_begin": NAT_DHCP_START, "ip_end": NAT_DHCP_END, "netmask": NAT_NETMASK}


# ---- shared helpers ------------------------------------------------------------------------
def generic_of(state: ServerState) -> Generic:
    g = state.extras["generic"]
    assert isinstance(g, Generic)
    return g


def backend_of(state: ServerState) -> NetworkBackend:
    """The network backend of this server; the simulator unless another was installed."""
    b = state.extras.get(BACKEND_KEY)
    if not isinstance(b, NetworkBackend):
        b = SimulatorBackend()
        state.extras[BACKEND_KEY] = b
    return b


def policy_of(state: ServerState) -> NetPolicy:
    """What the host's configuration lets guests reach (the safe default unless set)."""
    p = state.extras.get(POLICY_KEY)
    return p if isinstance(p, NetPolicy) else NetPolicy()


def network_namespaces(state: ServerState) -> set[str]:
    """The network namespaces the networks' records name."""
    records = state.store.table("network").values()
    names = (str(rec["other_config"].get(NETNS_KEY, "")) for rec in records)
    return {n for n in names if n}


async def use_linux_backend(
    state: ServerState, *, allow_root_namespace: bool = False
) -> LinuxBackend:
    """Make real bridges and taps (in the networks' namespaces) this server's backend.

    The bridges and taps a previous run made in those namespaces are re-adopted. Unless
    ``allow_root_namespace``, guests are bridged only on networks inside a namespace and
    nothing is made in the host's own; other VIFs get user-mode NAT as before.
    """
    backend = LinuxBackend(allow_root_namespace=allow_root_namespace)
    await backend.open(network_namespaces(state))
    state.extras[BACKEND_KEY] = backend
    only_namespaced = not allow_root_namespace
    policy = dataclasses.replace(policy_of(state), namespaced_bridges_only=only_namespaced)
    state.extras[POLICY_KEY] = policy
    return backend


def new_object(state: ServerState, cls: str, values: dict[str, Any]) -> str:
    """Create a record (defaults filled, fresh uuid) and list it in its owners' sets."""
    ref = new_ref()
    record = state.new_record(cls, {**values, "uuid": new_uuid()})
    state.store.create(cls, ref, record)
    g = generic_of(state)
    for r, owner in g.relations.links(cls, record):
        g._link(state, r.owner_cls, r.set_field, owner, ref)
    return ref


def update_object(state: ServerState, cls: str, ref: str, changes: dict[str, Any]) -> None:
    """Write fields of a record, keeping one-to-many relations in step."""
    g = generic_of(state)
    for name, value in changes.items():
        rec = state.record(cls, ref)
        if rec[name] != value:
            g.set_field(state, cls, ref, rec, name, value)


def drop_object(state: ServerState, cls: str, ref: str) -> None:
    """Destroy a record if it exists, removing it from its owners' sets."""
    if ref and ref != NULL_REF and state.store.get(cls, ref) is not None:
        generic_of(state).destroy_object(state, cls, ref)


def constructor_values(state: ServerState, cls: str, args: dict[str, Any]) -> dict[str, Any]:
    """The typed constructor members of a create struct, as the generic create reads them."""
    values: dict[str, Any] = {}
    for f in state.cls(cls).fields:
        if not f.in_constructor:
            continue
        if f.name in args:
            try:
                values[f.name] = coerce(args[f.name], f.type, state.api.enums)
            except (CoercionError, RecursionError):
                raise ApiError("FIELD_TYPE_ERROR", f.name) from None
        elif not f.has_default:
            raise ApiError("INTERNAL_ERROR", f'Server_helpers.Dispatcher_FieldNotFound("{f.name}")')
    return values


def is_himn(rec: dict[str, Any]) -> bool:
    return str(rec["other_config"].get(HIMN_KEY, "")).lower() == "true"


def is_nat_pif(rec: dict[str, Any]) -> bool:
    """The NAT network's own PIF: not physical, no VLAN, named for the NAT device."""
    return rec["device"] == NAT_DEVICE and not rec["physical"] and rec["VLAN"] == -1


def network_spec(state: ServerState, net_ref: str) -> NetworkSpec:
    """What a backend is told about a network: its bridge, namespace, kind and uplink."""
    net = state.record("network", net_ref)
    kind = NetworkKind.INTERNAL
    uplink, vlan = "", -1
    if is_himn(net):
        kind = NetworkKind.HOST_INTERNAL
    for pif in net["PIFs"]:
        prec = state.store.get("PIF", pif)
        if prec is None or prec["host"] != state.host_ref:
            continue
        if is_nat_pif(prec):
            kind = NetworkKind.NAT
        else:
            kind = NetworkKind.EXTERNAL
            uplink, vlan = prec["device"], prec["VLAN"]
        break
    return NetworkSpec(
        uuid=net["uuid"],
        bridge=net["bridge"],
        kind=kind,
        mtu=net["MTU"],
        uplink=uplink,
        vlan=vlan,
        netns=str(net["other_config"].get(NETNS_KEY, "")),
    )


def choose_bridge(state: ServerState) -> str:
    """The next ``xapi<N>`` name, counting up from 0 per run and skipping names in use."""
    used = {rec["bridge"] for rec in state.store.table("network").values()}
    n = int(state.extras.get(BRIDGE_COUNTER_KEY, 0))
    while f"{BRIDGE_STEM}{n}" in used:
        n += 1
    state.extras[BRIDGE_COUNTER_KEY] = n + 1
    return f"{BRIDGE_STEM}{n}"


def make_pif_metrics(state: ServerState, values: dict[str, Any] | None = None) -> str:
    """A PIF_metrics record, blank as the reference makes them unless ``values`` say more."""
    blank: dict[str, Any] = {
        "io_read_kbs": 0.0,
        "io_write_kbs": 0.0,
        "carrier": False,
        "vendor_id": "",
        "vendor_name": "",
        "device_id": "",
        "device_name": "",
        "speed": 0,
        "duplex": False,
        "pci_bus_path": "",
        "last_updated": EPOCH,
        "other_config": {},
    }
    return new_object(state, "PIF_metrics", {**blank, **(values or {})})


# ---- system networks -----------------------------------------------------------------------
def ensure_himn(state: ServerState) -> str:
    """The host-internal management network; every host has exactly one."""
    for ref, rec in state.store.table("network").items():
        if is_himn(rec):
            return ref
    return new_object(
        state,
        "network",
        {
            "name_label": HIMN_LABEL,
            "name_description": HIMN_DESCRIPTION,
            "MTU": DEFAULT_MTU,
            "bridge": HIMN_BRIDGE,
            "managed": True,
            "other_config": dict(HIMN_OTHER_CONFIG),
        },
    )


def ensure_nat_network(state: ServerState, host_ref: str) -> str:
    """The guests' NAT network and its own non-physical PIF; returns the PIF."""
    for ref, rec in state.store.table("PIF").items():
        if rec["host"] == host_ref and is_nat_pif(rec):
            if state.store.get("network", rec["network"]) is None:
                update_object(state, "PIF", ref, {"network": _new_nat_network(state)})
            return ref
    net = _new_nat_network(state)
    uuid = new_uuid()
    metrics = make_pif_metrics(state, {"carrier": True, "last_updated": now()})
    ref = new_object(
        state,
        "PIF",
        {
            "device": NAT_DEVICE,
            "network": net,
            "host": host_ref,
            "MAC": generate_mac(0, uuid),
            "MTU": DEFAULT_MTU,
            "VLAN": -1,
            "metrics": metrics,
            "physical": False,
            "currently_attached": True,
            "ip_configuration_mode": "Static",
            "IP": NAT_GATEWAY,
            "netmask": NAT_NETMASK,
            "gateway": "",
            "DNS": NAT_DNS,
            "management": False,
            "managed": False,
            "other_config": {},
        },
    )
    return ref


def _new_nat_network(state: ServerState) -> str:
    return new_object(
        state,
        "network",
        {
            "name_label": NAT_LABEL,
            "name_description": NAT_DESCRIPTION,
            "MTU": DEFAULT_MTU,
            "bridge": choose_bridge(state),
            "managed": True,
            "other_config": dict(NAT_OTHER_CONFIG),
        },
    )


# ---- handlers ------------------------------------------------------------------------------
def _check_client_bridge(state: ServerState, bridge: str) -> None:
    if len(bridge) > MAX_BRIDGE_LEN or bridge.startswith(BRIDGE_BLACKLIST):
        raise ApiError("INVALID_VALUE", "bridge", bridge)
    if any(rec["bridge"] == bridge for rec in state.store.table("network").values()):
        raise ApiError("BRIDGE_NAME_EXISTS", bridge)


@handler("network.create")
async def create(state: ServerState, ctx: CallContext, args: dict[str, Any]) -> Any:
    """As the reference: MTU <= 0 means 1500, an empty bridge gets ``xapi<N>``."""
    values = constructor_values(state, "network", args)
    if values.get("MTU", DEFAULT_MTU) <= 0:
        values["MTU"] = DEFAULT_MTU
    bridge = values.get("bridge", "")
    if bridge:
        _check_client_bridge(state, bridge)
    else:
        values["bridge"] = choose_bridge(state)
    values.update(
        purpose=[],
        default_locking_mode="unlocked",
        assigned_ips={},
        blobs={},
        allowed_operations=[],
        current_operations={},
    )
    ref = new_object(state, "network", values)
    await state.store.sync()
    return ref


@handler("network.destroy")
async def destroy(state: ServerState, ctx: CallContext, self: str) -> Any:
    """Refused while VIFs are attached or PIFs remain; detached VIFs go with it."""
    rec = state.record("network", self)
    vifs = [v for v in rec["VIFs"] if state.store.get("VIF", v) is not None]
    attached = [v for v in vifs if state.record("VIF", v)["currently_attached"]]
    if attached:
        raise ApiError("NETWORK_CONTAINS_VIF", *attached)
    if rec["PIFs"]:
        raise ApiError("NETWORK_CONTAINS_PIF", *rec["PIFs"])
    if is_himn(rec):
        raise ApiError("CANNOT_DESTROY_SYSTEM_NETWORK", self)
    for vif in vifs:
        drop_object(state, "VIF_metrics", state.record("VIF", vif)["metrics"])
        drop_object(state, "VIF", vif)
    try:
        await backend_of(state).release_network(rec["uuid"])
    except NetworkBackendError as e:
        log.warning("network %s: backend release failed: %s", rec["uuid"], e)
    drop_object(state, "network", self)
    await state.store.sync()
    return ""


_CONFLICTING_PURPOSES = {"nbd": "insecure_nbd", "insecure_nbd": "nbd"}


@handler("network.add_purpose")
async def add_purpose(state: ServerState, ctx: CallContext, self: str, value: str) -> Any:
    rec = state.record("network", self)
    if not rec["managed"]:
        raise ApiError("NETWORK_UNMANAGED", self)
    if value in rec["purpose"]:
        return ""
    bad = _CONFLICTING_PURPOSES.get(value)
    for other in state.store.table("network").values():
        if bad is not None and bad in other["purpose"]:
            raise ApiError("NETWORK_INCOMPATIBLE_PURPOSES", value, bad)
    state.store.update("network", self, {"purpose": [value, *rec["purpose"]]})
    await state.store.sync()
    return ""


@handler("network.remove_purpose")
async def remove_purpose(state: ServerState, ctx: CallContext, self: str, value: str) -> Any:
    rec = state.record("network", self)
    if value in rec["purpose"]:
        state.store.update("network", self, {"purpose": [p for p in rec["purpose"] if p != value]})
        await state.store.sync()
    return ""


@handler("network.set_default_locking_mode")
async def set_default_locking_mode(
    state: ServerState, ctx: CallContext, network: str, value: str
) -> Any:
    """Refused while a VIF on the network is attached (VIF_IN_USE), as in the reference."""
    rec = state.record("network", network)
    for vif in rec["VIFs"]:
        vrec = state.store.get("VIF", vif)
        if vrec is not None and vrec["currently_attached"]:
            raise ApiError("VIF_IN_USE", network, vif)
    state.store.update("network", network, {"default_locking_mode": value})
    await state.store.sync()
    return ""
