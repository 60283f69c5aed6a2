"""PIFs: discovered at start, refreshed without duplicates, management flag, PIF messages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from openxapi.api.handlers.pif import management_device, sync_host_networks
from openxapi.net.discovery import HostNetwork, candidate_interfaces, discover
from tests.api.network_helpers import (
    CONTAINER,
    LO,
    LOOPBACK_ONLY,
    TWO_NICS,
    new_network,
    nic,
    pif,
    pifs_by_device,
    use_hostnet,
    world_on,
)
from tests.api.world import World, open_world


@pytest.fixture
async def two_nics(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    w = await world_on(data_dir, monkeypatch, TWO_NICS)
    yield w
    await w.close()


def management_pifs(w: World) -> list[str]:
    return [ref for ref, rec in w.store.table("PIF").items() if rec["management"]]


async def test_real_host_interfaces_become_pifs(world: World) -> None:
    hostnet = discover()
    mgmt = management_device(world.state, world.state.host_ref, hostnet)
    expected = {i.name for i in candidate_interfaces(hostnet, mgmt)}
    devices = pifs_by_device(world)
    assert set(devices) == expected | {"nat0"}
    assert len(management_pifs(world)) == 1
    mgmt_ref = await world.call("host.get_management_interface", world.root, world.state.host_ref)
    assert mgmt_ref == management_pifs(world)[0]
    if mgmt:
        assert mgmt_ref == devices[mgmt]
    for name in expected:
        _, rec = pif(world, name)
        iface = hostnet.by_name(name)
        assert iface is not None
        assert (rec["MAC"], rec["MTU"], rec["physical"]) == (iface.mac, iface.mtu, True)
        net = world.store.get("network", rec["network"])
        assert net is not None and net["bridge"].startswith("xenbr")
        assert rec["host"] == world.state.host_ref


async def test_two_nics(two_nics: World) -> None:
    w = two_nics
    assert set(pifs_by_device(w)) == {"enp1s0", "enp2s0", "nat0"}  # docker0 is software
    ref1, p1 = pif(w, "enp1s0")
    _, p2 = pif(w, "enp2s0")
    assert management_pifs(w) == [ref1]
    assert (p1["IP"], p1["netmask"], p1["gateway"], p1["DNS"]) == (
        "192.0.2.10",
        "255.255.255.0",
        "192.0.2.1",
        "192.0.2.53",
    )
    assert p1["ip_configuration_mode"] == "Static" and p1["IPv6"] == ["2001:db8::10/64"]
    assert p1["ipv6_configuration_mode"] == "Static"
    assert p1["currently_attached"] is True and p1["properties"] == {"gro": "on"}
    assert p2["currently_attached"] is False and p2["ip_configuration_mode"] == "None"
    assert p2["IP"] == "" and p2["gateway"] == "" and p2["DNS"] == ""
    nets = {
        ref: w.store.get("network", rec["network"]) for ref, rec in w.store.table("PIF").items()
    }
    bridges = sorted(n["bridge"] for n in nets.values() if n is not None)
    assert bridges == ["xapi0", "xenbr0", "xenbr1"]
    assert w.store.get("network", p1["network"])["name_label"] == "Pool-wide network 0"  # type: ignore[index]
    metrics = w.store.get("PIF_metrics", p1["metrics"])
    assert metrics is not None
    assert (metrics["carrier"], metrics["speed"], metrics["duplex"], metrics["pci_bus_path"]) == (
        True,
        1000,
        True,
        "0000:01:00.0",
    )
    assert metrics["vendor_id"] == "8086" and metrics["last_updated"] != "19700101T00:00:00Z"
    host = w.store.get("host", w.state.host_ref)
    assert host is not None and set(host["PIFs"]) == set(w.store.table("PIF"))


async def test_refresh_updates_in_place_and_never_duplicates(two_nics: World) -> None:
    w = two_nics
    before = pifs_by_device(w)
    changed = HostNetwork(
        interfaces=(
            LO,
            nic("enp1s0", "52:54:00:00:00:01", "192.0.2.77/25", pci="0000:01:00.0", mtu=9000),
            nic("enp3s0", "52:54:00:00:00:03", pci="0000:03:00.0"),
        ),
        default_dev="enp1s0",
        default_gateway="192.0.2.126",
    )
    sync_host_networks(w.state, w.state.host_ref, changed)
    sync_host_networks(w.state, w.state.host_ref, changed)
    after = pifs_by_device(w)
    assert {k: after[k] for k in before} == before
    assert set(after) == {"enp1s0", "enp2s0", "enp3s0", "nat0"}
    _, p1 = pif(w, "enp1s0")
    assert (p1["IP"], p1["netmask"], p1["MTU"], p1["gateway"]) == (
        "192.0.2.77",
        "255.255.255.128",
        9000,
        "192.0.2.126",
    )
    _, gone = pif(w, "enp2s0")
    assert gone["currently_attached"] is False
    assert w.store.get("PIF_metrics", gone["metrics"])["carrier"] is False  # type: ignore[index]
    _, new = pif(w, "enp3s0")
    assert w.store.get("network", new["network"])["bridge"] == "xenbr2"  # type: ignore[index]
    assert len(w.store.table("PIF_metrics")) == len(w.store.table("PIF"))
    assert sum(1 for r in w.store.table("network").values() if r["bridge"] == "xenapi") == 1


async def test_restart_keeps_the_same_records(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_hostnet(monkeypatch, TWO_NICS)
    w = await open_world(data_dir, durable=True)
    pifs, nets = set(w.store.table("PIF")), set(w.store.table("network"))
    mgmt = management_pifs(w)
    w2 = await w.restart()
    try:
        assert set(w2.store.table("PIF")) == pifs
        assert set(w2.store.table("network")) == nets
        assert management_pifs(w2) == mgmt
    finally:
        await w2.close()


async def test_loopback_only_host_manages_through_the_nat_pif(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = await world_on(data_dir, monkeypatch, LOOPBACK_ONLY)
    try:
        assert set(pifs_by_device(w)) == {"nat0"}
        nat_ref, _ = pif(w, "nat0")
        assert management_pifs(w) == [nat_ref]
        assert await w.call("host.get_management_interface", w.root, w.state.host_ref) == nat_ref
    finally:
        await w.close()


async def test_container_interface_is_described(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = await world_on(data_dir, monkeypatch, CONTAINER)
    try:
        ref, rec = pif(w, "eth0")
        assert management_pifs(w) == [ref]
        assert (rec["IP"], rec["gateway"], rec["physical"]) == ("172.17.0.2", "172.17.0.1", True)
    finally:
        await w.close()


async def test_management_follows_the_host_address(two_nics: World) -> None:
    w = two_nics
    moved = replace(
        TWO_NICS,
        interfaces=(
            LO,
            nic("enp1s0", "52:54:00:00:00:01", "192.0.2.10/24", pci="0000:01:00.0"),
            nic("enp2s0", "52:54:00:00:00:02", "10.9.0.5/16", pci="0000:02:00.0"),
        ),
    )
    w.store.update("host", w.state.host_ref, {"address": "10.9.0.5"})
    sync_host_networks(w.state, w.state.host_ref, moved)
    assert management_pifs(w) == [pif(w, "enp2s0")[0]]


async def test_scan_introduces_new_interfaces(
    two_nics: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = two_nics
    more = replace(TWO_NICS, interfaces=(*TWO_NICS.interfaces, nic("enp9s0", "52:54:00:00:00:09")))
    use_hostnet(monkeypatch, more)
    await w.call("PIF.scan", w.root, w.state.host_ref)
    assert "enp9s0" in pifs_by_device(w)
    assert await w.fail("PIF.scan", w.root, "OpaqueRef:nope") == [
        "HANDLE_INVALID",
        "host",
        "OpaqueRef:nope",
    ]


async def test_introduce_and_forget(two_nics: World) -> None:
    w, host = two_nics, two_nics.state.host_ref
    assert await w.fail("PIF.introduce", w.root, host, "zz", "docker0") == ["MAC_INVALID", "zz"]
    assert await w.fail("PIF.introduce", w.root, host, "", "enp1s0") == [
        "DUPLICATE_PIF_DEVICE_NAME",
        "enp1s0",
    ]
    assert await w.fail("PIF.introduce", w.root, host, "02:42:00:00:00:99", "docker0") == [
        "COULD_NOT_FIND_NETWORK_INTERFACE_WITH_SPECIFIED_DEVICE_NAME_AND_MAC_ADDRESS",
        "docker0",
        "02:42:00:00:00:99",
    ]
    assert await w.fail("PIF.introduce", w.root, host, "", "nosuch") == ["MAC_INVALID", ""]
    ref = await w.call("PIF.introduce", w.root, host, "02:42:00:00:00:01".upper(), "docker0")
    rec = w.store.get("PIF", ref)
    assert rec is not None and rec["MAC"] == "02:42:00:00:00:01" and rec["IP"] == "172.17.0.1"
    net = rec["network"]
    metrics = rec["metrics"]
    mgmt = management_pifs(w)[0]
    assert await w.fail("PIF.forget", w.root, mgmt) == ["PIF_IS_MANAGEMENT_INTERFACE", mgmt]
    await w.call("PIF.forget", w.root, ref)
    assert w.store.get("PIF", ref) is None and w.store.get("PIF_metrics", metrics) is None
    assert w.store.get("network", net) is not None
    assert ref not in w.store.get("host", host)["PIFs"]  # type: ignore[index]


async def test_db_introduce_and_forget(world: World) -> None:
    net = next(iter(world.store.table("network")))
    host = world.state.host_ref
    ref = await world.call(
        "PIF.db_introduce",
        world.root,
        "eth42",
        net,
        host,
        "02:00:00:00:00:42",
        "1500",
        "-1",
        True,
        "DHCP",
        "",
        "",
        "",
        "",
        "OpaqueRef:NULL",
        "OpaqueRef:NULL",
        False,
        {"k": "v"},
    )
    rec = await world.record("PIF", ref)
    assert rec["device"] == "eth42" and rec["ip_configuration_mode"] == "DHCP"
    assert rec["other_config"] == {"k": "v"} and rec["managed"] is True
    assert ref in await world.call("network.get_PIFs", world.root, net)
    await world.call("PIF.db_forget", world.root, ref)
    assert ref not in await world.call("network.get_PIFs", world.root, net)


async def test_small_setters(two_nics: World) -> None:
    w = two_nics
    mgmt = management_pifs(w)[0]
    other, _ = pif(w, "enp2s0")
    assert await w.fail("PIF.set_primary_address_type", w.root, mgmt, "IPv6") == [
        "PIF_IS_MANAGEMENT_INTERFACE",
        mgmt,
    ]
    await w.call("PIF.set_primary_address_type", w.root, other, "IPv6")
    assert await w.call("PIF.get_primary_address_type", w.root, other) == "IPv6"
    await w.call("PIF.set_disallow_unplug", w.root, other, True)
    assert await w.call("PIF.get_disallow_unplug", w.root, other) is True


async def test_management_interface_of_a_bad_host(world: World) -> None:
    assert await world.fail("host.get_management_interface", world.root, "OpaqueRef:x") == [
        "HANDLE_INVALID",
        "host",
        "OpaqueRef:x",
    ]


async def test_introduce_unmanaged(two_nics: World) -> None:
    w = two_nics
    ref = await w.call("PIF.introduce", w.root, w.state.host_ref, "", "docker0", False)
    rec = await w.record("PIF", ref)
    net = await w.record("network", rec["network"])
    assert rec["managed"] is False and (net["bridge"], net["managed"]) == ("", False)
    other, _ = pif(w, "enp2s0")
    assert await w.fail("VLAN.create", w.root, other, "3", rec["network"]) == [
        "NETWORK_UNMANAGED",
        rec["network"],
    ]
    assert await w.fail("VLAN.create", w.root, ref, "3", await new_network(w)) == [
        "PIF_UNMANAGED",
        ref,
    ]
