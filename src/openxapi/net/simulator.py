"""The simulator network backend: the contract kept in memory, nothing touched on the host.

It serves tests, demos and scale experiments, and is the reference the contract tests
hold the real backends to: it computes the same attachments they would (QEMU netdev
options included) but creates no bridge, tap or namespace. Failures can be injected to
exercise the API layer's error paths.
"""

from __future__ import annotations

from typing import ClassVar

from openxapi.net.backend import (
    NAT_DHCP_START,
    NAT_DNS,
    NAT_GATEWAY,
    NAT_SUBNET,
    AttachMode,
    Capability,
    ModeNotSupported,
    NetworkBackend,
    NetworkBackendError,
    NetworkInUse,
    NetworkSpec,
    VifAttachment,
    VifNotPlugged,
    VifSpec,
)

ALL_CAPABILITIES = frozenset(Capability)

_MODE_NEEDS = {
    AttachMode.NAT: Capability.NAT,
    AttachMode.RESTRICTED_NAT: Capability.RESTRICTED_NAT,
    AttachMode.BRIDGE: Capability.BRIDGE,
}


def tap_name(vif_uuid: str) -> str:
    """A tap device name for a VIF: short enough for the kernel's 15-character limit."""
    return "oxt" + vif_uuid.replace("-", "")[:12]


def netdev_options(vif: VifSpec) -> dict[str, str]:
    """The QEMU ``-netdev`` options a VIF's mode calls for."""
    if vif.mode is AttachMode.BRIDGE:
        return {"type": "tap", "ifname": tap_name(vif.uuid), "script": "no", "downscript": "no"}
    return {
        "type": "user",
        "net": NAT_SUBNET,
        "host": NAT_GATEWAY,
        "dns": NAT_DNS,
        "dhcpstart": NAT_DHCP_START,
        "restrict": "on" if vif.mode is AttachMode.RESTRICTED_NAT else "off",
    }


class SimulatorBackend(NetworkBackend):
    """Keeps networks and plugged VIFs in dictionaries."""

    name: ClassVar[str] = "simulator"

    def __init__(self, capabilities: frozenset[Capability] = ALL_CAPABILITIES) -> None:
        self._capabilities = frozenset(capabilities)
        self._networks: dict[str, NetworkSpec] = {}
        self._vifs: dict[str, VifAttachment] = {}
        self._fail: dict[str, str] = {}

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self._capabilities

    def fail_next(self, operation: str, message: str = "injected failure") -> None:
        """Make the next call of ``operation`` (a method name) raise NetworkBackendError."""
        self._fail[operation] = message

    def _maybe_fail(self, operation: str) -> None:
        message = self._fail.pop(operation, None)
        if message is not None:
            raise NetworkBackendError(message)

    async def ensure_network(self, net: NetworkSpec) -> None:
        self._maybe_fail("ensure_network")
        self._networks[net.uuid] = net

    async def release_network(self, network_uuid: str) -> None:
        self._maybe_fail("release_network")
        if any(a.network_uuid == network_uuid for a in self._vifs.values()):
            raise NetworkInUse(f"network {network_uuid} has plugged VIFs")
        self._networks.pop(network_uuid, None)

    def _attachment(self, vif: VifSpec) -> VifAttachment:
        need = _MODE_NEEDS[vif.mode]
        if need not in self._capabilities:
            raise ModeNotSupported(f"{self.name} cannot attach in mode {vif.mode}")
        return VifAttachment(
            vif_uuid=vif.uuid,
            network_uuid=vif.network.uuid,
            mode=vif.mode,
            mac=vif.mac,
            netdev=netdev_options(vif),
            bridge=vif.network.bridge if vif.mode is AttachMode.BRIDGE else "",
            netns=vif.network.netns if vif.mode is AttachMode.BRIDGE else "",
        )

    async def plug_vif(self, vif: VifSpec) -> VifAttachment:
        current = self._vifs.get(vif.uuid)
        if current is not None:
            if current.network_uuid != vif.network.uuid:
                raise NetworkBackendError(
                    f"VIF {vif.uuid} is plugged on network {current.network_uuid}"
                )
            return current
        attachment = self._attachment(vif)
        self._maybe_fail("plug_vif")
        self._networks[vif.network.uuid] = vif.network
        self._vifs[vif.uuid] = attachment
        return attachment

    async def unplug_vif(self, vif_uuid: str) -> None:
        self._maybe_fail("unplug_vif")
        self._vifs.pop(vif_uuid, None)

    async def move_vif(self, vif: VifSpec) -> VifAttachment:
        if Capability.MOVE not in self._capabilities:
            raise NetworkBackendError(f"{self.name} cannot move a plugged VIF")
        current = self._vifs.get(vif.uuid)
        if current is None:
            raise VifNotPlugged(f"VIF {vif.uuid} is not plugged")
        if current.network_uuid == vif.network.uuid:
            return current
        attachment = self._attachment(vif)
        self._maybe_fail("move_vif")
        self._networks[vif.network.uuid] = vif.network
        self._vifs[vif.uuid] = attachment
        return attachment

    def attachments(self) -> dict[str, VifAttachment]:
        return dict(self._vifs)

    def networks(self) -> dict[str, NetworkSpec]:
        return dict(self._networks)
