"""Bond: link aggregation as records, with the reference's checks, errors and moves.

Creating a bond makes a master PIF (``bond<N>``) on the given network, marks the members
as its slaves, and moves onto the master what the members carried: IP configuration,
the management flag, VLANs, tunnels and the VIFs on the members' networks. Destroying it
moves them back to the primary slave. No kernel bond device is made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.handlers.network import drop_object, make_pif_metrics, new_object, update_object
from openxapi.api.handlers.pif import assert_managed, assert_no_other_local_pifs, root_kind
from openxapi.api.handlers.vif import move_vif_to
from openxapi.api.handlers.vlan import assert_network_managed
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.errors import ApiError
from openxapi.net.mac import is_valid_mac
from openxapi.spec.model import NULL_REF

IP_FIELDS = ("ip_configuration_mode", "IP", "netmask", "gateway", "DNS")
_CLEARED_IP = {"ip_configuration_mode": "None", "IP": "", "netmask": "", "gateway": "", "DNS": ""}


def _one_of(*values: str) -> Callable[[str], bool]:
    return lambda v: v in values


def _is_int(v: str) -> bool:
    try:
        int(v)
    except ValueError:
        return False
    return True


# mode -> property -> (default or None, validity check)
REQUIREMENTS: dict[str, dict[str, tuple[str | None, Callable[[str], bool]]]] = {
    "lacp": {
        "hashing_algorithm": ("tcpudp_ports", _one_of("src_mac", "tcpudp_ports")),
        "lacp-time": ("slow", _one_of("fast", "slow")),
        "lacp-aggregation-key": (None, _is_int),
        "lacp-fallback-ab": ("true", _one_of("true", "false")),
    }
}


def validate_property(mode: str, name: str, value: str) -> None:
    """INVALID_VALUE unless the bond mode knows the property and accepts the value."""
    req = REQUIREMENTS.get(mode, {}).get(name)
    if req is None or not req[1](value):
        raise ApiError("INVALID_VALUE", "properties", f"{name} = {value}")


def with_defaults(mode: str, properties: dict[str, str]) -> dict[str, str]:
    out = dict(properties)
    for name, (default, _) in REQUIREMENTS.get(mode, {}).items():
        if default is not None and name not in out:
            out[name] = default
    return out


def _has_ip(rec: dict[str, Any]) -> bool:
    if rec["primary_address_type"] == "IPv6":
        return bool(rec["ipv6_configuration_mode"] != "None")
    return bool(rec["ip_configuration_mode"] != "None")


def _bond_device(state: ServerState, host: str) -> str:
    used = {
        rec["device"]
        for rec in state.store.table("PIF").values()
        if rec["host"] == host and rec["bond_master_of"]
    }
    n = 0
    while f"bond{n}" in used:
        n += 1
    return f"bond{n}"


def _move_ip(state: ServerState, src: str, dst: str) -> None:
    rec = state.record("PIF", src)
    update_object(state, "PIF", dst, {f: rec[f] for f in IP_FIELDS})
    update_object(state, "PIF", src, dict(_CLEARED_IP))


def _move_management(state: ServerState, src: str, dst: str) -> None:
    update_object(state, "PIF", src, {"management": False})
    update_object(state, "PIF", dst, {"management": True, "currently_attached": True})


def _move_stacked(state: ServerState, src: str, dst: str) -> None:
    """VLANs and tunnels carried by ``src`` are carried by ``dst`` instead."""
    rec = state.record("PIF", src)
    for vlan in list(rec["VLAN_slave_of"]):
        if state.store.get("VLAN", vlan) is not None:
            update_object(state, "VLAN", vlan, {"tagged_PIF": dst})
    for tunnel in list(rec["tunnel_transport_PIF_of"]):
        if state.store.get("tunnel", tunnel) is not None:
            update_object(state, "tunnel", tunnel, {"transport_PIF": dst})


async def _move_vifs(state: ServerState, networks: list[str], to: str) -> None:
    for net in networks:
        if net == to:
            continue
        nrec = state.store.get("network", net)
        for vif in list(nrec["VIFs"]) if nrec is not None else []:
            if state.store.get("VIF", vif) is not None:
                await move_vif_to(state, vif, to)


async def create_bond(
    state: ServerState,
    network: str,
    members: list[str],
    mac: str,
    mode: str,
    properties: dict[str, str],
) -> str:
    """Check and create a bond (writes not awaited)."""
    if not members:
        raise ApiError("PIF_BOND_NEEDS_MORE_MEMBERS")
    host = state.record("PIF", members[0])["host"]
    assert_network_managed(state, network)
    assert_no_other_local_pifs(state, host, network)
    if mac and not is_valid_mac(mac):
        raise ApiError("MAC_INVALID", mac)
    for name, value in properties.items():
        validate_property(mode, name, value)
    properties = with_defaults(mode, properties)
    members = list(dict.fromkeys(members))
    recs = {m: state.record("PIF", m) for m in members}
    management = next((m for m in members if recs[m]["management"]), None)
    with_ip = [m for m in members if _has_ip(recs[m])]
    primary = management or (with_ip[0] if with_ip else members[0])
    address_type = recs[primary]["primary_address_type"]
    for m in members:
        if recs[m]["primary_address_type"] != address_type:
            raise ApiError("PIF_INCOMPATIBLE_PRIMARY_ADDRESS_TYPE", m)
    for m in members:
        assert_managed(state, m)
        kind, rec = root_kind(state, m)
        if kind == "physical" and rec["bond_slave_of"] != NULL_REF:
            if state.store.get("Bond", rec["bond_slave_of"]) is not None:
                raise ApiError("PIF_ALREADY_BONDED", m)
        elif kind == "vlan":
            raise ApiError("PIF_VLAN_EXISTS", rec["device"])
        elif kind == "tunnel":
            raise ApiError("IS_TUNNEL_ACCESS_PIF", m)
    if len({recs[m]["host"] for m in members}) != 1:
        raise ApiError("PIF_CANNOT_BOND_CROSS_HOST")
    first_props = recs[members[0]]["properties"]
    if any(recs[m]["properties"] != first_props for m in members):
        raise ApiError("INCOMPATIBLE_PIF_PROPERTIES")
    if len(with_ip) > 1:
        raise ApiError("PIF_BOND_MORE_THAN_ONE_IP")
    net_rec = state.record("network", network)
    master = new_object(
        state,
        "PIF",
        {
            "device": _bond_device(state, host),
            "network": network,
            "host": host,
            "MAC": mac or recs[primary]["MAC"],
            "MTU": net_rec["MTU"],
            "VLAN": -1,
            "metrics": make_pif_metrics(state),
            "physical": False,
            "currently_attached": True,
            "ip_configuration_mode": "None",
            "management": False,
            "other_config": {},
            "IPv6": [""],
            "primary_address_type": address_type,
            "managed": True,
            "properties": dict(first_props),
        },
    )
    bond = new_object(
        state,
        "Bond",
        {
            "master": master,
            "other_config": {},
            "primary_slave": primary,
            "mode": mode,
            "properties": properties,
            "links_up": 0,
            "auto_update_mac": not mac,
        },
    )
    member_networks = [recs[m]["network"] for m in members]
    for m in members:
        update_object(state, "PIF", m, {"bond_slave_of": bond})
    _move_ip(state, primary, master)
    if management is not None:
        _move_management(state, management, master)
    for m in members:
        _move_stacked(state, m, master)
    await _move_vifs(state, member_networks, network)
    if any(recs[m]["disallow_unplug"] for m in members):
        update_object(state, "PIF", master, {"disallow_unplug": True})
        for m in members:
            update_object(state, "PIF", m, {"disallow_unplug": False})
    return bond


async def destroy_bond(state: ServerState, bond: str) -> None:
    """Move everything back to the primary slave and remove the bond (writes not awaited)."""
    rec = state.record("Bond", bond)
    master = rec["master"]
    mrec = state.record("PIF", master)
    primary = rec["primary_slave"]
    slaves = list(rec["slaves"])
    if state.store.get("PIF", primary) is None:
        primary = slaves[0] if slaves else NULL_REF
    if primary != NULL_REF:
        _move_ip(state, master, primary)
        if mrec["management"]:
            _move_management(state, master, primary)
        _move_stacked(state, master, primary)
        await _move_vifs(state, [mrec["network"]], state.record("PIF", primary)["network"])
        if mrec["disallow_unplug"]:
            update_object(state, "PIF", primary, {"disallow_unplug": True})
    drop_object(state, "Bond", bond)
    drop_object(state, "PIF_metrics", mrec["metrics"])
    drop_object(state, "PIF", master)
    for s in slaves:
        if state.store.get("PIF", s) is not None:
            update_object(state, "PIF", s, {"bond_slave_of": NULL_REF})


@handler("Bond.create")
async def create(
    state: ServerState,
    ctx: CallContext,
    network: str,
    members: list[str],
    MAC: str,
    mode: str,
    properties: dict[str, str],
) -> Any:
    try:
        return await create_bond(state, network, members, MAC, mode, properties)
    finally:
        await state.store.sync()


@handler("Bond.destroy")
async def destroy(state: ServerState, ctx: CallContext, self: str) -> Any:
    try:
        await destroy_bond(state, self)
    finally:
        await state.store.sync()
    return ""


@handler("Bond.set_mode")
async def set_mode(state: ServerState, ctx: CallContext, self: str, value: str) -> Any:
    """The new mode keeps only the properties it knows, plus its defaults."""
    rec = state.record("Bond", self)
    known = REQUIREMENTS.get(value, {})
    kept = {k: v for k, v in rec["properties"].items() if k in known and known[k][1](v)}
    state.store.update("Bond", self, {"mode": value, "properties": with_defaults(value, kept)})
    await state.store.sync()
    return ""


@handler("Bond.set_property")
async def set_property(
    state: ServerState, ctx: CallContext, self: str, name: str, value: str
) -> Any:
    rec = state.record("Bond", self)
    validate_property(rec["mode"], name, value)
    state.store.update("Bond", self, {"properties": {**rec["properties"], name: value}})
    await state.store.sync()
    return ""
