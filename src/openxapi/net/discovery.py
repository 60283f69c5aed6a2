"""What network interfaces this host has, read without changing anything.

The server describes the machine's interfaces as PIFs but never reconfigures them, so
this module only reads: ``/sys/class/net`` for links and hardware, ``ip -j -d addr`` and
``ip -j route`` for addresses and default routes, ``/etc/resolv.conf`` for DNS servers.
Every parser is a pure function over text so it can be tested with captured output.

``python -m openxapi.net.discovery`` prints what it finds as JSON (used by the tests that
look at a network namespace of their own).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("openxapi.net")

SYS_CLASS_NET = Path("/sys/class/net")
RESOLV_CONF = Path("/etc/resolv.conf")
IFF_UP = 0x1
ARPHRD_LOOPBACK = 772
_PCI_ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")

IpRunner = Callable[[list[str]], str | None]
"""Runs ``ip`` with the given arguments and returns its standard output (None if unusable)."""


@dataclass(frozen=True, slots=True)
class Address:
    """One IP address configured on an interface."""

    address: str
    prefixlen: int
    family: str  # "inet" | "inet6"
    scope: str = "global"
    dynamic: bool = False  # handed out by DHCP or router advertisements

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"

    @property
    def netmask(self) -> str:
        """Dotted netmask of an IPv4 address ("" for IPv6)."""
        if self.family != "inet":
            return ""
        return str(ipaddress.IPv4Network(f"0.0.0.0/{self.prefixlen}").netmask)


@dataclass(frozen=True, slots=True)
class Interface:
    """One network interface of the host as the kernel reports it."""

    name: str
    mac: str = ""
    mtu: int = 1500
    kind: str = "ethernet"  # loopback|ethernet|wireless|bridge|bond|vlan|veth|tun|other
    physical: bool = False  # backed by a device (PCI, USB, virtio...), not made in software
    admin_up: bool = False
    carrier: bool = False
    speed: int = 0  # Mbit/s, 0 when unknown
    duplex: bool = False  # full duplex
    driver: str = ""
    pci_bus_path: str = ""
    vendor_id: str = ""
    device_id: str = ""
    vlan_parent: str = ""
    vlan_id: int = -1
    addresses: tuple[Address, ...] = ()

    @property
    def ipv4(self) -> list[Address]:
        return [a for a in self.addresses if a.family == "inet"]

    @property
    def ipv6_global(self) -> list[Address]:
        return [a for a in self.addresses if a.family == "inet6" and a.scope == "global"]


@dataclass(frozen=True, slots=True)
class HostNetwork:
    """Everything discovery found: interfaces, default routes and DNS servers."""

    interfaces: tuple[Interface, ...] = ()
    default_dev: str = ""
    default_gateway: str = ""
    default_dev6: str = ""
    default_gateway6: str = ""
    dns: tuple[str, ...] = ()
    errors: tuple[str, ...] = field(default=())

    def by_name(self, name: str) -> Interface | None:
        for i in self.interfaces:
            if i.name == name:
                return i
        return None

    def with_address(self, address: str) -> Interface | None:
        """The interface that carries ``address``, if any."""
        for i in self.interfaces:
            if any(a.address == address for a in i.addresses):
                return i
        return None


# ---- parsers (pure) -------------------------------------------------------------------------
def parse_ip_addr(text: str) -> dict[str, dict[str, Any]]:
    """``ip -j -d addr`` output → per interface: addresses, kind and VLAN facts."""
    out: dict[str, dict[str, Any]] = {}
    try:
        entries = json.loads(text) if text.strip() else []
    except ValueError:
        return out
    if not isinstance(entries, list):
        return out
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("ifname"), str):
            continue
        addrs: list[Address] = []
        for a in e.get("addr_info") or []:
            if not isinstance(a, dict) or a.get("family") not in ("inet", "inet6"):
                continue
            local = a.get("local")
            if not isinstance(local, str):
                continue
            addrs.append(
                Address(
                    address=local,
                    prefixlen=int(a.get("prefixlen", 0)),
                    family=str(a["family"]),
                    scope=str(a.get("scope", "global")),
                    dynamic=bool(a.get("dynamic", False)),
                )
            )
        info = e.get("linkinfo") if isinstance(e.get("linkinfo"), dict) else {}
        kind = str(info.get("info_kind", "")) if info else ""
        data = info.get("info_data") if info and isinstance(info.get("info_data"), dict) else {}
        vlan_id = int(data.get("id", -1)) if kind == "vlan" and data else -1
        out[e["ifname"]] = {
            "addresses": tuple(addrs),
            "link_kind": kind,
            "vlan_parent": str(e.get("link", "")) if kind == "vlan" else "",
            "vlan_id": vlan_id,
        }
    return out


def parse_ip_route(text: str) -> tuple[str, str]:
    """``ip -j route show default`` output → (device, gateway) of the first default route."""
    try:
        entries = json.loads(text) if text.strip() else []
    except ValueError:
        return "", ""
    if not isinstance(entries, list):
        return "", ""
    for e in entries:
        if isinstance(e, dict) and e.get("dst") == "default" and isinstance(e.get("dev"), str):
            return e["dev"], str(e.get("gateway", ""))
    return "", ""


def parse_proc_route(text: str) -> tuple[str, str]:
    """``/proc/net/route`` → (device, gateway) of the IPv4 default route (no ``ip`` needed)."""
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 3 or cols[1] != "00000000":
            continue
        try:
            gw = ipaddress.IPv4Address(int(cols[2], 16).to_bytes(4, "little"))
        except ValueError:
            continue
        return cols[0], "" if int(gw) == 0 else str(gw)
    return "", ""


def parse_resolv_conf(text: str) -> tuple[str, ...]:
    """Name servers listed in a resolv.conf, in order."""
    out: list[str] = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 2 and cols[0] == "nameserver":
            try:
                ipaddress.ip_address(cols[1].split("%")[0])
            except ValueError:
                continue
            out.append(cols[1])
    return tuple(out)


# ---- sysfs ----------------------------------------------------------------------------------
def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _read_int(path: Path, default: int) -> int:
    text = _read(path)
    try:
        return int(text, 0)
    except ValueError:
        return default


def _pci_dir(dev: Path) -> Path | None:
    """The PCI function behind an interface: its device, or the bus device right above.

    Only one level up (virtio NICs sit on a virtio bus under their PCI function); going
    further would name a USB controller as the maker of a USB adapter.
    """
    try:
        real = dev.resolve()
    except OSError:
        return None
    for p in (real, real.parent):
        if _PCI_ADDRESS.match(p.name):
            return p
    return None


def _kind(d: Path, link_kind: str, link_type: int) -> str:
    if link_type == ARPHRD_LOOPBACK:
        return "loopback"
    if (d / "bridge").exists():
        return "bridge"
    if (d / "bonding").exists():
        return "bond"
    if (d / "wireless").exists() or (d / "phy80211").exists():
        return "wireless"
    if (d / "tun_flags").exists():
        return "tun"
    if link_kind in ("vlan", "veth", "bridge", "bond"):
        return link_kind
    if link_kind:
        return "other"
    return "ethernet"


def read_interface(d: Path, extra: dict[str, Any] | None = None) -> Interface:
    """One interface from its ``/sys/class/net/<name>`` directory plus ``ip`` facts."""
    extra = extra or {}
    dev = d / "device"
    physical = dev.exists()
    pci = _pci_dir(dev) if physical else None
    speed = _read_int(d / "speed", 0)
    driver = ""
    if physical:
        try:
            driver = (dev / "driver").resolve().name
        except OSError:
            driver = ""
    return Interface(
        name=d.name,
        mac=_read(d / "address").lower(),
        mtu=_read_int(d / "mtu", 1500),
        kind=_kind(d, str(extra.get("link_kind", "")), _read_int(d / "type", 1)),
        physical=physical,
        admin_up=bool(_read_int(d / "flags", 0) & IFF_UP),
        carrier=_read(d / "carrier") == "1",
        speed=speed if speed > 0 else 0,
        duplex=_read(d / "duplex") == "full",
        driver=driver,
        pci_bus_path=pci.name if pci else "",
        vendor_id=_read(pci / "vendor").removeprefix("0x") if pci else "",
        device_id=_read(pci / "device").removeprefix("0x") if pci else "",
        vlan_parent=str(extra.get("vlan_parent", "")),
        vlan_id=int(extra.get("vlan_id", -1)),
        addresses=tuple(extra.get("addresses", ())),
    )


def run_ip(args: list[str]) -> str | None:
    """``ip <args>`` output, or None when ``ip`` is missing or fails."""
    exe = shutil.which("ip")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def discover(
    sys_class_net: Path = SYS_CLASS_NET,
    ip: IpRunner = run_ip,
    resolv_conf: Path = RESOLV_CONF,
    proc_route: Path = Path("/proc/net/route"),
) -> HostNetwork:
    """Read the host's interfaces, default routes and DNS servers. Changes nothing."""
    errors: list[str] = []
    addr_text = ip(["-j", "-d", "addr", "show"])
    if addr_text is None:
        errors.append("ip -j -d addr show: unavailable; addresses unknown")
        facts: dict[str, dict[str, Any]] = {}
    else:
        facts = parse_ip_addr(addr_text)
    interfaces: list[Interface] = []
    try:
        dirs = sorted(sys_class_net.iterdir(), key=lambda p: p.name)
    except OSError as e:
        errors.append(f"{sys_class_net}: {e.strerror}")
        dirs = []
    for d in dirs:
        interfaces.append(read_interface(d, facts.get(d.name)))
    route4 = ip(["-j", "route", "show", "default"])
    if route4 is not None:
        dev4, gw4 = parse_ip_route(route4)
    else:
        dev4, gw4 = parse_proc_route(_read(proc_route))
    route6 = ip(["-j", "-6", "route", "show", "default"])
    dev6, gw6 = parse_ip_route(route6) if route6 is not None else ("", "")
    return HostNetwork(
        interfaces=tuple(interfaces),
        default_dev=dev4,
        default_gateway=gw4,
        default_dev6=dev6,
        default_gateway6=gw6,
        dns=parse_resolv_conf(_read(resolv_conf)),
        errors=tuple(errors),
    )


def candidate_interfaces(net: HostNetwork, management_dev: str = "") -> list[Interface]:
    """Interfaces that become PIFs: hardware NICs, plus the one the host is reached on.

    Loopback never qualifies; software interfaces (bridges of other tools, veths, taps)
    only when they carry the management address, as a container's ``eth0`` does.
    Ordered as the reference numbers NICs: hardware by bus position, then the rest.
    """
    chosen = [
        i
        for i in net.interfaces
        if i.kind != "loopback" and (i.physical or (management_dev and i.name == management_dev))
    ]
    return sorted(chosen, key=lambda i: (not i.physical, i.pci_bus_path or "~", i.name))


def to_json(net: HostNetwork) -> str:
    return json.dumps(asdict(net), indent=2)


if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess in tests
    sys.stdout.write(to_json(discover()) + "\n")
