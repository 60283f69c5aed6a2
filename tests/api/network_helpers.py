"""Shared helpers for the networking API tests: made-up hosts, VMs, networks and VIFs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from openxapi.api.handlers import pif as pif_module
from openxapi.net.discovery import Address, HostNetwork, Interface
from tests.api.world import World, create_args, open_world


def nic(
    name: str,
    mac: str,
    *addresses: str,
    physical: bool = True,
    kind: str = "ethernet",
    up: bool = True,
    pci: str = "",
    mtu: int = 1500,
    vlan_parent: str = "",
    vlan_id: int = -1,
) -> Interface:
    """An interface as discovery would report it; addresses as "a.b.c.d/len"."""
    addrs = []
    for a in addresses:
        ip, plen = a.split("/")
        addrs.append(Address(ip, int(plen), "inet6" if ":" in ip else "inet"))
    return Interface(
        name=name,
        mac=mac,
        mtu=mtu,
        kind=kind,
        physical=physical,
        admin_up=up,
        carrier=up,
        speed=1000 if physical else 0,
        duplex=physical,
        pci_bus_path=pci,
        vendor_id="8086" if pci else "",
        device_id="10d3" if pci else "",
        vlan_parent=vlan_parent,
        vlan_id=vlan_id,
        addresses=tuple(addrs),
    )


LO = nic("lo", "00:00:00:00:00:00", "127.0.0.1/8", physical=False, kind="loopback")

TWO_NICS = HostNetwork(
    interfaces=(
        LO,
        nic("enp1s0", "52:54:00:00:00:01", "192.0.2.10/24", "2001:db8::10/64", pci="0000:01:00.0"),
        nic("enp2s0", "52:54:00:00:00:02", up=False, pci="0000:02:00.0"),
        nic("docker0", "02:42:00:00:00:01", "172.17.0.1/16", physical=False, kind="bridge"),
    ),
    default_dev="enp1s0",
    default_gateway="192.0.2.1",
    dns=("192.0.2.53", "fd00::53"),
)

LOOPBACK_ONLY = HostNetwork(interfaces=(LO,))

CONTAINER = HostNetwork(
    interfaces=(LO, nic("eth0", "02:42:ac:11:00:02", "172.17.0.2/16", physical=False, kind="veth")),
    default_dev="eth0",
    default_gateway="172.17.0.1",
)


def use_hostnet(monkeypatch: pytest.MonkeyPatch, hostnet: HostNetwork) -> None:
    """Make the server see ``hostnet`` instead of the real machine from now on."""
    monkeypatch.setattr(pif_module, "discover", lambda: hostnet)


async def world_on(data_dir: Path, monkeypatch: pytest.MonkeyPatch, hostnet: HostNetwork) -> World:
    use_hostnet(monkeypatch, hostnet)
    return await open_world(data_dir)


def pifs_by_device(w: World) -> dict[str, str]:
    return {rec["device"]: ref for ref, rec in w.store.table("PIF").items() if rec["VLAN"] == -1}


def pif(w: World, device: str) -> tuple[str, dict[str, Any]]:
    ref = pifs_by_device(w)[device]
    rec = w.store.get("PIF", ref)
    assert rec is not None
    return ref, rec


async def new_vm(w: World, **values: Any) -> str:
    ref = await w.call("VM.create", w.root, create_args(w.api, "VM", **values))
    assert isinstance(ref, str)
    return ref


async def new_network(w: World, **values: Any) -> str:
    ref = await w.call("network.create", w.root, create_args(w.api, "network", **values))
    assert isinstance(ref, str)
    return ref


def vif_args(w: World, vm: str, net: str, device: str = "0", **values: Any) -> dict[str, Any]:
    return create_args(w.api, "VIF", VM=vm, network=net, device=device, MTU="1500", **values)


async def new_vif(w: World, vm: str, net: str, device: str = "0", **values: Any) -> str:
    ref = await w.call("VIF.create", w.root, vif_args(w, vm, net, device, **values))
    assert isinstance(ref, str)
    return ref


def set_power(w: World, vm: str, power: str) -> None:
    """Put a VM in a power state directly (the lifecycle work does this for real)."""
    from openxapi.api.handlers.vif import refresh_vm_vifs

    w.store.update("VM", vm, {"power_state": power, "resident_on": w.state.host_ref, "domid": 1})
    refresh_vm_vifs(w.state, vm)


def nat_network(w: World) -> str:
    for rec in w.store.table("PIF").values():
        if rec["device"] == "nat0" and not rec["physical"]:
            return str(rec["network"])
    raise AssertionError("no NAT network")
