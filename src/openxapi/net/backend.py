"""The network backend interface: how a guest's NIC reaches its network on this host.

The API layer keeps networks, PIFs and VIFs as records; a backend gives them a host side.
Three implementations fit behind this one interface: user-mode NAT inside QEMU (with
``restrict=on`` for the restricted form), a Linux bridge with a tap per VIF (only ever in
a network namespace the server made, or on an uplink the host is explicitly configured to
share), and the simulator. Backends know nothing of the store or the API: they take the
plain descriptions below and return plain results, and the API layer records them.

Which attachment a VIF gets is decided by :func:`openxapi.net.policy.choose_mode`, never
by a backend on its own, so the rule "a guest is not bridged onto a real NIC unless the
host is configured for it" lives in one place.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

# The guest side of the user-mode NAT networks (QEMU's slirp defaults).
NAT_SUBNET = "10.0.2.0/24"
NAT_NETMASK = "255.255.255.0"
NAT_GATEWAY = "10.0.2.2"
NAT_DNS = "10.0.2.3"
NAT_DHCP_START = "10.0.2.15"
NAT_DHCP_END = "10.0.2.254"


class NetworkKind(StrEnum):
    """What a network is, as far as attaching guests to it goes."""

    NAT = "nat"  # the guests' NAT network: out through the host, nothing reaches in
    INTERNAL = "internal"  # no PIF: the guests on it see each other and nothing else
    EXTERNAL = "external"  # has a PIF on a host NIC (physical, VLAN or bond)
    HOST_INTERNAL = "host-internal"  # the host-internal management network


class AttachMode(StrEnum):
    """How one VIF is realised."""

    NAT = "nat"  # user-mode NAT; the guest may open connections out through the host
    RESTRICTED_NAT = "restricted-nat"  # user-mode NAT, restrict=on: DHCP and forwarded ports only
    BRIDGE = "bridge"  # a tap device on a Linux bridge


class Capability(StrEnum):
    """What a backend can do; callers branch on these rather than on backend names."""

    NAT = "nat"  # AttachMode.NAT
    RESTRICTED_NAT = "restricted-nat"  # AttachMode.RESTRICTED_NAT
    BRIDGE = "bridge"  # AttachMode.BRIDGE on a bridge the backend owns
    UPLINK = "uplink"  # may put a bridge on a host NIC (only when the host is configured to)
    HOTPLUG = "hotplug"  # plug_vif / unplug_vif while the guest runs
    MOVE = "move"  # move_vif of a plugged VIF without the guest's involvement


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """A network as a backend needs to know it."""

    uuid: str
    bridge: str
    kind: NetworkKind
    mtu: int = 1500
    uplink: str = ""  # host device of an EXTERNAL network's PIF; only ever read
    vlan: int = -1  # VLAN tag of that PIF, -1 for none
    netns: str = ""  # network namespace the bridge lives in; "" = the host's own


@dataclass(frozen=True, slots=True)
class VifSpec:
    """One virtual NIC: which guest, which slot, which address, on which network."""

    uuid: str
    vm_uuid: str
    device: int
    mac: str
    mtu: int
    network: NetworkSpec
    mode: AttachMode


@dataclass(frozen=True, slots=True)
class VifAttachment:
    """The host side of a plugged VIF: what a domain backend turns into a guest NIC.

    ``netdev`` holds QEMU ``-netdev`` options (``type`` first: "user" or "tap"); a tap lives
    in ``netns`` when that is not empty, and is a port of ``bridge``.
    """

    vif_uuid: str
    network_uuid: str
    mode: AttachMode
    mac: str
    netdev: Mapping[str, str] = field(default_factory=dict)
    bridge: str = ""
    netns: str = ""


class NetworkBackendError(Exception):
    """The backend could not do what was asked; nothing was left half-done."""


class BridgeNotAvailable(NetworkBackendError):
    """The network's bridge is missing and the backend may not create it."""

    def __init__(self, bridge: str) -> None:
        super().__init__(f"bridge {bridge} is not available")
        self.bridge = bridge


class ModeNotSupported(NetworkBackendError):
    """The VIF asks for an attachment mode this backend lacks the capability for."""


class VifNotPlugged(NetworkBackendError):
    """The operation needs a plugged VIF and this one is not."""


class NetworkInUse(NetworkBackendError):
    """The network still has plugged VIFs."""


class NetworkBackend(abc.ABC):
    """The contract every network backend meets (see ``tests/net/test_backend_contract.py``).

    All methods may be called concurrently for different VIFs. None of them changes a host
    interface the backend did not create itself: an EXTERNAL network's uplink is read, and
    bridged onto only when a VIF's mode is BRIDGE, which policy grants only for uplinks the
    host is configured to share.
    """

    name: ClassVar[str]

    @property
    @abc.abstractmethod
    def capabilities(self) -> frozenset[Capability]:
        """What this backend can do. Constant for the backend's lifetime."""

    @abc.abstractmethod
    async def ensure_network(self, net: NetworkSpec) -> None:
        """Make ``net`` ready for VIFs on this host.

        End state: ``plug_vif`` for a VIF on ``net`` can succeed. Idempotent: calling it
        again with the same spec does nothing, with a changed MTU updates the MTU. On
        failure raises :class:`NetworkBackendError` (:class:`BridgeNotAvailable` when the
        bridge of an unmanaged network is missing) and leaves nothing half-made.
        """

    @abc.abstractmethod
    async def release_network(self, network_uuid: str) -> None:
        """Undo ``ensure_network``.

        Idempotent: an unknown or already released network is not an error. Raises
        :class:`NetworkInUse` while VIFs are plugged on it, and then changes nothing.
        """

    @abc.abstractmethod
    async def plug_vif(self, vif: VifSpec) -> VifAttachment:
        """Give ``vif`` its host side on ``vif.network``; returns how a guest attaches.

        Ensures the network first. Idempotent: plugging a VIF that is already plugged on
        the same network returns its existing attachment; one plugged on another network
        raises :class:`NetworkBackendError` (use ``move_vif``). A mode outside the
        backend's capabilities raises :class:`ModeNotSupported`. On failure nothing of
        the VIF is left behind.
        """

    @abc.abstractmethod
    async def unplug_vif(self, vif_uuid: str) -> None:
        """Remove the host side of a VIF. Idempotent: unknown VIFs are not an error."""

    @abc.abstractmethod
    async def move_vif(self, vif: VifSpec) -> VifAttachment:
        """Re-home a plugged VIF onto ``vif.network`` without the guest's involvement.

        Needs :attr:`Capability.MOVE`. Raises :class:`VifNotPlugged` for a VIF that is not
        plugged. Moving onto the network it is already on returns its attachment. On
        failure the VIF stays plugged, unchanged, on its old network.
        """

    @abc.abstractmethod
    def attachments(self) -> dict[str, VifAttachment]:
        """Every VIF plugged now, by VIF uuid (what a restarted daemon re-adopts)."""

    @abc.abstractmethod
    def networks(self) -> dict[str, NetworkSpec]:
        """Every network ensured and not released, by network uuid."""
