"""VLAN: tagged interfaces as records, with the reference's checks and errors.

A VLAN gets an untagged PIF on the same device (MAC ``fe:ff:ff:ff:ff:ff``, sharing the
tagged PIF's metrics) on the network given. No kernel VLAN device is made: guests on the
network are attached as policy says (restricted NAT unless the uplink is shared).
"""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.handlers.network import drop_object, new_object
from openxapi.api.handlers.pif import (
    assert_managed,
    assert_no_other_local_pifs,
    discovery_of,
    root_kind,
)
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF

VLAN_MAC = "fe:ff:ff:ff:ff:ff"
MAX_TAG = 4094


def assert_valid_tag(tag: int) -> None:
    if not 0 <= tag <= MAX_TAG:
        raise ApiError("VLAN_TAG_INVALID", tag)


def assert_network_managed(state: ServerState, network: str) -> None:
    if not state.record("network", network)["managed"]:
        raise ApiError("NETWORK_UNMANAGED", network)


def assert_network_without_trunks(state: ServerState, network: str) -> None:
    for vif in state.record("network", network)["VIFs"]:
        rec = state.store.get("VIF", vif)
        if rec is not None and rec["trunks"]:
            raise ApiError("NETWORK_INCOMPATIBLE_WITH_TRUNKS", network)


def _kernel_has_vlan(state: ServerState, device: str, tag: int) -> bool:
    hostnet = discovery_of(state)()
    return any(i.vlan_parent == device and i.vlan_id == tag for i in hostnet.interfaces)


def assert_can_unplug(state: ServerState, pif: str) -> None:
    """What the reference checks before bringing a PIF down."""
    rec = state.record("PIF", pif)
    assert_managed(state, pif)
    if rec["management"]:
        raise ApiError("PIF_IS_MANAGEMENT_INTERFACE", pif)
    network = state.store.get("network", rec["network"])
    for vif in network["VIFs"] if network is not None else []:
        vrec = state.store.get("VIF", vif)
        if vrec is None:
            continue
        vm = state.store.get("VM", vrec["VM"])
        live = vm is not None and vm["power_state"] in ("Running", "Paused")
        here = vm is not None and vm["resident_on"] == rec["host"]
        attaching = "attach" in vrec["current_operations"].values()
        if (attaching and here) or (vrec["currently_attached"] and here and live):
            raise ApiError("VIF_IN_USE", rec["network"], vif)
    if rec["disallow_unplug"]:
        raise ApiError("PIF_DOES_NOT_ALLOW_UNPLUG", pif)


async def create_vlan(state: ServerState, tagged_PIF: str, tag: int, network: str) -> str:
    """Check and create a VLAN and its untagged PIF (writes not awaited)."""
    host = state.record("PIF", tagged_PIF)["host"]
    assert_network_managed(state, network)
    assert_no_other_local_pifs(state, host, network)
    assert_managed(state, tagged_PIF)
    kind, pif = root_kind(state, tagged_PIF)
    if kind == "physical" and pif["bond_slave_of"] != NULL_REF:
        raise ApiError("CANNOT_ADD_VLAN_TO_BOND_SLAVE", tagged_PIF)
    if kind == "vlan":
        raise ApiError("PIF_IS_VLAN", tagged_PIF)
    if kind == "tunnel":
        raise ApiError("IS_TUNNEL_ACCESS_PIF", tagged_PIF)
    assert_valid_tag(tag)
    device = pif["device"]
    for rec in state.store.table("VLAN").values():
        if rec["tagged_PIF"] == tagged_PIF and rec["tag"] == tag:
            raise ApiError("PIF_VLAN_EXISTS", device)
    if _kernel_has_vlan(state, device, tag):
        raise ApiError("VLAN_IN_USE", device, tag)
    assert_network_without_trunks(state, network)
    vlan = new_object(state, "VLAN", {"tagged_PIF": tagged_PIF, "tag": tag, "other_config": {}})
    untagged = new_object(
        state,
        "PIF",
        {
            "device": device,
            "network": network,
            "host": host,
            "MAC": VLAN_MAC,
            "MTU": pif["MTU"],
            "VLAN": tag,
            "metrics": pif["metrics"],
            "physical": False,
            "currently_attached": True,
            "ip_configuration_mode": "None",
            "VLAN_master_of": vlan,
            "management": False,
            "other_config": {},
            "IPv6": [""],
            "primary_address_type": pif["primary_address_type"],
            "managed": True,
        },
    )
    state.store.update("VLAN", vlan, {"untagged_PIF": untagged})
    return vlan


async def destroy_vlan(state: ServerState, vlan: str) -> None:
    """Remove a VLAN and its untagged PIF, as the reference checks (writes not awaited)."""
    rec = state.record("VLAN", vlan)
    untagged = rec["untagged_PIF"]
    prec = state.store.get("PIF", untagged)
    if prec is None:
        drop_object(state, "VLAN", vlan)
        return
    if prec["bond_master_of"] or (
        prec["bond_slave_of"] != NULL_REF and state.store.get("Bond", prec["bond_slave_of"])
    ):
        raise ApiError("PIF_ALREADY_BONDED", untagged)
    if prec["VLAN"] < 0:
        raise ApiError("PIF_IS_PHYSICAL")
    assert_can_unplug(state, untagged)
    drop_object(state, "VLAN", vlan)
    drop_object(state, "PIF", untagged)


@handler("VLAN.create")
async def create(
    state: ServerState, ctx: CallContext, tagged_PIF: str, tag: int, network: str
) -> Any:
    ref = await create_vlan(state, tagged_PIF, tag, network)
    await state.store.sync()
    return ref


@handler("VLAN.destroy")
async def destroy(state: ServerState, ctx: CallContext, self: str) -> Any:
    await destroy_vlan(state, self)
    await state.store.sync()
    return ""
