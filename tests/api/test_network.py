"""network: system networks of a fresh host, create/destroy rules, purposes, locking."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from openxapi.api.handlers.network import backend_of, network_spec
from openxapi.net.backend import NetworkKind
from tests.api.network_helpers import (
    TWO_NICS,
    nat_network,
    new_network,
    new_vif,
    new_vm,
    pif,
    world_on,
)
from tests.api.world import World, create_args


@pytest.fixture
async def two_nics(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    w = await world_on(data_dir, monkeypatch, TWO_NICS)
    yield w
    await w.close()


def networks_by_bridge(w: World) -> dict[str, dict[str, object]]:
    return {rec["bridge"]: rec for rec in w.store.table("network").values()}


async def test_fresh_host_has_the_system_networks(world: World) -> None:
    nets = networks_by_bridge(world)
    himn = nets["xenapi"]
    assert himn["name_label"] == "Host internal management network"
    assert himn["other_config"] == {
        "is_guest_installer_network": "true",
        "is_host_internal_management_network": "true",
        "ip_begin": "169.254.0.1",
        "ip_end": "169.254.255.254",
        "netmask": "255.255.0.0",
    }
    assert himn["PIFs"] == [] and himn["MTU"] == 1500 and himn["managed"] is True
    nat = world.store.get("network", nat_network(world))
    assert nat is not None and nat["name_label"] == "NAT network"
    assert nat["bridge"].startswith("xapi") and len(nat["PIFs"]) == 1
    nat_pif = world.store.get("PIF", nat["PIFs"][0])
    assert nat_pif is not None
    assert (nat_pif["physical"], nat_pif["device"], nat_pif["VLAN"]) == (False, "nat0", -1)
    assert nat_pif["IP"] == "10.0.2.2" and nat_pif["ip_configuration_mode"] == "Static"
    assert nat_pif["currently_attached"] is True and nat_pif["managed"] is False
    assert world.store.get("PIF_metrics", nat_pif["metrics"]) is not None


async def test_network_kinds_for_the_backend(two_nics: World) -> None:
    w = two_nics
    nets = networks_by_bridge(w)
    refs = {rec["bridge"]: ref for ref, rec in w.store.table("network").items()}
    assert network_spec(w.state, refs["xenapi"]).kind is NetworkKind.HOST_INTERNAL
    assert network_spec(w.state, nat_network(w)).kind is NetworkKind.NAT
    ext = network_spec(w.state, refs["xenbr0"])
    assert (ext.kind, ext.uplink, ext.vlan, ext.bridge) == (
        NetworkKind.EXTERNAL,
        "enp1s0",
        -1,
        "xenbr0",
    )
    own = await new_network(w, name_label="private")
    assert network_spec(w.state, own).kind is NetworkKind.INTERNAL
    assert nets["xenbr0"]["name_label"] == "Pool-wide network 0"


async def test_create_picks_xapi_bridges_and_applies_defaults(world: World) -> None:
    a = await new_network(world, name_label="a", MTU="0")
    b = await new_network(world, name_label="b", MTU="-5")
    ra, rb = world.store.get("network", a), world.store.get("network", b)
    assert ra is not None and rb is not None
    n_a, n_b = int(ra["bridge"][4:]), int(rb["bridge"][4:])
    assert ra["bridge"].startswith("xapi") and n_b > n_a
    assert ra["MTU"] == 1500 and rb["MTU"] == 1500
    assert ra["purpose"] == [] and ra["default_locking_mode"] == "unlocked"
    assert ra["managed"] is True and ra["assigned_ips"] == {}
    used = {rec["bridge"] for rec in world.store.table("network").values()}
    assert len(used) == len(world.store.table("network"))
    c = await new_network(world, name_label="c", MTU="9000", bridge="mybr0")
    assert world.store.get("network", c)["MTU"] == 9000  # type: ignore[index]


@pytest.mark.parametrize(
    "bridge", ["xenbr7", "xapi99", "vif1.0", "tap3", "eth9", "a23456789012345x"]
)
async def test_client_bridge_names_are_checked(world: World, bridge: str) -> None:
    args = create_args(world.api, "network", name_label="n", bridge=bridge)
    assert await world.fail("network.create", world.root, args) == [
        "INVALID_VALUE",
        "bridge",
        bridge,
    ]


async def test_bridge_name_exists(world: World) -> None:
    await new_network(world, bridge="lab0")
    args = create_args(world.api, "network", bridge="lab0")
    assert await world.fail("network.create", world.root, args) == ["BRIDGE_NAME_EXISTS", "lab0"]


async def test_create_without_other_config_names_it(world: World) -> None:
    err = await world.fail("network.create", world.root, {"name_label": "x"})
    assert err[0] == "INTERNAL_ERROR" and "other_config" in err[1]


async def test_destroy_refusals_in_the_reference_order(two_nics: World) -> None:
    w = two_nics
    refs = {rec["bridge"]: ref for ref, rec in w.store.table("network").items()}
    pif_ref, _ = pif(w, "enp1s0")
    assert await w.fail("network.destroy", w.root, refs["xenbr0"]) == [
        "NETWORK_CONTAINS_PIF",
        pif_ref,
    ]
    assert await w.fail("network.destroy", w.root, refs["xenapi"]) == [
        "CANNOT_DESTROY_SYSTEM_NETWORK",
        refs["xenapi"],
    ]
    vm = await new_vm(w, power_state="Suspended")
    attached = await new_vif(w, vm, refs["xenbr0"], currently_attached=True)
    assert await w.fail("network.destroy", w.root, refs["xenbr0"]) == [
        "NETWORK_CONTAINS_VIF",
        attached,
    ]
    assert await w.fail("network.destroy", w.root, "OpaqueRef:nope") == [
        "HANDLE_INVALID",
        "network",
        "OpaqueRef:nope",
    ]


async def test_destroy_takes_detached_vifs_with_it(world: World) -> None:
    net = await new_network(world, name_label="doomed")
    vm = await new_vm(world)
    vif = await new_vif(world, vm, net)
    metrics = world.store.get("VIF", vif)["metrics"]  # type: ignore[index]
    spec = network_spec(world.state, net)
    await backend_of(world.state).ensure_network(spec)
    await world.call("network.destroy", world.root, net)
    assert world.store.get("network", net) is None
    assert world.store.get("VIF", vif) is None
    assert world.store.get("VIF_metrics", metrics) is None
    assert await world.call("VM.get_VIFs", world.root, vm) == []
    assert spec.uuid not in backend_of(world.state).networks()


async def test_purposes(world: World) -> None:
    a = await new_network(world, name_label="a")
    b = await new_network(world, name_label="b")
    await world.call("network.add_purpose", world.root, a, "nbd")
    await world.call("network.add_purpose", world.root, a, "nbd")
    assert await world.call("network.get_purpose", world.root, a) == ["nbd"]
    assert await world.fail("network.add_purpose", world.root, b, "insecure_nbd") == [
        "NETWORK_INCOMPATIBLE_PURPOSES",
        "insecure_nbd",
        "nbd",
    ]
    assert await world.fail("network.add_purpose", world.root, b, "bogus") == [
        "FIELD_TYPE_ERROR",
        "value",
    ]
    await world.call("network.remove_purpose", world.root, a, "nbd")
    await world.call("network.remove_purpose", world.root, a, "nbd")
    await world.call("network.add_purpose", world.root, b, "insecure_nbd")
    assert await world.call("network.get_purpose", world.root, b) == ["insecure_nbd"]
    unmanaged = await new_network(world, managed=False)
    assert await world.fail("network.add_purpose", world.root, unmanaged, "nbd") == [
        "NETWORK_UNMANAGED",
        unmanaged,
    ]


async def test_default_locking_mode(world: World) -> None:
    net = await new_network(world)
    await world.call("network.set_default_locking_mode", world.root, net, "disabled")
    assert await world.call("network.get_default_locking_mode", world.root, net) == "disabled"
    vm = await new_vm(world, power_state="Suspended")
    vif = await new_vif(world, vm, net, currently_attached=True)
    assert await world.fail("network.set_default_locking_mode", world.root, net, "unlocked") == [
        "VIF_IN_USE",
        net,
        vif,
    ]


async def test_network_operations_stay_empty_as_in_the_reference(world: World) -> None:
    net = await new_network(world)
    rec = await world.record("network", net)
    assert rec["allowed_operations"] == [] and rec["current_operations"] == {}
