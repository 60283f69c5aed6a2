"""tunnel: GRE/VXLAN tunnels need Open vSwitch, which this server's hosts do not run.

The reference's checks are made in its order, so a client sees the same error for the
same mistake; a well-formed request ends at OPENVSWITCH_NOT_ACTIVE because no host
reports ``network_backend: openvswitch`` in its software_version.
"""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.handlers.network import drop_object, new_object, update_object
from openxapi.api.handlers.pif import assert_managed, assert_no_other_local_pifs, root_kind
from openxapi.api.handlers.vlan import assert_can_unplug, assert_network_managed
from openxapi.api.registry import handler
from openxapi.api.state import ServerState, new_uuid
from openxapi.errors import ApiError
from openxapi.net.mac import generate_mac
from openxapi.spec.model import NULL_REF


def _tunnel_device(state: ServerState, host: str) -> str:
    used = {
        rec["device"]
        for rec in state.store.table("PIF").values()
        if rec["host"] == host and rec["tunnel_access_PIF_of"]
    }
    n = 0
    while f"tunnel{n}" in used:
        n += 1
    return f"tunnel{n}"


@handler("tunnel.create")
async def create(
    state: ServerState, ctx: CallContext, transport_PIF: str, network: str, protocol: str
) -> Any:
    host = state.record("PIF", transport_PIF)["host"]
    assert_network_managed(state, network)
    assert_no_other_local_pifs(state, host, network)
    assert_managed(state, transport_PIF)
    kind, rec = root_kind(state, transport_PIF)
    if kind == "physical" and rec["bond_slave_of"] != NULL_REF:
        raise ApiError("CANNOT_ADD_TUNNEL_TO_BOND_SLAVE", transport_PIF)
    if kind == "tunnel":
        raise ApiError("IS_TUNNEL_ACCESS_PIF", transport_PIF)
    for hrec in state.store.table("host").values():
        if hrec["software_version"].get("network_backend") != "openvswitch":
            raise ApiError("OPENVSWITCH_NOT_ACTIVE")
    if rec["ip_configuration_mode"] == "None":
        raise ApiError("TRANSPORT_PIF_NOT_CONFIGURED", transport_PIF)
    tunnel = new_object(
        state,
        "tunnel",
        {
            "transport_PIF": transport_PIF,
            "status": {"active": "false"},
            "other_config": {},
            "protocol": protocol,
        },
    )
    access = new_object(
        state,
        "PIF",
        {
            "device": _tunnel_device(state, host),
            "network": network,
            "host": host,
            "MAC": generate_mac(0, new_uuid()),
            "MTU": -1,
            "VLAN": -1,
            "metrics": rec["metrics"],
            "physical": False,
            "currently_attached": True,
            "ip_configuration_mode": "None",
            "management": False,
            "other_config": {},
            "IPv6": [""],
            "primary_address_type": rec["primary_address_type"],
            "managed": True,
        },
    )
    update_object(state, "tunnel", tunnel, {"access_PIF": access})
    await state.store.sync()
    return tunnel


@handler("tunnel.destroy")
async def destroy(state: ServerState, ctx: CallContext, self: str) -> Any:
    rec = state.record("tunnel", self)
    access = rec["access_PIF"]
    if state.store.get("PIF", access) is not None:
        assert_can_unplug(state, access)
        drop_object(state, "PIF", access)
    drop_object(state, "tunnel", self)
    await state.store.sync()
    return ""
