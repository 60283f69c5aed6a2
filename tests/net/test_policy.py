"""The attachment rule: no guest is bridged onto a host NIC unless the host says so."""

from __future__ import annotations

import itertools

from openxapi.net.backend import AttachMode, Capability, NetworkKind, NetworkSpec
from openxapi.net.policy import NetPolicy, choose_mode

ALL_CAPABILITY_SETS = [
    frozenset(c)
    for n in range(len(Capability) + 1)
    for c in itertools.combinations(list(Capability), n)
]
POLICIES = [
    NetPolicy(),
    NetPolicy(restrict_nat=True),
    NetPolicy(bridge_uplinks=frozenset({"eth0"})),
    NetPolicy(bridge_uplinks=frozenset({"eth1"}), restrict_nat=True),
]


def spec(kind: NetworkKind, uplink: str = "") -> NetworkSpec:
    return NetworkSpec(uuid="n", bridge="xenbr0", kind=kind, uplink=uplink)


def test_bridging_onto_a_nic_needs_the_host_to_name_it() -> None:
    for caps, policy, kind in itertools.product(ALL_CAPABILITY_SETS, POLICIES, NetworkKind):
        mode = choose_mode(spec(kind, "eth0"), caps, policy)
        if kind is NetworkKind.EXTERNAL and mode is AttachMode.BRIDGE:
            assert "eth0" in policy.bridge_uplinks
            assert {Capability.BRIDGE, Capability.UPLINK} <= caps
        if kind in (NetworkKind.HOST_INTERNAL, NetworkKind.NAT):
            assert mode is not AttachMode.BRIDGE


def test_default_policy_never_bridges_a_nic() -> None:
    for caps, uplink in itertools.product(ALL_CAPABILITY_SETS, ("eth0", "bond0", "")):
        mode = choose_mode(spec(NetworkKind.EXTERNAL, uplink), caps, NetPolicy())
        assert mode is AttachMode.RESTRICTED_NAT


def test_each_kind_with_every_capability() -> None:
    caps = frozenset(Capability)
    default = NetPolicy()
    assert choose_mode(spec(NetworkKind.NAT), caps, default) is AttachMode.NAT
    assert choose_mode(spec(NetworkKind.INTERNAL), caps, default) is AttachMode.BRIDGE
    assert choose_mode(spec(NetworkKind.EXTERNAL, "eth0"), caps, default) is (
        AttachMode.RESTRICTED_NAT
    )
    assert choose_mode(spec(NetworkKind.HOST_INTERNAL), caps, default) is (
        AttachMode.RESTRICTED_NAT
    )
    shared = NetPolicy(bridge_uplinks=frozenset({"eth0"}))
    assert choose_mode(spec(NetworkKind.EXTERNAL, "eth0"), caps, shared) is AttachMode.BRIDGE
    assert choose_mode(spec(NetworkKind.EXTERNAL, "eth1"), caps, shared) is (
        AttachMode.RESTRICTED_NAT
    )
    restricted = NetPolicy(restrict_nat=True)
    assert choose_mode(spec(NetworkKind.NAT), caps, restricted) is AttachMode.RESTRICTED_NAT


def test_backends_without_nat_or_bridge_fall_back_to_restricted_nat() -> None:
    only_restricted = frozenset({Capability.RESTRICTED_NAT})
    for kind in NetworkKind:
        assert choose_mode(spec(kind, "eth0"), only_restricted, NetPolicy()) is (
            AttachMode.RESTRICTED_NAT
        )
    uplink_no_bridge = frozenset({Capability.UPLINK, Capability.RESTRICTED_NAT})
    shared = NetPolicy(bridge_uplinks=frozenset({"eth0"}))
    assert choose_mode(spec(NetworkKind.EXTERNAL, "eth0"), uplink_no_bridge, shared) is (
        AttachMode.RESTRICTED_NAT
    )
