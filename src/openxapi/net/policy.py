"""Which attachment a VIF gets: the one place that decides whether a guest is bridged.

By default no guest is ever bridged onto a real NIC: a VIF on a network backed by a
host interface gets restricted user-mode NAT, so a test or demo VM can never put traffic
on the host's LAN. Only an uplink the host's configuration names explicitly is shared.
An internal network inside a network namespace is bridged there (its guests see each other
and whatever lives in that namespace); with real bridges, an internal network outside any
namespace is bridged only when the host allows bridges in its own namespace.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from openxapi.net.backend import AttachMode, Capability, NetworkKind, NetworkSpec


@dataclass(frozen=True, slots=True)
class NetPolicy:
    """Host configuration that widens what guests may reach (empty = the safe default)."""

    bridge_uplinks: frozenset[str] = field(default_factory=frozenset)
    """Host devices guests may be bridged onto (e.g. ``{"eth1"}``); none by default."""
    restrict_nat: bool = False
    """Make the guests' NAT network restricted too (no connections out of the host)."""
    namespaced_bridges_only: bool = False
    """Bridge guests only on networks inside a network namespace (set along with a backend
    whose bridges are real, unless the host lets it make them in its root namespace)."""


def choose_mode(
    net: NetworkSpec, capabilities: frozenset[Capability], policy: NetPolicy
) -> AttachMode:
    """The attachment for a VIF on ``net`` given what the backend can do and the policy."""
    can_nat = Capability.NAT in capabilities
    can_bridge = Capability.BRIDGE in capabilities
    if net.kind is NetworkKind.NAT:
        if can_nat and not policy.restrict_nat:
            return AttachMode.NAT
        return AttachMode.RESTRICTED_NAT
    if net.kind is NetworkKind.INTERNAL:
        allowed = bool(net.netns) or not policy.namespaced_bridges_only
        return AttachMode.BRIDGE if can_bridge and allowed else AttachMode.RESTRICTED_NAT
    if net.kind is NetworkKind.EXTERNAL:
        shared = bool(net.uplink) and net.uplink in policy.bridge_uplinks
        if shared and can_bridge and Capability.UPLINK in capabilities:
            return AttachMode.BRIDGE
        return AttachMode.RESTRICTED_NAT
    return AttachMode.RESTRICTED_NAT
