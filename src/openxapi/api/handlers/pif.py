"""PIF: the host's interfaces as records, refreshed from discovery, never reconfigured.

On every start (and on ``PIF.scan``) the host's hardware NICs and the interface it is
reached on get a PIF each, on a ``xenbr<N>`` network; existing PIFs are refreshed in
place (addresses, MTU, link state, metrics) and the management flag follows the host's
address. Messages that would change a real interface (plug, unplug, reconfigure_ip) are
not built: the server describes the machine's network, it does not run it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.handlers.network import (
    DEFAULT_MTU,
    drop_object,
    ensure_himn,
    ensure_nat_network,
    make_pif_metrics,
    new_object,
    update_object,
)
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.errors import ApiError
from openxapi.net.discovery import HostNetwork, Interface, candidate_interfaces, discover
from openxapi.net.mac import is_valid_mac
from openxapi.spec.model import NULL_REF
from openxapi.spec.values import now

log = logging.getLogger("openxapi.net")

DISCOVER_KEY = "net.discover"
DEFAULT_PROPERTIES = {"gro": "on"}


def discovery_of(state: ServerState) -> Callable[[], HostNetwork]:
    """How this server reads the host's interfaces (tests may install another reader)."""
    fn = state.extras.get(DISCOVER_KEY)
    return fn if callable(fn) else discover


# ---- records from discovery ----------------------------------------------------------------
def _ip_fields(iface: Interface, hostnet: HostNetwork) -> dict[str, Any]:
    v4 = iface.ipv4
    v6 = iface.ipv6_global
    if not v4:
        mode4 = "None"
    elif any(a.dynamic for a in v4):
        mode4 = "DHCP"
    else:
        mode4 = "Static"
    if not v6:
        mode6 = "None"
    elif any(a.dynamic for a in v6):
        mode6 = "Autoconf"
    else:
        mode6 = "Static"
    routed = hostnet.default_dev == iface.name
    dns = ",".join(d for d in hostnet.dns if ":" not in d) if routed else ""
    return {
        "ip_configuration_mode": mode4,
        "IP": v4[0].address if v4 else "",
        "netmask": v4[0].netmask if v4 else "",
        "gateway": hostnet.default_gateway if routed else "",
        "DNS": dns,
        "ipv6_configuration_mode": mode6,
        "IPv6": [a.cidr for a in v6],
        "ipv6_gateway": hostnet.default_gateway6 if hostnet.default_dev6 == iface.name else "",
    }


def _metrics_fields(iface: Interface) -> dict[str, Any]:
    return {
        "carrier": iface.carrier,
        "vendor_id": iface.vendor_id,
        "device_id": iface.device_id,
        "speed": iface.speed,
        "duplex": iface.duplex,
        "pci_bus_path": iface.pci_bus_path,
        "last_updated": now(),
    }


def _bridge_for(state: ServerState, host_ref: str, position: int, device: str) -> str:
    """``xenbr<position>`` unless another device of this host already has it."""

    def taken(bridge: str) -> bool:
        for rec in state.store.table("network").values():
            if rec["bridge"] != bridge:
                continue
            for pif in rec["PIFs"]:
                prec = state.store.get("PIF", pif)
                if prec is not None and prec["host"] == host_ref and prec["device"] != device:
                    return True
        return False

    n = position
    if taken(f"xenbr{n}"):
        n = 0
        while taken(f"xenbr{n}"):
            n += 1
    return f"xenbr{n}"


def _find_or_create_network(state: ServerState, bridge: str, position: int, managed: bool) -> str:
    """The one network with this bridge name, else a new one (as the reference does)."""
    same = [ref for ref, rec in state.store.table("network").items() if rec["bridge"] == bridge]
    if len(same) == 1:
        return same[0]
    return new_object(
        state,
        "network",
        {
            "name_label": f"Pool-wide network {position}",
            "name_description": "",
            "MTU": DEFAULT_MTU,
            "bridge": bridge,
            "managed": managed,
            "other_config": {},
        },
    )


def introduce_interface(
    state: ServerState,
    host_ref: str,
    iface: Interface,
    hostnet: HostNetwork,
    position: int,
    managed: bool = True,
) -> str:
    """A PIF (with its metrics, and its network if needed) for one discovered interface."""
    bridge = _bridge_for(state, host_ref, position, iface.name) if managed else ""
    net = _find_or_create_network(state, bridge, position, managed)
    metrics = make_pif_metrics(state, _metrics_fields(iface))
    return new_object(
        state,
        "PIF",
        {
            "device": iface.name,
            "network": net,
            "host": host_ref,
            "MAC": iface.mac,
            "MTU": iface.mtu,
            "VLAN": -1,
            "metrics": metrics,
            "physical": True,
            "currently_attached": iface.admin_up,
            "management": False,
            "other_config": {},
            "managed": managed,
            "properties": dict(DEFAULT_PROPERTIES),
            "primary_address_type": "IPv4",
            **_ip_fields(iface, hostnet),
        },
    )


def _discovered_pifs(state: ServerState, host_ref: str) -> dict[str, str]:
    """device -> ref of this host's PIFs that stand for an interface (not VLAN/bond/NAT)."""
    out: dict[str, str] = {}
    for ref, rec in state.store.table("PIF").items():
        if rec["host"] == host_ref and rec["physical"] and rec["VLAN"] == -1:
            out[rec["device"]] = ref
    return out


def management_device(state: ServerState, host_ref: str, hostnet: HostNetwork) -> str:
    """The interface the host is reached on: the one with its address, else the default route."""
    address = state.record("host", host_ref)["address"]
    iface = hostnet.with_address(address) if address else None
    if iface is None or iface.kind == "loopback":
        iface = hostnet.by_name(hostnet.default_dev) or hostnet.by_name(hostnet.default_dev6)
    if iface is None or iface.kind == "loopback":
        return ""
    return iface.name


def sync_host_networks(state: ServerState, host_ref: str, hostnet: HostNetwork) -> None:
    """Make the records match the host: PIFs for its interfaces, the system networks, and
    the management flag. Writes are not awaited; the caller syncs the store."""
    mgmt_dev = management_device(state, host_ref, hostnet)
    existing = _discovered_pifs(state, host_ref)
    for position, iface in enumerate(candidate_interfaces(hostnet, mgmt_dev)):
        ref = existing.get(iface.name)
        if ref is None:
            existing[iface.name] = introduce_interface(state, host_ref, iface, hostnet, position)
            continue
        rec = state.record("PIF", ref)
        changes: dict[str, Any] = {"MAC": iface.mac, "MTU": iface.mtu}
        if rec["managed"]:
            changes["currently_attached"] = iface.admin_up
        changes.update(_ip_fields(iface, hostnet))
        update_object(state, "PIF", ref, changes)
        _refresh_metrics(state, ref, _metrics_fields(iface))
    present = {i.name for i in hostnet.interfaces}
    for device, ref in existing.items():
        if device not in present:
            update_object(state, "PIF", ref, {"currently_attached": False})
            _refresh_metrics(state, ref, {"carrier": False, "last_updated": now()})
    ensure_himn(state)
    nat = ensure_nat_network(state, host_ref)
    target = existing.get(mgmt_dev) if mgmt_dev else None
    if target is None:
        ordered = [existing[i.name] for i in candidate_interfaces(hostnet, mgmt_dev)]
        target = ordered[0] if ordered else nat
    for ref, rec in list(state.store.table("PIF").items()):
        if rec["host"] == host_ref:
            want = ref == target
            if rec["management"] != want:
                update_object(state, "PIF", ref, {"management": want})
    update_object(state, "PIF", target, {"currently_attached": True})


def _refresh_metrics(state: ServerState, pif: str, values: dict[str, Any]) -> None:
    metrics = state.record("PIF", pif)["metrics"]
    if state.store.get("PIF_metrics", metrics) is None:
        update_object(state, "PIF", pif, {"metrics": make_pif_metrics(state, values)})
    else:
        state.store.update("PIF_metrics", metrics, values)


def ensure_host_networks(state: ServerState, host_ref: str) -> None:
    """Start-up: discover the host's interfaces and bring the records in line."""
    hostnet = discovery_of(state)()
    for err in hostnet.errors:
        log.warning("network discovery: %s", err)
    sync_host_networks(state, host_ref, hostnet)


# ---- assertions shared with VLAN, Bond and tunnel ---------------------------------------------
def assert_managed(state: ServerState, pif: str) -> None:
    if not state.record("PIF", pif)["managed"]:
        raise ApiError("PIF_UNMANAGED", pif)


def assert_no_other_local_pifs(state: ServerState, host: str, network: str) -> None:
    for ref, rec in state.store.table("PIF").items():
        if rec["network"] == network and rec["host"] == host:
            raise ApiError("NETWORK_ALREADY_CONNECTED", host, ref)


def root_kind(state: ServerState, pif: str) -> tuple[str, dict[str, Any]]:
    """What a PIF is at the top of its stack: tunnel, vlan, bond, physical or other."""
    rec = state.record("PIF", pif)
    if rec["tunnel_access_PIF_of"]:
        return "tunnel", rec
    if rec["VLAN_master_of"] != NULL_REF:
        return "vlan", rec
    if rec["bond_master_of"]:
        return "bond", rec
    if rec["physical"]:
        return "physical", rec
    return "other", rec


def _bonded(state: ServerState, rec: dict[str, Any]) -> bool:
    bond = rec["bond_slave_of"]
    return bond != NULL_REF and state.store.get("Bond", bond) is not None


# ---- handlers ------------------------------------------------------------------------------
@handler("host.get_management_interface")
async def get_management_interface(state: ServerState, ctx: CallContext, host: str) -> Any:
    state.record("host", host)
    for ref, rec in state.store.table("PIF").items():
        if rec["host"] == host and rec["management"]:
            return ref
    raise ApiError("INTERNAL_ERROR", "Not_found")


def _assert_this_host(state: ServerState, host: str) -> None:
    state.record("host", host)
    if host != state.host_ref:
        raise ApiError("HOST_OFFLINE", host)


@handler("PIF.scan")
async def scan(state: ServerState, ctx: CallContext, host: str) -> Any:
    """Re-read the host's interfaces: new ones get PIFs, known ones are refreshed."""
    _assert_this_host(state, host)
    ensure_host_networks(state, host)
    await state.store.sync()
    return ""


@handler("PIF.introduce")
async def introduce(
    state: ServerState, ctx: CallContext, host: str, MAC: str, device: str, managed: bool
) -> Any:
    """A PIF for a named interface of this host (any but loopback), as the reference checks."""
    _assert_this_host(state, host)
    hostnet = discovery_of(state)()
    ifaces = [i for i in hostnet.interfaces if i.kind != "loopback"]
    mac = MAC.lower() or next((i.mac for i in ifaces if i.name == device), "")
    if not is_valid_mac(mac):
        raise ApiError("MAC_INVALID", mac)
    if any(
        rec["host"] == host and rec["device"] == device for rec in state.store.table("PIF").values()
    ):
        raise ApiError("DUPLICATE_PIF_DEVICE_NAME", device)
    iface = next((i for i in ifaces if i.name == device and i.mac == mac), None)
    if iface is None:
        raise ApiError(
            "COULD_NOT_FIND_NETWORK_INTERFACE_WITH_SPECIFIED_DEVICE_NAME_AND_MAC_ADDRESS",
            device,
            mac,
        )
    order = [i.name for i in candidate_interfaces(hostnet, device)]
    position = order.index(device) if device in order else len(order)
    ref = introduce_interface(state, host, iface, hostnet, position, managed=managed)
    await state.store.sync()
    return ref


@handler("PIF.forget")
async def forget(state: ServerState, ctx: CallContext, self: str) -> Any:
    """Drop the record (not the interface) unless management, bonded, VLAN or tunnel uses it."""
    rec = state.record("PIF", self)
    if rec["management"]:
        raise ApiError("PIF_IS_MANAGEMENT_INTERFACE", self)
    if _bonded(state, rec) or rec["bond_master_of"]:
        raise ApiError("PIF_ALREADY_BONDED", self)
    if rec["VLAN_slave_of"] or rec["VLAN"] != -1:
        raise ApiError("PIF_VLAN_STILL_EXISTS", self)
    if rec["tunnel_transport_PIF_of"] or rec["tunnel_access_PIF_of"]:
        raise ApiError("PIF_TUNNEL_STILL_EXISTS", self)
    drop_object(state, "PIF_metrics", rec["metrics"])
    drop_object(state, "PIF", self)
    await state.store.sync()
    return ""


@handler("PIF.db_introduce")
async def db_introduce(
    state: ServerState,
    ctx: CallContext,
    device: str,
    network: str,
    host: str,
    MAC: str,
    MTU: int,
    VLAN: int,
    physical: bool,
    ip_configuration_mode: str,
    IP: str,
    netmask: str,
    gateway: str,
    DNS: str,
    bond_slave_of: str,
    VLAN_master_of: str,
    management: bool,
    other_config: dict[str, str],
    disallow_unplug: bool,
    ipv6_configuration_mode: str,
    IPv6: list[str],
    ipv6_gateway: str,
    primary_address_type: str,
    managed: bool,
    properties: dict[str, str],
) -> Any:
    """A PIF record only, nothing checked against the host (pool-join bookkeeping)."""
    state.record("network", network)
    state.record("host", host)
    ref = new_object(
        state,
        "PIF",
        {
            "device": device,
            "network": network,
            "host": host,
            "MAC": MAC,
            "MTU": MTU,
            "VLAN": VLAN,
            "metrics": make_pif_metrics(state),
            "physical": physical,
            "currently_attached": False,
            "ip_configuration_mode": ip_configuration_mode,
            "IP": IP,
            "netmask": netmask,
            "gateway": gateway,
            "DNS": DNS,
            "VLAN_master_of": VLAN_master_of,
            "management": management,
            "other_config": other_config,
            "disallow_unplug": disallow_unplug,
            "ipv6_configuration_mode": ipv6_configuration_mode,
            "IPv6": IPv6,
            "ipv6_gateway": ipv6_gateway,
            "primary_address_type": primary_address_type,
            "managed": managed,
            "properties": properties,
        },
    )
    await state.store.sync()
    return ref


@handler("PIF.db_forget")
async def db_forget(state: ServerState, ctx: CallContext, self: str) -> Any:
    state.record("PIF", self)
    drop_object(state, "PIF", self)
    await state.store.sync()
    return ""


@handler("PIF.set_disallow_unplug")
async def set_disallow_unplug(state: ServerState, ctx: CallContext, self: str, value: bool) -> Any:
    rec = state.record("PIF", self)
    if rec["disallow_unplug"] != value:
        state.store.update("PIF", self, {"disallow_unplug": value})
        await state.store.sync()
    return ""


@handler("PIF.set_primary_address_type")
async def set_primary_address_type(
    state: ServerState, ctx: CallContext, self: str, primary_address_type: str
) -> Any:
    rec = state.record("PIF", self)
    if rec["management"]:
        raise ApiError("PIF_IS_MANAGEMENT_INTERFACE", self)
    state.store.update("PIF", self, {"primary_address_type": primary_address_type})
    await state.store.sync()
    return ""


@handler("PIF.create_VLAN")
async def create_VLAN(
    state: ServerState, ctx: CallContext, device: str, network: str, host: str, VLAN: int
) -> Any:
    """Deprecated form of VLAN.create: the tagged PIF is found by device name."""
    from openxapi.api.handlers.vlan import create_vlan

    state.record("host", host)
    base = [
        ref
        for ref in state.record("host", host)["PIFs"]
        if (rec := state.store.get("PIF", ref)) is not None
        and rec["device"] == device
        and rec["VLAN"] == -1
    ]
    if not base:
        raise ApiError("INVALID_VALUE", "device", device)
    vlan = await create_vlan(state, base[0], VLAN, network)
    await state.store.sync()
    return state.record("VLAN", vlan)["untagged_PIF"]


@handler("PIF.destroy")
async def destroy(state: ServerState, ctx: CallContext, self: str) -> Any:
    """Deprecated form of VLAN.destroy, on the VLAN's untagged PIF."""
    from openxapi.api.handlers.vlan import destroy_vlan

    rec = state.record("PIF", self)
    if rec["VLAN"] < 0:
        raise ApiError("PIF_IS_PHYSICAL")
    await destroy_vlan(state, rec["VLAN_master_of"])
    await state.store.sync()
    return ""
