"""The Linux network backend: bridges and taps inside named network namespaces.

A network that names a namespace gets a bridge there (the namespace is made when it is
missing), and each of its VIFs in BRIDGE mode gets a tap in that namespace, up and a port
of the bridge; QEMU for such a VIF is launched inside the namespace. Nothing is made in the
host's own (root) namespace unless the backend is constructed to allow it, so by default
guests reach nothing but each other and whatever the namespace's owner put there.
User-mode NAT VIFs need no host side at all.

Every bridge and tap made here carries a link alias naming the network or VIF it belongs
to: the kernel keeps the backend's state, and :meth:`LinuxBackend.open` re-adopts it after
a restart. Commands are iproute2's ``ip``, run as asyncio subprocesses.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from openxapi.net.backend import (
    AttachMode,
    BridgeNotAvailable,
    Capability,
    ModeNotSupported,
    NetworkBackend,
    NetworkBackendError,
    NetworkInUse,
    NetworkKind,
    NetworkSpec,
    VifAttachment,
    VifNotPlugged,
    VifSpec,
)
from openxapi.net.simulator import netdev_options, tap_name

TAG = "openxapi"
"""First word of the link alias on every bridge and tap this backend made."""
TAP_PREFIX = tap_name("")
"""Every tap this backend makes is named with this prefix (see the simulator's naming)."""

_MODE_NEEDS = {
    AttachMode.NAT: Capability.NAT,
    AttachMode.RESTRICTED_NAT: Capability.RESTRICTED_NAT,
    AttachMode.BRIDGE: Capability.BRIDGE,
}
# Kernel link names: at most 15 characters, never "/", ":" or blanks. A leading letter,
# digit or "_" also keeps a name from being read as one of ip's options.
_LINK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")
_NETNS_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_TAG_VALUE = re.compile(r"[^\s=]{1,64}")
_MISSING = ("does not exist", "Cannot find device", "Cannot open network namespace")


def valid_netns_name(name: str) -> bool:
    """Whether ``name`` is a network namespace name this backend accepts."""
    return _NETNS_NAME.fullmatch(name) is not None


def can_manage_links(ip: str = "ip") -> bool:
    """Whether this process may make namespaces, bridges and taps (root, with iproute2)."""
    return os.geteuid() == 0 and shutil.which(ip) is not None


class IpCommandFailed(NetworkBackendError):
    """An ``ip`` command exited with an error; ``stderr`` holds what it said."""

    def __init__(self, argv: list[str], stderr: str) -> None:
        super().__init__(f"{' '.join(argv)}: {stderr or 'failed'}")
        self.stderr = stderr

    @property
    def missing(self) -> bool:
        """The device or namespace the command named does not exist."""
        return any(m in self.stderr for m in _MISSING)


@dataclass(frozen=True, slots=True)
class _Link:
    """What this backend reads of a network interface."""

    name: str
    kind: str  # "bridge", "tap", another link kind, or "" for a plain device
    master: str
    mtu: int
    up: bool
    tag: dict[str, str]  # this backend's alias fields; empty on links it did not make


@dataclass(slots=True)
class _Net:
    """A network this backend has ensured."""

    spec: NetworkSpec
    realised: bool  # has a bridge on this host (else only user-mode NAT VIFs fit)
    owns_bridge: bool  # the bridge was made here and goes when the network is released


def _parse_tag(alias: str) -> dict[str, str]:
    words = alias.split()
    if not words or words[0] != TAG:
        return {}
    return dict(w.split("=", 1) for w in words[1:] if "=" in w)


def _format_tag(fields: dict[str, str]) -> str:
    return " ".join([TAG, *(f"{k}={v}" for k, v in fields.items())])


def _parse_link(d: dict[str, Any]) -> _Link:
    info = d.get("linkinfo") or {}
    kind = str(info.get("info_kind", ""))
    if kind == "tun":
        kind = str((info.get("info_data") or {}).get("type", "tun"))
    return _Link(
        name=str(d["ifname"]),
        kind=kind,
        master=str(d.get("master", "")),
        mtu=int(d.get("mtu", 0)),
        up="UP" in d.get("flags", []),
        tag=_parse_tag(str(d.get("ifalias", ""))),
    )


def _where(netns: str) -> str:
    return f"namespace {netns}" if netns else "the root namespace"


def _check_tag_value(value: str, what: str) -> None:
    if _TAG_VALUE.fullmatch(value) is None:
        raise NetworkBackendError(f"{what} {value!r} cannot name a link")


class LinuxBackend(NetworkBackend):
    """Bridges and taps made with iproute2, in network namespaces unless told otherwise."""

    name: ClassVar[str] = "linux"

    def __init__(self, *, allow_root_namespace: bool = False, ip: str = "ip") -> None:
        self._allow_root = allow_root_namespace
        self._ip = ip
        caps = {Capability.NAT, Capability.RESTRICTED_NAT, Capability.HOTPLUG, Capability.MOVE}
        if can_manage_links(ip):
            caps.add(Capability.BRIDGE)
        self._capabilities = frozenset(caps)
        self._nets: dict[str, _Net] = {}
        self._vifs: dict[str, VifAttachment] = {}
        self._own_ns: set[str] = set()
        # One change at a time: a bridge and its namespace are checked, then made.
        self._lock = asyncio.Lock()

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self._capabilities

    @property
    def allow_root_namespace(self) -> bool:
        """Whether bridges and taps may be made in the host's own namespace."""
        return self._allow_root

    # ---- ip ------------------------------------------------------------------------------
    async def _run(self, *args: str, netns: str = "") -> str:
        argv = [self._ip, *(("-n", netns) if netns else ()), *args]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as e:
            raise NetworkBackendError(f"cannot run {self._ip}: {e}") from None
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise IpCommandFailed(argv, err.decode(errors="replace").strip())
        return out.decode(errors="replace")

    async def _namespaces(self) -> set[str]:
        out = await self._run("netns", "list")
        return {line.split()[0] for line in out.splitlines() if line.strip()}

    async def _links(self, netns: str) -> dict[str, _Link]:
        out = await self._run("-d", "-j", "link", "show", netns=netns)
        links = (_parse_link(d) for d in json.loads(out or "[]"))
        return {link.name: link for link in links}

    async def _link(self, netns: str, name: str) -> _Link | None:
        try:
            out = await self._run("-d", "-j", "link", "show", "dev", name, netns=netns)
        except IpCommandFailed as e:
            if e.missing:
                return None
            raise
        found = json.loads(out or "[]")
        return _parse_link(found[0]) if found else None

    async def _set_link(self, netns: str, name: str, *attrs: str) -> None:
        await self._run("link", "set", "dev", name, *attrs, netns=netns)

    async def _delete_link(self, netns: str, name: str) -> None:
        try:
            await self._run("link", "del", "dev", name, netns=netns)
        except IpCommandFailed as e:
            if not e.missing:
                raise

    # ---- networks ------------------------------------------------------------------------
    def _wants_bridge(self, net: NetworkSpec) -> bool:
        """A network gets a bridge when it names a namespace, or (when the host allows it)
        when it is an internal network in the root namespace; others need no host side.
        Without the rights to make bridges no network gets one (only NAT VIFs fit)."""
        if Capability.BRIDGE not in self._capabilities:
            return False
        if net.netns:
            return True
        return self._allow_root and net.kind is NetworkKind.INTERNAL

    def _check_network(self, net: NetworkSpec) -> None:
        _check_tag_value(net.uuid, "network uuid")
        if not self._wants_bridge(net):
            return
        if _LINK_NAME.fullmatch(net.bridge) is None:
            raise NetworkBackendError(f"bridge name {net.bridge!r} is not a valid link name")
        if net.netns and not valid_netns_name(net.netns):
            raise NetworkBackendError(f"network namespace name {net.netns!r} is not valid")
        for other in self._nets.values():
            same = (other.spec.netns, other.spec.bridge) == (net.netns, net.bridge)
            if same and other.realised and other.spec.uuid != net.uuid:
                raise NetworkBackendError(
                    f"bridge {net.bridge} in {_where(net.netns)} is network {other.spec.uuid}'s"
                )

    def _bridge_tag(self, net: NetworkSpec) -> str:
        fields = {"net": net.uuid, "kind": net.kind.value}
        if net.netns:
            fields["ns"] = "own" if net.netns in self._own_ns else "found"
        return _format_tag(fields)

    def _taps_on(self, network_uuid: str) -> list[VifAttachment]:
        return [
            a
            for a in self._vifs.values()
            if a.network_uuid == network_uuid and a.mode is AttachMode.BRIDGE
        ]

    async def _realise(self, net: NetworkSpec, owned_before: bool) -> bool:
        """Make the namespace and bridge of ``net`` exist; True when the bridge is ours.

        A bridge found already there is used as it is (and left in place on release)
        unless its alias says this backend made it. On failure nothing made here stays.
        """
        ns, br = net.netns, net.bridge
        link = await self._link(ns, br) if owned_before else None
        if link is not None and link.kind == "bridge":  # the common case: nothing to make
            await self._fix_bridge(net, link, owned=True)
            return True
        made_ns = False
        if ns and ns not in await self._namespaces():
            await self._run("netns", "add", ns)
            made_ns = True
            self._own_ns.add(ns)
        try:
            if ns:
                await self._set_link(ns, "lo", "up")
            link = await self._link(ns, br)
            if link is None:
                await self._run("link", "add", "name", br, "type", "bridge", netns=ns)
                try:
                    await self._fix_bridge(net, None, owned=True)
                except BaseException:
                    await self._delete_link(ns, br)
                    raise
                return True
            if link.kind != "bridge":
                raise NetworkBackendError(f"{br} in {_where(ns)} exists and is not a bridge")
            owner = link.tag.get("net", "")
            if owner and owner != net.uuid and owner in self._nets:
                raise NetworkBackendError(f"bridge {br} in {_where(ns)} is network {owner}'s")
            owned = owned_before or bool(owner)
            if ns and owned and link.tag.get("ns") == "own":
                self._own_ns.add(ns)  # made, with its namespace, by an earlier run
            await self._fix_bridge(net, link, owned)
            return owned
        except BaseException:
            if made_ns:
                self._own_ns.discard(ns)
                await self._run("netns", "del", ns)
            raise

    async def _fix_bridge(self, net: NetworkSpec, link: _Link | None, owned: bool) -> None:
        """Give a bridge of ours its alias and MTU and bring it up; others are not touched."""
        if not owned:
            return
        tag = self._bridge_tag(net)
        if link is None or link.mtu != net.mtu or not link.up or link.tag != _parse_tag(tag):
            await self._set_link(net.netns, net.bridge, "alias", tag, "mtu", str(net.mtu), "up")

    async def _ensure(self, net: NetworkSpec) -> _Net:
        """Record ``net`` and, when it has one, make its bridge (see ``ensure_network``)."""
        self._check_network(net)
        wants = self._wants_bridge(net)
        current = self._nets.get(net.uuid)
        if current is not None:
            where = (current.spec.netns, current.spec.bridge, current.realised)
            if where != (net.netns, net.bridge, wants):
                if any(a.network_uuid == net.uuid for a in self._vifs.values()):
                    raise NetworkInUse(f"network {net.uuid} has plugged VIFs; cannot move it")
                await self._release(current)
                del self._nets[net.uuid]
                current = None
        owned = current.owns_bridge if current is not None else False
        if wants:
            owned = await self._realise(net, owned)
            if current is not None and current.spec.mtu != net.mtu:
                for tap in self._taps_on(net.uuid):
                    await self._set_link(net.netns, tap.netdev["ifname"], "mtu", str(net.mtu))
        entry = _Net(net, realised=wants, owns_bridge=owned)
        self._nets[net.uuid] = entry
        return entry

    async def _release(self, entry: _Net) -> None:
        if not entry.realised:
            return
        ns, br = entry.spec.netns, entry.spec.bridge
        if entry.owns_bridge:
            await self._delete_link(ns, br)
        others = [n for n in self._nets.values() if n is not entry and n.realised]
        if not ns or ns not in self._own_ns or any(n.spec.netns == ns for n in others):
            return
        if ns in await self._namespaces():
            leftover = set(await self._links(ns)) - {"lo"}
            if leftover:
                return  # someone else put interfaces there; the namespace stays
            await self._run("netns", "del", ns)
        self._own_ns.discard(ns)

    async def ensure_network(self, net: NetworkSpec) -> None:
        async with self._lock:
            await self._ensure(net)

    async def release_network(self, network_uuid: str) -> None:
        async with self._lock:
            entry = self._nets.get(network_uuid)
            if entry is None:
                return
            if any(a.network_uuid == network_uuid for a in self._vifs.values()):
                raise NetworkInUse(f"network {network_uuid} has plugged VIFs")
            await self._release(entry)
            del self._nets[network_uuid]

    # ---- VIFs ----------------------------------------------------------------------------
    def _check_mode(self, vif: VifSpec) -> None:
        if _MODE_NEEDS[vif.mode] not in self._capabilities:
            raise ModeNotSupported(f"{self.name} cannot attach in mode {vif.mode}")
        _check_tag_value(vif.uuid, "VIF uuid")
        _check_tag_value(vif.mac, "MAC")
        if vif.mode is AttachMode.BRIDGE and not self._wants_bridge(vif.network):
            # A bridge outside any namespace: never made or joined unless the host allows.
            raise BridgeNotAvailable(vif.network.bridge)

    def _user_attachment(self, vif: VifSpec) -> VifAttachment:
        return VifAttachment(
            vif_uuid=vif.uuid,
            network_uuid=vif.network.uuid,
            mode=vif.mode,
            mac=vif.mac,
            netdev=netdev_options(vif),
        )

    def _tap_attachment(self, vif: VifSpec, net: NetworkSpec) -> VifAttachment:
        return VifAttachment(
            vif_uuid=vif.uuid,
            network_uuid=net.uuid,
            mode=AttachMode.BRIDGE,
            mac=vif.mac,
            netdev=netdev_options(replace(vif, network=net)),
            bridge=net.bridge,
            netns=net.netns,
        )

    async def _port_tap(self, tap: str, vif: VifSpec, net: NetworkSpec) -> None:
        """Label a tap as ``vif``'s on ``net`` and make it an up port of the net's bridge."""
        tag = _format_tag({"vif": vif.uuid, "net": net.uuid, "mac": vif.mac})
        attrs = ("alias", tag, "mtu", str(net.mtu), "master", net.bridge, "up")
        await self._set_link(net.netns, tap, *attrs)

    async def _make_tap(self, vif: VifSpec, net: NetworkSpec) -> VifAttachment:
        """A tap for ``vif`` in the network's namespace: up, a port of its bridge."""
        ns, tap = net.netns, tap_name(vif.uuid)
        link = await self._link(ns, tap)
        made = link is None
        if link is not None and (link.kind != "tap" or link.tag.get("vif") != vif.uuid):
            raise NetworkBackendError(f"{tap} in {_where(ns)} exists and is not VIF {vif.uuid}'s")
        if made:
            await self._run("tuntap", "add", "dev", tap, "mode", "tap", netns=ns)
        try:
            await self._port_tap(tap, vif, net)
        except BaseException:
            if made:
                await self._delete_link(ns, tap)
            raise
        return self._tap_attachment(vif, net)

    async def plug_vif(self, vif: VifSpec) -> VifAttachment:
        async with self._lock:
            current = self._vifs.get(vif.uuid)
            if current is not None:
                if current.network_uuid != vif.network.uuid:
                    raise NetworkBackendError(
                        f"VIF {vif.uuid} is plugged on network {current.network_uuid}"
                    )
                return current
            self._check_mode(vif)
            await self._ensure(vif.network)
            if vif.mode is AttachMode.BRIDGE:
                attachment = await self._make_tap(vif, vif.network)
            else:
                attachment = self._user_attachment(vif)
            self._vifs[vif.uuid] = attachment
            return attachment

    async def unplug_vif(self, vif_uuid: str) -> None:
        async with self._lock:
            current = self._vifs.get(vif_uuid)
            if current is None:
                return
            if current.mode is AttachMode.BRIDGE:
                await self._delete_link(current.netns, current.netdev["ifname"])
            del self._vifs[vif_uuid]

    async def move_vif(self, vif: VifSpec) -> VifAttachment:
        """Move within what a running guest's NIC can keep: a tap to another bridge of the
        same namespace, or a user-mode NIC to another network of the same mode."""
        async with self._lock:
            current = self._vifs.get(vif.uuid)
            if current is None:
                raise VifNotPlugged(f"VIF {vif.uuid} is not plugged")
            if current.network_uuid == vif.network.uuid:
                return current
            self._check_mode(vif)
            if vif.mode is not current.mode:
                raise NetworkBackendError(
                    f"VIF {vif.uuid} is attached by {current.mode}; {vif.mode} needs a new NIC"
                )
            if vif.mode is not AttachMode.BRIDGE:
                await self._ensure(vif.network)
                moved = self._user_attachment(vif)
            else:
                if vif.network.netns != current.netns:
                    raise NetworkBackendError(
                        f"VIF {vif.uuid} is in {_where(current.netns)}; a tap cannot follow "
                        f"its guest into {_where(vif.network.netns)}"
                    )
                await self._ensure(vif.network)
                moved = await self._retarget_tap(vif, current)
            self._vifs[vif.uuid] = moved
            return moved

    async def _retarget_tap(self, vif: VifSpec, current: VifAttachment) -> VifAttachment:
        net, tap = vif.network, current.netdev["ifname"]
        try:
            await self._port_tap(tap, vif, net)
        except NetworkBackendError:
            old = self._nets[current.network_uuid].spec
            await self._port_tap(tap, vif, old)
            raise
        return self._tap_attachment(vif, net)

    # ---- what is there -------------------------------------------------------------------
    async def open(self, namespaces: Iterable[str] = ()) -> None:
        """Re-adopt the bridges and taps this backend made in ``namespaces`` (and in the
        root namespace when allowed), as a restarted daemon must: their aliases name the
        network and VIF each belongs to. Namespaces that do not exist are skipped."""
        async with self._lock:
            if Capability.BRIDGE not in self._capabilities:
                return
            wanted = {ns for ns in namespaces if ns and valid_netns_name(ns)}
            spaces = sorted(wanted & await self._namespaces()) if wanted else []
            if self._allow_root:
                spaces.insert(0, "")
            for ns in spaces:
                self._adopt(ns, await self._links(ns))

    def _adopt(self, ns: str, links: dict[str, _Link]) -> None:
        for link in links.values():
            uuid = link.tag.get("net", "")
            if link.kind != "bridge" or not uuid or uuid in self._nets:
                continue
            try:
                kind = NetworkKind(link.tag.get("kind", NetworkKind.INTERNAL.value))
            except ValueError:
                kind = NetworkKind.INTERNAL
            spec = NetworkSpec(uuid=uuid, bridge=link.name, kind=kind, mtu=link.mtu, netns=ns)
            self._nets[uuid] = _Net(spec, realised=True, owns_bridge=True)
            if ns and link.tag.get("ns") == "own":
                self._own_ns.add(ns)
        for link in links.values():
            vif_uuid, net_uuid = link.tag.get("vif", ""), link.tag.get("net", "")
            if link.kind != "tap" or not vif_uuid or not net_uuid or vif_uuid in self._vifs:
                continue
            if link.name != tap_name(vif_uuid):
                continue
            entry = self._nets.get(net_uuid)
            master = links.get(link.master)
            if entry is None and master is not None and master.kind == "bridge":
                # A bridge someone else made, which carries no alias of ours.
                kind = NetworkKind.INTERNAL
                spec = NetworkSpec(net_uuid, master.name, kind, master.mtu, netns=ns)
                entry = self._nets[net_uuid] = _Net(spec, realised=True, owns_bridge=False)
            if entry is None or entry.spec.netns != ns:
                continue
            spec_ = VifSpec(
                uuid=vif_uuid,
                vm_uuid="",
                device=0,
                mac=link.tag.get("mac", ""),
                mtu=link.mtu,
                network=entry.spec,
                mode=AttachMode.BRIDGE,
            )
            self._vifs[vif_uuid] = self._tap_attachment(spec_, entry.spec)

    def attachments(self) -> dict[str, VifAttachment]:
        return dict(self._vifs)

    def networks(self) -> dict[str, NetworkSpec]:
        return {uuid: n.spec for uuid, n in self._nets.items()}
