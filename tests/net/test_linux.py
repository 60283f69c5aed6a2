"""The Linux network backend against the real kernel: namespaces, bridges and taps.

Every test works in network namespaces of its own (``oxt-<random>``), deleted afterwards
even when the test fails, and checks that the host's own namespace gained no link.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from openxapi.net.backend import (
    AttachMode,
    BridgeNotAvailable,
    Capability,
    NetworkBackendError,
    NetworkInUse,
    NetworkKind,
    NetworkSpec,
    VifSpec,
)
from openxapi.net.linux import LinuxBackend, can_manage_links
from openxapi.net.simulator import netdev_options, tap_name

pytestmark = pytest.mark.skipif(not can_manage_links(), reason="needs root and iproute2")

VIF_A = "0f1e2d3c-aaaa-4bbb-8ccc-000000000001"
VIF_B = "0f1e2d3c-bbbb-4bbb-8ccc-000000000002"


# ---- the host, as a user inspects it -------------------------------------------------------
def ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def namespaces() -> set[str]:
    return {line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()}


def links(netns: str = "") -> dict[str, dict[str, Any]]:
    """The links of a namespace (the root one for ""), by name, as ``ip -j -d`` shows them."""
    where = ("-n", netns) if netns else ()
    return {str(d["ifname"]): d for d in json.loads(ip(*where, "-d", "-j", "link", "show"))}


def link(netns: str, name: str) -> dict[str, Any] | None:
    out = ip("-n", netns, "-j", "link", "show", name, check=False)
    found = json.loads(out) if out.strip() else []
    return found[0] if found else None


def is_up(d: dict[str, Any]) -> bool:
    return "UP" in d["flags"]


@pytest.fixture
def new_netns() -> Iterator[Callable[[], str]]:
    """Fresh namespace names; whatever exists under them is deleted after the test, and the
    root namespace must have gained no link."""
    names: list[str] = []
    before = set(links())

    def make() -> str:
        names.append(f"oxt-{secrets.token_hex(4)}")
        return names[-1]

    try:
        yield make
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    assert set(links()) - before == set()
    assert not set(names) & namespaces()


def network(netns: str, uuid: str = "net-a", bridge: str = "oxbr0", mtu: int = 1500) -> NetworkSpec:
    return NetworkSpec(uuid=uuid, bridge=bridge, kind=NetworkKind.INTERNAL, mtu=mtu, netns=netns)


def bridged(uuid: str, net: NetworkSpec, mac: str = "02:00:00:00:00:01") -> VifSpec:
    return VifSpec(
        uuid=uuid, vm_uuid="vm-1", device=0, mac=mac, mtu=1500, network=net, mode=AttachMode.BRIDGE
    )


# ---- networks ------------------------------------------------------------------------------
async def test_a_namespaced_network_is_a_bridge_in_its_own_namespace(
    new_netns: Callable[[], str],
) -> None:
    ns = new_netns()
    b = LinuxBackend()
    assert {Capability.BRIDGE, Capability.MOVE, Capability.RESTRICTED_NAT} <= b.capabilities
    assert Capability.UPLINK not in b.capabilities
    net = network(ns, mtu=9000)
    await b.ensure_network(net)
    assert ns in namespaces()
    inside = links(ns)
    assert set(inside) == {"lo", "oxbr0"}
    assert is_up(inside["lo"])
    br = inside["oxbr0"]
    assert br["linkinfo"]["info_kind"] == "bridge" and is_up(br) and br["mtu"] == 9000
    await b.ensure_network(replace(net, mtu=1400))
    assert links(ns)["oxbr0"]["mtu"] == 1400
    assert b.networks() == {"net-a": replace(net, mtu=1400)}
    await b.release_network("net-a")
    assert ns not in namespaces()
    assert b.networks() == {}


async def test_a_namespace_and_bridge_made_by_someone_else_stay(
    new_netns: Callable[[], str],
) -> None:
    ns = new_netns()
    ip("netns", "add", ns)
    ip("-n", ns, "link", "add", "userbr", "type", "bridge")
    b = LinuxBackend()
    theirs, ours = network(ns, "net-a", "userbr"), network(ns, "net-b", "oxbr1", mtu=1400)
    await b.ensure_network(theirs)
    await b.ensure_network(ours)
    a = await b.plug_vif(bridged(VIF_A, theirs))
    assert link(ns, a.netdev["ifname"])["master"] == "userbr"  # type: ignore[index]
    assert links(ns)["userbr"]["mtu"] == 1500  # not ours to change
    await b.unplug_vif(VIF_A)
    await b.release_network("net-a")
    await b.release_network("net-b")
    assert ns in namespaces()
    assert set(links(ns)) == {"lo", "userbr"}


async def test_two_networks_share_a_namespace_until_the_last_goes(
    new_netns: Callable[[], str],
) -> None:
    ns = new_netns()
    b = LinuxBackend()
    await b.ensure_network(network(ns, "net-a", "oxbr0"))
    await b.ensure_network(network(ns, "net-b", "oxbr1"))
    with pytest.raises(NetworkBackendError):
        await b.ensure_network(network(ns, "net-c", "oxbr1"))
    await b.release_network("net-a")
    assert set(links(ns)) == {"lo", "oxbr1"}
    await b.release_network("net-b")
    assert ns not in namespaces()


async def test_a_failed_ensure_leaves_nothing(new_netns: Callable[[], str]) -> None:
    ns, theirs = new_netns(), new_netns()
    b = LinuxBackend()
    with pytest.raises(NetworkBackendError):
        await b.ensure_network(network(ns, mtu=10))  # below what any link accepts
    assert ns not in namespaces() and b.networks() == {}
    ip("netns", "add", theirs)
    ip("-n", theirs, "tuntap", "add", "dev", "oxbr0", "mode", "tun")
    with pytest.raises(NetworkBackendError):
        await b.ensure_network(network(theirs))
    assert links(theirs)["oxbr0"]["linkinfo"]["info_data"]["type"] == "tun"
    for bad in (network("a/b"), network(ns, bridge="-x"), network(ns, bridge="b" * 16)):
        with pytest.raises(NetworkBackendError):
            await b.ensure_network(bad)
    assert ns not in namespaces() and b.networks() == {}


# ---- VIFs ----------------------------------------------------------------------------------
async def test_a_plugged_vif_is_an_up_tap_port_of_the_bridge_in_the_namespace(
    new_netns: Callable[[], str],
) -> None:
    ns = new_netns()
    b = LinuxBackend()
    net = network(ns, mtu=9000)
    spec = bridged(VIF_A, net)
    a = await b.plug_vif(spec)
    tap = tap_name(VIF_A)
    assert (a.mode, a.netns, a.bridge, a.network_uuid, a.mac) == (
        AttachMode.BRIDGE,
        ns,
        "oxbr0",
        "net-a",
        "02:00:00:00:00:01",
    )
    assert dict(a.netdev) == netdev_options(spec) and a.netdev["ifname"] == tap
    assert next(iter(a.netdev)) == "type" and a.netdev["type"] == "tap"
    shown = json.loads(ip("-n", ns, "-j", "link", "show", tap))[0]
    assert shown["master"] == "oxbr0" and is_up(shown) and shown["mtu"] == 9000
    assert links(ns)[tap]["linkinfo"]["info_data"]["type"] == "tap"
    assert await b.plug_vif(spec) == a
    assert b.attachments() == {VIF_A: a}
    with pytest.raises(NetworkInUse):
        await b.release_network("net-a")
    await b.unplug_vif(VIF_A)
    assert link(ns, tap) is None and b.attachments() == {}
    await b.release_network("net-a")
    assert ns not in namespaces()


async def test_user_mode_vifs_touch_nothing(new_netns: Callable[[], str]) -> None:
    new_netns()
    b = LinuxBackend()
    nat = NetworkSpec(uuid="net-nat", bridge="xapi0", kind=NetworkKind.NAT)
    for mode in (AttachMode.NAT, AttachMode.RESTRICTED_NAT):
        spec = replace(bridged(f"vif-{mode}", nat), mode=mode)
        a = await b.plug_vif(spec)
        assert dict(a.netdev) == netdev_options(spec) and a.netdev["type"] == "user"
        assert (a.netns, a.bridge) == ("", "")
    assert b.attachments()["vif-restricted-nat"].netdev["restrict"] == "on"


async def test_no_bridge_in_the_root_namespace_unless_allowed(
    new_netns: Callable[[], str],
) -> None:
    new_netns()
    b = LinuxBackend()
    plain = NetworkSpec(uuid="net-a", bridge="oxroot0", kind=NetworkKind.INTERNAL)
    await b.ensure_network(plain)
    with pytest.raises(BridgeNotAvailable):
        await b.plug_vif(bridged(VIF_A, plain))
    assert b.attachments() == {}
    a = await b.plug_vif(replace(bridged(VIF_A, plain), mode=AttachMode.RESTRICTED_NAT))
    assert a.netns == "" and "oxroot0" not in links()
    await b.unplug_vif(VIF_A)
    await b.release_network("net-a")


async def test_a_tap_name_taken_by_another_link_is_refused(new_netns: Callable[[], str]) -> None:
    ns = new_netns()
    b = LinuxBackend()
    net = network(ns)
    await b.ensure_network(net)
    ip("-n", ns, "tuntap", "add", "dev", tap_name(VIF_A), "mode", "tap")
    with pytest.raises(NetworkBackendError):
        await b.plug_vif(bridged(VIF_A, net))
    assert b.attachments() == {}
    assert "master" not in links(ns)[tap_name(VIF_A)]  # someone else's tap: left alone


async def test_move_between_bridges_of_one_namespace(new_netns: Callable[[], str]) -> None:
    ns, elsewhere = new_netns(), new_netns()
    b = LinuxBackend()
    first, second = network(ns, "net-a", "oxbr0"), network(ns, "net-b", "oxbr1")
    a = await b.plug_vif(bridged(VIF_A, first))
    moved = await b.move_vif(bridged(VIF_A, second))
    assert (moved.network_uuid, moved.bridge, moved.netns) == ("net-b", "oxbr1", ns)
    assert moved.netdev == a.netdev
    assert link(ns, tap_name(VIF_A))["master"] == "oxbr1"  # type: ignore[index]
    with pytest.raises(NetworkBackendError):
        await b.move_vif(bridged(VIF_A, network(elsewhere, "net-c")))
    with pytest.raises(NetworkBackendError):
        await b.move_vif(replace(bridged(VIF_A, first), mode=AttachMode.RESTRICTED_NAT))
    assert b.attachments() == {VIF_A: moved}
    assert link(ns, tap_name(VIF_A))["master"] == "oxbr1"  # type: ignore[index]


async def test_a_restarted_backend_readopts_its_bridges_and_taps(
    new_netns: Callable[[], str],
) -> None:
    ns, theirs = new_netns(), new_netns()
    ip("netns", "add", theirs)
    ip("-n", theirs, "link", "add", "userbr", "type", "bridge")
    before = LinuxBackend()
    ours = network(ns, "net-a", "oxbr0", mtu=9000)
    a = await before.plug_vif(bridged(VIF_A, ours))
    b = await before.plug_vif(
        bridged(VIF_B, network(theirs, "net-b", "userbr"), "02:00:00:00:00:02")
    )
    await before.plug_vif(replace(bridged("vif-nat", ours), mode=AttachMode.RESTRICTED_NAT))

    after = LinuxBackend()
    await after.open([ns, theirs, "oxt-missing", "not/valid"])
    assert after.attachments() == {VIF_A: a, VIF_B: b}
    assert after.networks()["net-a"] == NetworkSpec(
        "net-a", "oxbr0", NetworkKind.INTERNAL, 9000, netns=ns
    )
    assert after.networks()["net-b"].bridge == "userbr"
    assert await after.plug_vif(bridged(VIF_A, ours)) == a

    await after.unplug_vif(VIF_A)
    await after.unplug_vif(VIF_B)
    await after.release_network("net-a")
    await after.release_network("net-b")
    assert ns not in namespaces()  # the first backend made it; the second knows
    assert set(links(theirs)) == {"lo", "userbr"}


async def test_plugging_again_after_a_restart_takes_the_tap_back(
    new_netns: Callable[[], str],
) -> None:
    ns = new_netns()
    a = await LinuxBackend().plug_vif(bridged(VIF_A, network(ns)))
    again = LinuxBackend()  # not opened on that namespace
    assert await again.plug_vif(bridged(VIF_A, network(ns))) == a
    assert list(links(ns)).count(tap_name(VIF_A)) == 1
    await again.unplug_vif(VIF_A)
    await again.release_network("net-a")
    assert ns not in namespaces()


# ---- the root namespace, when the host allows it --------------------------------------------
ROOT_ALLOWED = textwrap.dedent(
    """
    import asyncio, json
    from openxapi.net.backend import AttachMode, NetworkKind, NetworkSpec, VifSpec
    from openxapi.net.linux import LinuxBackend

    async def main():
        b = LinuxBackend(allow_root_namespace=True)
        internal = NetworkSpec("net-a", "oxroot0", NetworkKind.INTERNAL)
        external = NetworkSpec("net-x", "xenbr0", NetworkKind.EXTERNAL, uplink="eth0")
        a = await b.plug_vif(VifSpec("vif-a", "vm", 0, "02:00:00:00:00:01", 1500, internal,
                                     AttachMode.BRIDGE))
        await b.plug_vif(VifSpec("vif-x", "vm", 1, "02:00:00:00:00:02", 1500, external,
                                 AttachMode.RESTRICTED_NAT))
        print(json.dumps([a.netns, a.bridge, a.netdev["ifname"]]))

    asyncio.run(main())
    """
)


async def test_allowed_into_the_root_namespace_it_bridges_internal_networks_there(
    new_netns: Callable[[], str],
) -> None:
    # The backend runs inside a test namespace, which is its "root" namespace.
    ns = new_netns()
    ip("netns", "add", ns)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src}
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", ROOT_ALLOWED],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    netns, bridge, tap = json.loads(done.stdout)
    assert (netns, bridge) == ("", "oxroot0")
    inside = links(ns)
    assert set(inside) == {"lo", "oxroot0", tap}
    assert inside[tap]["master"] == "oxroot0" and is_up(inside[tap])


# ---- through the API: network.create with a namespace, VM start, restart --------------------
@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    from openxapi.auth.accounts import AccountBook
    from tests.api.world import ROOT_PASSWORD

    d = tmp_path / "data"
    d.mkdir()
    AccountBook(d).ensure_root(ROOT_PASSWORD)
    return d


async def test_a_vm_on_a_namespaced_network_gets_a_tap_there(
    new_netns: Callable[[], str], data_dir: Path
) -> None:
    from openxapi.api.handlers.network import backend_of, use_linux_backend
    from openxapi.api.handlers.vif import attach_vm_vifs, detach_vm_vifs
    from tests.api.network_helpers import nat_network, new_network, new_vif, new_vm, set_power
    from tests.api.world import open_world

    ns = new_netns()
    w = await open_world(data_dir, durable=True)
    try:
        await use_linux_backend(w.state)
        net = await new_network(w, bridge="oxbr0", other_config={"netns": ns})
        plain = await new_network(w)
        vm = await new_vm(w)
        on_ns = await new_vif(w, vm, net, "0")
        await new_vif(w, vm, nat_network(w), "1")
        await new_vif(w, vm, plain, "2")
        set_power(w, vm, "Running")
        done = await attach_vm_vifs(w.state, vm)
        modes = [(a.mode, a.netns) for _, a in done]
        assert modes == [
            (AttachMode.BRIDGE, ns),
            (AttachMode.NAT, ""),
            (AttachMode.RESTRICTED_NAT, ""),
        ]
        tap = done[0][1].netdev["ifname"]
        assert json.loads(ip("-n", ns, "-j", "link", "show", tap))[0]["master"] == "oxbr0"
        assert await w.call("VIF.get_currently_attached", w.root, on_ns) is True

        w = await w.restart()
        readopted = await use_linux_backend(w.state)
        assert readopted.attachments() == {done[0][1].vif_uuid: done[0][1]}

        await detach_vm_vifs(w.state, vm)
        assert link(ns, tap) is None
        set_power(w, vm, "Halted")
        await w.call("network.destroy", w.root, net)
        assert ns not in namespaces()
        assert backend_of(w.state) is readopted
    finally:
        await w.close()
