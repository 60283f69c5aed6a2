"""The network backend contract (openxapi.net.backend), run against every implementation."""

from __future__ import annotations

from collections.abc import Callable

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
from openxapi.net.simulator import SimulatorBackend

BACKENDS: dict[str, Callable[[], NetworkBackend]] = {"simulator": SimulatorBackend}

NAT = NetworkSpec(uuid="net-nat", bridge="xapi0", kind=NetworkKind.NAT)
INTERNAL = NetworkSpec(uuid="net-int", bridge="xapi1", kind=NetworkKind.INTERNAL, mtu=9000)


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


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> NetworkBackend:
    return BACKENDS[request.param]()


def usable_mode(b: NetworkBackend, preferred: AttachMode) -> AttachMode:
    need = {
        AttachMode.NAT: Capability.NAT,
        AttachMode.BRIDGE: Capability.BRIDGE,
        AttachMode.RESTRICTED_NAT: Capability.RESTRICTED_NAT,
    }
    if need[preferred] in b.capabilities:
        return preferred
    return next(m for m, c in need.items() if c in b.capabilities)


async def test_ensure_network_is_idempotent(backend: NetworkBackend) -> None:
    await backend.ensure_network(INTERNAL)
    await backend.ensure_network(INTERNAL)
    assert backend.networks() == {INTERNAL.uuid: INTERNAL}
    bigger = NetworkSpec(INTERNAL.uuid, INTERNAL.bridge, INTERNAL.kind, mtu=1500)
    await backend.ensure_network(bigger)
    assert backend.networks()[INTERNAL.uuid].mtu == 1500


async def test_plug_is_idempotent_and_describes_the_attachment(backend: NetworkBackend) -> None:
    mode = usable_mode(backend, AttachMode.NAT)
    a = await backend.plug_vif(vif(mode=mode))
    assert (a.vif_uuid, a.network_uuid, a.mode, a.mac) == (
        "vif-1",
        NAT.uuid,
        mode,
        "02:00:00:00:00:01",
    )
    assert a.netdev["type"] in ("user", "tap")
    assert await backend.plug_vif(vif(mode=mode)) == a
    assert backend.attachments() == {"vif-1": a}
    assert NAT.uuid in backend.networks()


async def test_plug_on_another_network_needs_move(backend: NetworkBackend) -> None:
    mode = usable_mode(backend, AttachMode.NAT)
    a = await backend.plug_vif(vif(mode=mode))
    with pytest.raises(NetworkBackendError):
        await backend.plug_vif(vif(net=INTERNAL, mode=mode))
    assert backend.attachments() == {"vif-1": a}


async def test_unplug_is_idempotent(backend: NetworkBackend) -> None:
    await backend.plug_vif(vif(mode=usable_mode(backend, AttachMode.NAT)))
    await backend.unplug_vif("vif-1")
    await backend.unplug_vif("vif-1")
    await backend.unplug_vif("never-plugged")
    assert backend.attachments() == {}


async def test_release_refuses_while_plugged_and_is_idempotent(backend: NetworkBackend) -> None:
    await backend.plug_vif(vif(mode=usable_mode(backend, AttachMode.NAT)))
    with pytest.raises(NetworkInUse):
        await backend.release_network(NAT.uuid)
    assert NAT.uuid in backend.networks()
    await backend.unplug_vif("vif-1")
    await backend.release_network(NAT.uuid)
    await backend.release_network(NAT.uuid)
    await backend.release_network("unknown")
    assert NAT.uuid not in backend.networks()


async def test_move(backend: NetworkBackend) -> None:
    if Capability.MOVE not in backend.capabilities:
        pytest.fail("every backend so far can move")
    mode = usable_mode(backend, AttachMode.NAT)
    with pytest.raises(VifNotPlugged):
        await backend.move_vif(vif(mode=mode))
    first = await backend.plug_vif(vif(mode=mode))
    assert await backend.move_vif(vif(mode=mode)) == first
    target_mode = usable_mode(backend, AttachMode.BRIDGE)
    moved = await backend.move_vif(vif(net=INTERNAL, mode=target_mode))
    assert (moved.network_uuid, moved.mode) == (INTERNAL.uuid, target_mode)
    assert backend.attachments() == {"vif-1": moved}


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
