"""The network backend contract (openxapi.net.backend), run against every implementation.

The Linux backend runs for real: its bridged networks live in a network namespace made
for each test (and deleted after it), and the host's own namespace must be left as it was.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import pytest

from openxapi.net.backend import (
    AttachMode,
    Capability,
    ModeNotSupported,
    NetworkBackend,
    NetworkBackendError,
    NetworkInUse,
    NetworkKind,
    NetworkSpec,
    VifNotPlugged,
    VifSpec,
)
from openxapi.net.linux import LinuxBackend, can_manage_links
from openxapi.net.simulator import SimulatorBackend

NAT = NetworkSpec(uuid="net-nat", bridge="xapi0", kind=NetworkKind.NAT)
INTERNAL = NetworkSpec(uuid="net-int", bridge="xapi1", kind=NetworkKind.INTERNAL, mtu=9000)
SECOND = NetworkSpec(uuid="net-int2", bridge="xapi2", kind=NetworkKind.INTERNAL)


@dataclass(frozen=True)
class Harness:
    """A backend and networks it can attach guests to: ``internal`` and ``second`` are
    bridged networks a plugged VIF can move between."""

    backend: NetworkBackend
    nat: NetworkSpec
    internal: NetworkSpec
    second: NetworkSpec


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, check=True).stdout
    return {str(link["ifname"]) for link in json.loads(out)}


def delete_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def simulator_harness() -> Iterator[Harness]:
    yield Harness(SimulatorBackend(), NAT, INTERNAL, SECOND)


def linux_harness() -> Iterator[Harness]:
    if not can_manage_links():
        pytest.skip("needs root and iproute2")
    ns = f"oxt-{secrets.token_hex(4)}"
    before = root_links()
    try:
        yield Harness(
            LinuxBackend(),
            NAT,
            replace(INTERNAL, netns=ns),
            replace(SECOND, netns=ns),
        )
    finally:
        delete_netns(ns)
    assert root_links() - before == set()


HARNESSES: dict[str, Callable[[], Iterator[Harness]]] = {
    "simulator": simulator_harness,
    "linux": linux_harness,
}


@pytest.fixture(params=sorted(HARNESSES))
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    yield from HARNESSES[request.param]()


def vif(uuid: str = "vif-1", net: NetworkSpec = NAT, mode: AttachMode = AttachMode.NAT) -> VifSpec:
    return VifSpec(
        uuid=uuid,
        vm_uuid="vm-1",
        device=0,
        mac="02:00:00:00:00:01",
        mtu=1500,
        network=net,
        mode=mode,
    )


def usable_mode(b: NetworkBackend, preferred: AttachMode) -> AttachMode:
    need = {
        AttachMode.NAT: Capability.NAT,
        AttachMode.BRIDGE: Capability.BRIDGE,
        AttachMode.RESTRICTED_NAT: Capability.RESTRICTED_NAT,
    }
    if need[preferred] in b.capabilities:
        return preferred
    return next(m for m, c in need.items() if c in b.capabilities)


async def test_ensure_network_is_idempotent(h: Harness) -> None:
    backend, net = h.backend, h.internal
    await backend.ensure_network(net)
    await backend.ensure_network(net)
    assert backend.networks() == {net.uuid: net}
    smaller = replace(net, mtu=1500)
    await backend.ensure_network(smaller)
    assert backend.networks()[net.uuid].mtu == 1500


async def test_plug_is_idempotent_and_describes_the_attachment(h: Harness) -> None:
    backend = h.backend
    mode = usable_mode(backend, AttachMode.NAT)
    a = await backend.plug_vif(vif(net=h.nat, mode=mode))
    assert (a.vif_uuid, a.network_uuid, a.mode, a.mac) == (
        "vif-1",
        NAT.uuid,
        mode,
        "02:00:00:00:00:01",
    )
    assert a.netdev["type"] in ("user", "tap")
    assert await backend.plug_vif(vif(net=h.nat, mode=mode)) == a
    assert backend.attachments() == {"vif-1": a}
    assert NAT.uuid in backend.networks()


async def test_a_bridged_vif_is_a_tap_on_the_networks_bridge(h: Harness) -> None:
    backend = h.backend
    if Capability.BRIDGE not in backend.capabilities:
        pytest.skip("the backend cannot bridge")
    a = await backend.plug_vif(vif(net=h.internal, mode=AttachMode.BRIDGE))
    assert (a.mode, a.bridge, a.network_uuid) == (AttachMode.BRIDGE, h.internal.bridge, "net-int")
    assert a.netdev["type"] == "tap" and 0 < len(a.netdev["ifname"]) <= 15
    await backend.unplug_vif("vif-1")
    await backend.release_network(h.internal.uuid)
    assert backend.attachments() == {} and backend.networks() == {}


async def test_plug_on_another_network_needs_move(h: Harness) -> None:
    backend = h.backend
    mode = usable_mode(backend, AttachMode.NAT)
    a = await backend.plug_vif(vif(net=h.nat, mode=mode))
    with pytest.raises(NetworkBackendError):
        await backend.plug_vif(vif(net=h.internal, mode=mode))
    assert backend.attachments() == {"vif-1": a}


async def test_unplug_is_idempotent(h: Harness) -> None:
    backend = h.backend
    await backend.plug_vif(vif(net=h.internal, mode=usable_mode(backend, AttachMode.BRIDGE)))
    await backend.unplug_vif("vif-1")
    await backend.unplug_vif("vif-1")
    await backend.unplug_vif("never-plugged")
    assert backend.attachments() == {}


async def test_release_refuses_while_plugged_and_is_idempotent(h: Harness) -> None:
    backend, net = h.backend, h.internal
    await backend.plug_vif(vif(net=net, mode=usable_mode(backend, AttachMode.BRIDGE)))
    with pytest.raises(NetworkInUse):
        await backend.release_network(net.uuid)
    assert net.uuid in backend.networks()
    await backend.unplug_vif("vif-1")
    await backend.release_network(net.uuid)
    await backend.release_network(net.uuid)
    await backend.release_network("unknown")
    assert net.uuid not in backend.networks()


async def test_move(h: Harness) -> None:
    backend = h.backend
    if Capability.MOVE not in backend.capabilities:
        pytest.fail("every backend so far can move")
    mode = usable_mode(backend, AttachMode.BRIDGE)
    with pytest.raises(VifNotPlugged):
        await backend.move_vif(vif(net=h.internal, mode=mode))
    first = await backend.plug_vif(vif(net=h.internal, mode=mode))
    assert await backend.move_vif(vif(net=h.internal, mode=mode)) == first
    moved = await backend.move_vif(vif(net=h.second, mode=mode))
    assert (moved.network_uuid, moved.mode) == (h.second.uuid, mode)
    assert moved.bridge == (h.second.bridge if mode is AttachMode.BRIDGE else "")
    assert backend.attachments() == {"vif-1": moved}
    await backend.unplug_vif("vif-1")


async def test_move_between_user_mode_networks(h: Harness) -> None:
    backend = h.backend
    first = await backend.plug_vif(vif(net=h.nat, mode=AttachMode.RESTRICTED_NAT))
    other = NetworkSpec(uuid="net-ext", bridge="xenbr0", kind=NetworkKind.EXTERNAL, uplink="eth0")
    moved = await backend.move_vif(vif(net=other, mode=AttachMode.RESTRICTED_NAT))
    assert moved.network_uuid == "net-ext" and moved.netdev == first.netdev


# ---- the simulator: failure injection, and what it allows beyond the contract --------------
async def test_mode_outside_capabilities_leaves_nothing() -> None:
    b = SimulatorBackend(frozenset({Capability.RESTRICTED_NAT, Capability.MOVE}))
    with pytest.raises(ModeNotSupported):
        await b.plug_vif(vif(mode=AttachMode.BRIDGE))
    assert b.attachments() == {}
    await b.plug_vif(vif(mode=AttachMode.RESTRICTED_NAT))
    with pytest.raises(ModeNotSupported):
        await b.move_vif(vif(net=INTERNAL, mode=AttachMode.BRIDGE))
    assert b.attachments()["vif-1"].network_uuid == NAT.uuid


async def test_failed_plug_and_move_leave_the_old_state() -> None:
    b = SimulatorBackend()
    b.fail_next("plug_vif")
    with pytest.raises(NetworkBackendError):
        await b.plug_vif(vif())
    assert b.attachments() == {}
    first = await b.plug_vif(vif())
    b.fail_next("move_vif")
    with pytest.raises(NetworkBackendError):
        await b.move_vif(vif(net=INTERNAL, mode=AttachMode.BRIDGE))
    assert b.attachments() == {"vif-1": first}


async def test_simulator_moves_across_modes() -> None:
    b = SimulatorBackend()
    await b.plug_vif(vif())
    moved = await b.move_vif(vif(net=INTERNAL, mode=AttachMode.BRIDGE))
    assert (moved.network_uuid, moved.mode, moved.bridge) == ("net-int", AttachMode.BRIDGE, "xapi1")


def test_simulator_netdev_options() -> None:
    from openxapi.net.simulator import netdev_options, tap_name

    user = netdev_options(vif(mode=AttachMode.RESTRICTED_NAT))
    assert user["type"] == "user" and user["restrict"] == "on" and user["net"] == "10.0.2.0/24"
    assert netdev_options(vif(mode=AttachMode.NAT))["restrict"] == "off"
    tap = netdev_options(vif(uuid="0f1e2d3c-aaaa-bbbb-cccc-000000000000", mode=AttachMode.BRIDGE))
    assert tap["type"] == "tap" and tap["ifname"] == tap_name(
        "0f1e2d3c-aaaa-bbbb-cccc-000000000000"
    )
    assert len(tap["ifname"]) <= 15
