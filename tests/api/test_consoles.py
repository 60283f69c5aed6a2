"""Console records follow a VM's domain: one rfb console while it has a graphical console."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from openxapi.api.consoles import console_target, default_console, sync_consoles
from openxapi.api.vm_domains import domains_of, stop_domains
from openxapi.xenops.backend import DomainInfo
from tests.api.test_vm_power import installed
from tests.api.world import World, create_args


@pytest.fixture
async def w(world: World) -> AsyncIterator[World]:
    world.config.vm_shutdown_timeout = 0.2
    yield world
    await stop_domains(world.state)


def running(vnc: str = "unix:/run/vnc.sock") -> DomainInfo:
    return DomainInfo(
        uuid="", domid=1, state="running", memory_actual=0, vcpus=1, start_time=0.0, vnc=vnc
    )


async def new_vm(w: World, label: str = "vm") -> str:
    ref = await w.call("VM.create", w.root, create_args(w.api, "VM", name_label=label))
    assert isinstance(ref, str)
    return ref


async def consoles(w: World, vm: str) -> list[dict[str, Any]]:
    refs = await w.call("VM.get_consoles", w.root, vm)
    return [await w.record("console", ref) for ref in refs]


def host_address(w: World) -> str:
    host = w.store.get("host", w.state.host_ref)
    assert host is not None
    return str(host["address"])


async def test_a_domain_with_a_graphical_console_has_one_rfb_console(w: World) -> None:
    vm = await new_vm(w)
    sync_consoles(w.state, vm, running())
    (console,) = await consoles(w, vm)
    assert console["protocol"] == "rfb" and console["VM"] == vm
    assert console["location"] == f"https://{host_address(w)}/console?uuid={console['uuid']}"
    ref = await w.call("console.get_by_uuid", w.root, console["uuid"])
    assert ref in await w.call("console.get_all", w.root)
    assert default_console(w.state, vm) == ref


async def test_syncing_again_writes_nothing(w: World) -> None:
    vm = await new_vm(w)
    sync_consoles(w.state, vm, running())
    before = w.store.generation
    sync_consoles(w.state, vm, running("unix:/elsewhere.sock"))  # where it listens: not recorded
    assert w.store.generation == before
    sync_consoles(w.state, vm, None)
    after = w.store.generation
    sync_consoles(w.state, vm, None)
    sync_consoles(w.state, vm, running(""))
    assert w.store.generation == after


async def test_a_domain_without_a_console_has_none(w: World) -> None:
    vm = await new_vm(w)
    sync_consoles(w.state, vm, running())
    (old,) = await w.call("VM.get_consoles", w.root, vm)
    sync_consoles(w.state, vm, running(""))
    assert await w.call("VM.get_consoles", w.root, vm) == []
    assert old not in await w.call("console.get_all", w.root)
    sync_consoles(w.state, vm, running())
    sync_consoles(w.state, vm, None)
    assert await w.call("VM.get_consoles", w.root, vm) == []


async def test_foreign_consoles_are_replaced_by_the_one_rfb_console(w: World) -> None:
    vm = await new_vm(w)
    for protocol, location in (
        ("vt100", "https://10.9.9.9/console?uuid=x"),
        ("rfb", "https://10.9.9.9/console?uuid=y"),  # an address the host no longer has
    ):
        ref = w.state.create("console", {"protocol": protocol, "location": location, "VM": vm})
        w.store.update("VM", vm, {"consoles": [*w.store.get("VM", vm)["consoles"], ref]})  # type: ignore[index]
    sync_consoles(w.state, vm, running())
    (console,) = await consoles(w, vm)
    assert console["protocol"] == "rfb"
    assert console["location"].startswith(f"https://{host_address(w)}/console?uuid=")


async def test_a_new_host_address_moves_the_console(w: World) -> None:
    vm = await new_vm(w)
    sync_consoles(w.state, vm, running())
    (before,) = await consoles(w, vm)
    await w.call("host.set_address", w.root, w.state.host_ref, "fd00::7")
    sync_consoles(w.state, vm, running())
    (after,) = await consoles(w, vm)
    assert after["uuid"] != before["uuid"]
    assert after["location"] == f"https://[fd00::7]/console?uuid={after['uuid']}"


async def test_the_control_domains_consoles_are_left_alone(w: World) -> None:
    host = w.store.get("host", w.state.host_ref)
    assert host is not None
    dom0 = host["control_domain"]
    ref = w.state.create(
        "console", {"protocol": "vt100", "location": "https://h/console?ref=x", "VM": dom0}
    )
    w.store.update("VM", dom0, {"consoles": [ref]})
    sync_consoles(w.state, dom0, None)
    sync_consoles(w.state, dom0, running())
    assert await w.call("VM.get_consoles", w.root, dom0) == [ref]
    assert await console_target(w.state, ref) == ""


async def test_console_target_is_where_the_running_domain_listens(w: World) -> None:
    vm, _ = await installed(w, disks=False)
    await w.call("VM.start", w.root, vm, False, False)
    uuid = w.store.get("VM", vm)["uuid"]  # type: ignore[index]
    info = await domains_of(w.state).backend.info(uuid)
    assert info is not None and info.vnc.startswith("unix:")
    sync_consoles(w.state, vm, info)
    console = default_console(w.state, vm)
    assert await console_target(w.state, console) == info.vnc
    await w.call("VM.hard_shutdown", w.root, vm)
    assert await console_target(w.state, console) == ""


async def test_starting_and_stopping_a_vm_makes_and_removes_its_console(w: World) -> None:
    """Needs VmDomains to call sync_consoles when it records a domain starting or stopping."""
    vm, _ = await installed(w, disks=False)
    assert await w.call("VM.get_consoles", w.root, vm) == []
    await w.call("VM.start", w.root, vm, False, False)
    (console,) = await consoles(w, vm)
    assert console["protocol"] == "rfb"
    assert console["location"] == f"https://{host_address(w)}/console?uuid={console['uuid']}"
    await w.call("VM.clean_shutdown", w.root, vm)
    assert await w.call("VM.get_consoles", w.root, vm) == []
    await w.call("VM.start", w.root, vm, True, False)  # paused: the console is there already
    assert len(await w.call("VM.get_consoles", w.root, vm)) == 1
    await w.call("VM.hard_shutdown", w.root, vm)
    assert await w.call("VM.get_consoles", w.root, vm) == []
