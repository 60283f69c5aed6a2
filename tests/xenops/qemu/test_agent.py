"""What the guest agent reports, shaped as the reference's VM_guest_metrics."""

from __future__ import annotations

from openxapi.xenops.qemu.agent import guest_info, guest_networks

IFACES = [
    {
        "name": "lo",
        "hardware-address": "00:00:00:00:00:00",
        "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "ipv4"}],
    },
    {
        "name": "eth0",
        "hardware-address": "AA:BB:CC:00:00:01",
        "ip-addresses": [
            {"ip-address": "10.0.2.15", "ip-address-type": "ipv4"},
            {"ip-address": "10.0.3.15", "ip-address-type": "ipv4"},
            {"ip-address": "fe80::1", "ip-address-type": "ipv6"},
        ],
    },
]


def test_networks_are_keyed_by_vif_device_found_by_mac() -> None:
    nets = guest_networks(IFACES, {"aa:bb:cc:00:00:01": "2"})
    assert nets == {
        "2/ip": "10.0.2.15",
        "2/ipv4/0": "10.0.2.15",
        "2/ipv4/1": "10.0.3.15",
        "2/ipv6/0": "fe80::1",
    }


def test_os_version_and_driver_version() -> None:
    info = {
        "version": "7.2.22",
        "supported_commands": [{"name": "guest-shutdown", "enabled": True}],
    }
    osinfo = {
        "pretty-name": "openxapi tiny guest 1.0",
        "id": "tinyvm",
        "version-id": "1.0",
        "kernel-release": "6.1.0-56-cloud-amd64",
    }
    g = guest_info(info, osinfo, IFACES, {"aa:bb:cc:00:00:01": "0"}, "tinyvm")
    assert g.os_version == {
        "name": "openxapi tiny guest 1.0",
        "distro": "tinyvm",
        "major": "1",
        "minor": "0",
        "uname": "6.1.0-56-cloud-amd64",
    }
    assert g.pv_drivers_version == {"major": "7", "minor": "2", "micro": "22", "build": "0"}
    assert g.pv_drivers_detected and g.other["feature-shutdown"] == "1"
    assert "feature-suspend" not in g.other
    assert g.netbios_name == {"host_name": "tinyvm"}
