"""VLAN, Bond and tunnel records with the reference's checks and errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.api.network_helpers import (
    TWO_NICS,
    new_network,
    new_vif,
    new_vm,
    nic,
    pif,
    set_power,
    use_hostnet,
    world_on,
)
from tests.api.world import World


@pytest.fixture
async def w(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    world = await world_on(data_dir, monkeypatch, TWO_NICS)
    yield world
    await world.close()


# ---- VLAN ----------------------------------------------------------------------------------
async def test_vlan_create_and_destroy(w: World) -> None:
    tagged, trec = pif(w, "enp2s0")
    net = await new_network(w, name_label="vlan 42")
    vlan = await w.call("VLAN.create", w.root, tagged, "42", net)
    rec = await w.record("VLAN", vlan)
    assert (rec["tagged_PIF"], rec["tag"]) == (tagged, 42)
    untagged = await w.record("PIF", rec["untagged_PIF"])
    assert (untagged["device"], untagged["VLAN"], untagged["MAC"]) == (
        "enp2s0",
        42,
        "fe:ff:ff:ff:ff:ff",
    )
    assert (untagged["physical"], untagged["network"], untagged["VLAN_master_of"]) == (
        False,
        net,
        vlan,
    )
    assert untagged["metrics"] == trec["metrics"] and untagged["MTU"] == trec["MTU"]
    assert untagged["currently_attached"] is True
    assert await w.call("PIF.get_VLAN_slave_of", w.root, tagged) == [vlan]
    assert await w.call("network.get_PIFs", w.root, net) == [rec["untagged_PIF"]]
    assert await w.fail("PIF.forget", w.root, tagged) == ["PIF_VLAN_STILL_EXISTS", tagged]
    assert await w.fail("PIF.forget", w.root, rec["untagged_PIF"]) == [
        "PIF_VLAN_STILL_EXISTS",
        rec["untagged_PIF"],
    ]
    await w.call("VLAN.destroy", w.root, vlan)
    assert w.store.get("VLAN", vlan) is None and w.store.get("PIF", rec["untagged_PIF"]) is None
    assert await w.call("PIF.get_VLAN_slave_of", w.root, tagged) == []
    assert w.store.get("PIF_metrics", trec["metrics"]) is not None


async def test_vlan_errors(w: World) -> None:
    tagged, _ = pif(w, "enp1s0")
    nat, nat_rec = pif(w, "nat0")
    net = await new_network(w)
    for tag in ("-1", "4095"):
        assert await w.fail("VLAN.create", w.root, tagged, tag, net) == ["VLAN_TAG_INVALID", tag]
    assert await w.fail("VLAN.create", w.root, tagged, "1", nat_rec["network"]) == [
        "NETWORK_ALREADY_CONNECTED",
        w.state.host_ref,
        nat,
    ]
    assert await w.fail("VLAN.create", w.root, nat, "1", net) == ["PIF_UNMANAGED", nat]
    unmanaged = await new_network(w, managed=False)
    assert await w.fail("VLAN.create", w.root, tagged, "1", unmanaged) == [
        "NETWORK_UNMANAGED",
        unmanaged,
    ]
    vlan = await w.call("VLAN.create", w.root, tagged, "7", net)
    other = await new_network(w)
    assert await w.fail("VLAN.create", w.root, tagged, "7", other) == ["PIF_VLAN_EXISTS", "enp1s0"]
    untagged = (await w.record("VLAN", vlan))["untagged_PIF"]
    assert await w.fail("VLAN.create", w.root, untagged, "8", other) == ["PIF_IS_VLAN", untagged]
    assert await w.fail("VLAN.create", w.root, "OpaqueRef:x", "8", other) == [
        "HANDLE_INVALID",
        "PIF",
        "OpaqueRef:x",
    ]


async def test_vlan_in_use_by_the_kernel(w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    with_vlan = replace(
        TWO_NICS,
        interfaces=(
            *TWO_NICS.interfaces,
            nic(
                "enp1s0.100",
                "52:54:00:00:00:01",
                physical=False,
                kind="vlan",
                vlan_parent="enp1s0",
                vlan_id=100,
            ),
        ),
    )
    use_hostnet(monkeypatch, with_vlan)
    tagged, _ = pif(w, "enp1s0")
    net = await new_network(w)
    assert await w.fail("VLAN.create", w.root, tagged, "100", net) == [
        "VLAN_IN_USE",
        "enp1s0",
        "100",
    ]


async def test_vlan_destroy_refused_while_a_running_vm_uses_it(w: World) -> None:
    tagged, _ = pif(w, "enp1s0")
    net = await new_network(w)
    vlan = await w.call("VLAN.create", w.root, tagged, "9", net)
    vm = await new_vm(w)
    vif = await new_vif(w, vm, net)
    set_power(w, vm, "Running")
    await w.call("VIF.plug", w.root, vif)
    assert await w.fail("VLAN.destroy", w.root, vlan) == ["VIF_IN_USE", net, vif]
    untagged = (await w.record("VLAN", vlan))["untagged_PIF"]
    assert await w.fail("PIF.destroy", w.root, tagged) == ["PIF_IS_PHYSICAL"]
    await w.call("VIF.unplug", w.root, vif)
    await w.call("PIF.destroy", w.root, untagged)
    assert w.store.get("VLAN", vlan) is None


async def test_deprecated_pif_create_vlan(w: World) -> None:
    net = await new_network(w)
    host = w.state.host_ref
    untagged = await w.call("PIF.create_VLAN", w.root, "enp2s0", net, host, "11")
    rec = await w.record("PIF", untagged)
    assert (rec["device"], rec["VLAN"], rec["network"]) == ("enp2s0", 11, net)
    assert await w.fail("PIF.create_VLAN", w.root, "nope0", net, host, "11") == [
        "INVALID_VALUE",
        "device",
        "nope0",
    ]


# ---- Bond ----------------------------------------------------------------------------------
async def test_bond_create_moves_what_the_members_carried(w: World) -> None:
    p1, r1 = pif(w, "enp1s0")
    p2, _ = pif(w, "enp2s0")
    vm = await new_vm(w)
    vif = await new_vif(w, vm, r1["network"])
    net = await new_network(w, name_label="bond")
    bond = await w.call("Bond.create", w.root, net, [p1, p2, p1], "", "active-backup")
    brec = await w.record("Bond", bond)
    master = await w.record("PIF", brec["master"])
    assert set(brec["slaves"]) == {p1, p2} and brec["primary_slave"] == p1
    assert brec["mode"] == "active-backup" and brec["auto_update_mac"] is True
    assert brec["properties"] == {} and brec["links_up"] == 0
    assert (master["device"], master["MAC"], master["network"]) == ("bond0", r1["MAC"], net)
    assert master["management"] is True and master["IP"] == "192.0.2.10"
    assert master["bond_master_of"] == [bond] and master["physical"] is False
    s1 = await w.record("PIF", p1)
    assert s1["management"] is False and s1["IP"] == "" and s1["bond_slave_of"] == bond
    assert await w.call("VIF.get_network", w.root, vif) == net
    assert await w.call("host.get_management_interface", w.root, w.state.host_ref) == brec["master"]
    assert await w.fail("PIF.forget", w.root, p2) == ["PIF_ALREADY_BONDED", p2]
    other = await new_network(w)
    assert await w.fail("Bond.create", w.root, other, [p2], "") == ["PIF_ALREADY_BONDED", p2]

    await w.call("Bond.destroy", w.root, bond)
    assert w.store.get("Bond", bond) is None and w.store.get("PIF", brec["master"]) is None
    back = await w.record("PIF", p1)
    assert back["management"] is True and back["IP"] == "192.0.2.10"
    assert back["bond_slave_of"] == "OpaqueRef:NULL"
    assert await w.call("VIF.get_network", w.root, vif) == r1["network"]


async def test_bond_errors(w: World) -> None:
    p1, _ = pif(w, "enp1s0")
    p2, _ = pif(w, "enp2s0")
    nat, nat_rec = pif(w, "nat0")
    net = await new_network(w)
    assert await w.fail("Bond.create", w.root, net, [], "") == ["PIF_BOND_NEEDS_MORE_MEMBERS"]
    assert await w.fail("Bond.create", w.root, net, [p1, p2], "nope") == ["MAC_INVALID", "nope"]
    assert await w.fail("Bond.create", w.root, net, [p1, p2], "", "balance-slb", {"x": "1"}) == [
        "INVALID_VALUE",
        "properties",
        "x = 1",
    ]
    assert await w.fail("Bond.create", w.root, net, [p1, nat], "") == ["PIF_UNMANAGED", nat]
    assert await w.fail("Bond.create", w.root, nat_rec["network"], [p1, p2], "") == [
        "NETWORK_ALREADY_CONNECTED",
        w.state.host_ref,
        nat,
    ]
    w.store.update("PIF", p2, {"ip_configuration_mode": "DHCP"})
    assert await w.fail("Bond.create", w.root, net, [p1, p2], "") == ["PIF_BOND_MORE_THAN_ONE_IP"]
    w.store.update("PIF", p2, {"ip_configuration_mode": "None", "properties": {"gro": "off"}})
    assert await w.fail("Bond.create", w.root, net, [p1, p2], "") == ["INCOMPATIBLE_PIF_PROPERTIES"]


async def test_bond_modes_and_properties(w: World) -> None:
    p1, _ = pif(w, "enp1s0")
    p2, _ = pif(w, "enp2s0")
    net = await new_network(w)
    bond = await w.call(
        "Bond.create", w.root, net, [p2, p1], "02:00:00:00:00:0b", "lacp", {"lacp-time": "fast"}
    )
    rec = await w.record("Bond", bond)
    assert rec["properties"] == {
        "lacp-time": "fast",
        "hashing_algorithm": "tcpudp_ports",
        "lacp-fallback-ab": "true",
    }
    assert rec["auto_update_mac"] is False
    assert (await w.record("PIF", rec["master"]))["MAC"] == "02:00:00:00:00:0b"
    await w.call("Bond.set_property", w.root, bond, "lacp-aggregation-key", "42")
    assert await w.fail("Bond.set_property", w.root, bond, "lacp-time", "sometimes") == [
        "INVALID_VALUE",
        "properties",
        "lacp-time = sometimes",
    ]
    await w.call("Bond.set_mode", w.root, bond, "balance-slb")
    assert await w.call("Bond.get_properties", w.root, bond) == {}
    await w.call("Bond.set_mode", w.root, bond, "lacp")
    assert (await w.call("Bond.get_properties", w.root, bond))["lacp-time"] == "slow"


# ---- tunnel --------------------------------------------------------------------------------
async def test_tunnels_need_open_vswitch(w: World) -> None:
    p1, _ = pif(w, "enp1s0")
    nat, nat_rec = pif(w, "nat0")
    net = await new_network(w)
    assert await w.fail("tunnel.create", w.root, p1, net) == ["OPENVSWITCH_NOT_ACTIVE"]
    assert await w.fail("tunnel.create", w.root, nat, net, "vxlan") == ["PIF_UNMANAGED", nat]
    assert await w.fail("tunnel.create", w.root, p1, nat_rec["network"]) == [
        "NETWORK_ALREADY_CONNECTED",
        w.state.host_ref,
        nat,
    ]


async def test_tunnel_with_open_vswitch_reported(w: World) -> None:
    host = w.store.get("host", w.state.host_ref)
    assert host is not None
    version = {**host["software_version"], "network_backend": "openvswitch"}
    w.store.update("host", w.state.host_ref, {"software_version": version})
    p1, r1 = pif(w, "enp1s0")
    p2, _ = pif(w, "enp2s0")
    net = await new_network(w)
    assert await w.fail("tunnel.create", w.root, p2, net) == ["TRANSPORT_PIF_NOT_CONFIGURED", p2]
    tunnel = await w.call("tunnel.create", w.root, p1, net, "vxlan")
    rec = await w.record("tunnel", tunnel)
    assert rec["status"] == {"active": "false"} and rec["protocol"] == "vxlan"
    access = await w.record("PIF", rec["access_PIF"])
    assert access["device"] == "tunnel0" and access["tunnel_access_PIF_of"] == [tunnel]
    assert access["metrics"] == r1["metrics"]
    assert await w.call("PIF.get_tunnel_transport_PIF_of", w.root, p1) == [tunnel]
    assert await w.fail("PIF.forget", w.root, p1) == ["PIF_IS_MANAGEMENT_INTERFACE", p1]
    other = await new_network(w)
    assert await w.fail("VLAN.create", w.root, rec["access_PIF"], "3", other) == [
        "IS_TUNNEL_ACCESS_PIF",
        rec["access_PIF"],
    ]
    await w.call("tunnel.destroy", w.root, tunnel)
    assert w.store.get("tunnel", tunnel) is None
    assert await w.call("PIF.get_tunnel_transport_PIF_of", w.root, p1) == []
