"""Reading the host's interfaces: parsers, a fake sysfs, the real host, a namespace of our own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from openxapi.net.discovery import (
    Address,
    HostNetwork,
    Interface,
    candidate_interfaces,
    discover,
    parse_ip_addr,
    parse_ip_route,
    parse_proc_route,
    parse_resolv_conf,
    run_ip,
)

IP_ADDR = json.dumps(
    [
        {
            "ifindex": 1,
            "ifname": "lo",
            "addr_info": [
                {"family": "inet", "local": "127.0.0.1", "prefixlen": 8, "scope": "host"}
            ],
        },
        {
            "ifindex": 2,
            "ifname": "eth0",
            "addr_info": [
                {"family": "inet", "local": "192.0.2.2", "prefixlen": 24, "scope": "global"},
                {
                    "family": "inet6",
                    "local": "2001:db8::5",
                    "prefixlen": 64,
                    "scope": "global",
                    "dynamic": True,
                },
                {"family": "inet6", "local": "fe80::1", "prefixlen": 64, "scope": "link"},
            ],
        },
        {
            "ifindex": 3,
            "ifname": "eth0.100",
            "link": "eth0",
            "linkinfo": {"info_kind": "vlan", "info_data": {"protocol": "802.1Q", "id": 100}},
            "addr_info": [
                {
                    "family": "inet",
                    "local": "10.1.0.7",
                    "prefixlen": 16,
                    "scope": "global",
                    "dynamic": True,
                }
            ],
        },
        {"ifindex": 4, "ifname": "veth1", "linkinfo": {"info_kind": "veth"}, "addr_info": []},
        {"garbage": True},
    ]
)


def test_parse_ip_addr() -> None:
    facts = parse_ip_addr(IP_ADDR)
    assert set(facts) == {"lo", "eth0", "eth0.100", "veth1"}
    eth0 = facts["eth0"]["addresses"]
    assert eth0[0] == Address("192.0.2.2", 24, "inet", "global", False)
    assert eth0[0].netmask == "255.255.255.0" and eth0[0].cidr == "192.0.2.2/24"
    assert eth0[1].dynamic and eth0[1].family == "inet6" and eth0[1].netmask == ""
    vlan = facts["eth0.100"]
    assert (vlan["link_kind"], vlan["vlan_parent"], vlan["vlan_id"]) == ("vlan", "eth0", 100)
    assert vlan["addresses"][0].netmask == "255.255.0.0"
    assert facts["veth1"]["link_kind"] == "veth" and facts["veth1"]["vlan_id"] == -1


@pytest.mark.parametrize("text", ["", "not json", "{}", "[1, 2]"])
def test_parse_ip_addr_tolerates_junk(text: str) -> None:
    assert parse_ip_addr(text) == {}


def test_parse_routes() -> None:
    routes = json.dumps(
        [
            {"dst": "10.0.0.0/8", "dev": "eth1"},
            {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
        ]
    )
    assert parse_ip_route(routes) == ("eth0", "192.0.2.1")
    assert parse_ip_route("[]") == ("", "")
    assert parse_ip_route("junk") == ("", "")
    proc = (
        "Iface\tDestination\tGateway\tFlags\n"
        "eth1\t0000000A\t00000000\t0001\n"
        "eth0\t00000000\t010200C0\t0003\n"
    )
    assert parse_proc_route(proc) == ("eth0", "192.0.2.1")
    assert parse_proc_route("Iface\tDestination\n") == ("", "")


def test_parse_resolv_conf() -> None:
    text = (
        "# comment\nsearch example\nnameserver 10.0.0.53\nnameserver fd00::53\nnameserver bogus\n"
    )
    assert parse_resolv_conf(text) == ("10.0.0.53", "fd00::53")


# ---- a fake sysfs -------------------------------------------------------------------------
def _iface(root: Path, name: str, **files: str) -> Path:
    d = root / "class" / "net" / name
    d.mkdir(parents=True)
    defaults = {"address": "00:00:00:00:00:00", "mtu": "1500", "type": "1", "flags": "0x1003"}
    for k, v in {**defaults, **files}.items():
        (d / k).write_text(v + "\n")
    return d


@pytest.fixture
def fake_sys(tmp_path: Path) -> Path:
    pci = tmp_path / "devices" / "pci0000:00" / "0000:00:03.0"
    virtio = pci / "virtio2"
    virtio.mkdir(parents=True)
    (pci / "vendor").write_text("0x1af4\n")
    (pci / "device").write_text("0x1041\n")
    driver = tmp_path / "drivers" / "virtio_net"
    driver.mkdir(parents=True)
    (virtio / "driver").symlink_to(driver)
    eth0 = _iface(
        tmp_path,
        "eth0",
        address="02:FC:00:00:00:01",
        mtu="1400",
        carrier="1",
        speed="1000",
        duplex="full",
    )
    (eth0 / "device").symlink_to(virtio)
    _iface(tmp_path, "lo", type="772", flags="0x9")
    br = _iface(tmp_path, "br0", flags="0x1002")
    (br / "bridge").mkdir()
    _iface(tmp_path, "veth1", speed="-1")
    return tmp_path / "class" / "net"


def test_fake_sysfs(fake_sys: Path, tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.53\n")

    def ip(args: list[str]) -> str | None:
        if args[:3] == ["-j", "-d", "addr"]:
            return IP_ADDR
        if "-6" in args:
            return "[]"
        return json.dumps([{"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"}])

    net = discover(fake_sys, ip, resolv)
    assert [i.name for i in net.interfaces] == ["br0", "eth0", "lo", "veth1"]
    eth0 = net.by_name("eth0")
    assert eth0 is not None
    assert eth0.physical and eth0.kind == "ethernet" and eth0.admin_up and eth0.carrier
    assert (eth0.mac, eth0.mtu, eth0.speed, eth0.duplex) == ("02:fc:00:00:00:01", 1400, 1000, True)
    assert (eth0.pci_bus_path, eth0.vendor_id, eth0.device_id) == ("0000:00:03.0", "1af4", "1041")
    assert eth0.driver == "virtio_net"
    assert [a.address for a in eth0.ipv4] == ["192.0.2.2"]
    assert [a.address for a in eth0.ipv6_global] == ["2001:db8::5"]
    kinds = {i.name: (i.kind, i.physical, i.admin_up) for i in net.interfaces}
    assert kinds["lo"] == ("loopback", False, True)
    assert kinds["br0"] == ("bridge", False, False)
    assert kinds["veth1"] == ("veth", False, True)
    assert net.by_name("veth1") is not None and net.by_name("veth1").speed == 0  # type: ignore[union-attr]
    assert (net.default_dev, net.default_gateway, net.dns) == ("eth0", "192.0.2.1", ("192.0.2.53",))
    assert net.with_address("192.0.2.2") is eth0
    assert net.errors == ()


def test_without_ip_command_links_and_routes_still_come(fake_sys: Path, tmp_path: Path) -> None:
    route = tmp_path / "route"
    route.write_text("Iface\tDestination\tGateway\neth0\t00000000\t010200C0\n")
    net = discover(fake_sys, lambda args: None, tmp_path / "absent", route)
    assert {i.name for i in net.interfaces} == {"br0", "eth0", "lo", "veth1"}
    assert all(not i.addresses for i in net.interfaces)
    assert (net.default_dev, net.default_gateway) == ("eth0", "192.0.2.1")
    assert net.dns == () and net.errors


def test_missing_sysfs_is_an_error_not_a_crash(tmp_path: Path) -> None:
    net = discover(tmp_path / "nothing", lambda args: "[]", tmp_path / "absent")
    assert net.interfaces == () and net.errors


def test_candidates_are_hardware_plus_the_management_interface() -> None:
    hw2 = Interface("enp2s0", physical=True, pci_bus_path="0000:02:00.0")
    hw1 = Interface("enp1s0", physical=True, pci_bus_path="0000:01:00.0")
    usb = Interface("enx0011", physical=True)
    veth = Interface("eth0", kind="veth")
    lo = Interface("lo", kind="loopback", physical=False)
    net = HostNetwork(interfaces=(hw2, veth, lo, usb, hw1))
    assert candidate_interfaces(net) == [hw1, hw2, usb]
    assert candidate_interfaces(net, "eth0") == [hw1, hw2, usb, veth]
    assert candidate_interfaces(net, "lo") == [hw1, hw2, usb]


# ---- the real host ------------------------------------------------------------------------
def _ip_state() -> tuple[str | None, str | None]:
    return run_ip(["-j", "-d", "addr", "show"]), run_ip(["-j", "route", "show"])


def test_real_host_matches_sysfs_and_changes_nothing() -> None:
    before = _ip_state()
    net = discover()
    after = _ip_state()
    assert before == after
    assert sorted(i.name for i in net.interfaces) == sorted(os.listdir("/sys/class/net"))
    lo = net.by_name("lo")
    assert lo is not None and lo.kind == "loopback"
    assert any(a.address == "127.0.0.1" for a in lo.ipv4)


# ---- a network namespace of our own ---------------------------------------------------------
@pytest.fixture
def netns() -> Iterator[str]:
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.fail("these tests need root and iproute2")
    name = f"oxtest-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_discovery_inside_a_namespace(netns: str) -> None:
    def ipn(*args: str) -> None:
        subprocess.run(["ip", "-n", netns, *args], check=True)

    ipn("link", "add", "v0", "type", "veth", "peer", "name", "v1")
    ipn("link", "add", "b0", "type", "bridge")
    ipn("link", "set", "v0", "mtu", "1400")
    ipn("addr", "add", "10.77.1.2/24", "dev", "v0")
    ipn("link", "set", "v0", "up")
    ipn("link", "set", "lo", "up")
    ipn("route", "add", "default", "via", "10.77.1.1", "dev", "v0")
    out = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-m", "openxapi.net.discovery"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    data = json.loads(out)
    by_name = {i["name"]: i for i in data["interfaces"]}
    assert set(by_name) == {"lo", "v0", "v1", "b0"}
    v0 = by_name["v0"]
    assert (v0["kind"], v0["physical"], v0["admin_up"], v0["mtu"]) == ("veth", False, True, 1400)
    assert [(a["address"], a["prefixlen"]) for a in v0["addresses"] if a["family"] == "inet"] == [
        ("10.77.1.2", 24)
    ]
    assert by_name["b0"]["kind"] == "bridge" and not by_name["b0"]["admin_up"]
    assert by_name["v1"]["kind"] == "veth" and not by_name["v1"]["addresses"]
    assert (data["default_dev"], data["default_gateway"]) == ("v0", "10.77.1.1")
