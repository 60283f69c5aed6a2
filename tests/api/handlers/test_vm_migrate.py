"""VM.pool_migrate within the one-host pool (the reference's localhost migration);
host.migrate_receive's dest map; VM.assert_can_migrate and VM.migrate_send to this host
(storage motion) and their refusals. Migrations between two servers are in
tests/e2e/test_vm_migrate_send.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from openxapi.api.vm_domains import stop_domains
from tests.api.handlers.vm_kit import bad_power, new_vm, rec, running_vm
from tests.api.storage_kit import new_sr, new_vbd, new_vdi, vdi_bytes, write_vdi
from tests.api.world import World
from tests.serverproc import free_port


@pytest.fixture
async def w(world: World) -> AsyncIterator[World]:
    yield world
    await stop_domains(world.state)


def host_of(w: World) -> str:
    return str(rec(w, "pool", next(iter(w.state.store.table("pool"))))["master"])


def network_named(w: World, label: str) -> str:
    return next(r for r, n in w.store.table("network").items() if n["name_label"] == label)


async def dest_map(w: World) -> dict[str, str]:
    net = network_named(w, "Pool-wide network 0")
    dest = await w.call("host.migrate_receive", w.root, host_of(w), net, {})
    assert isinstance(dest, dict)
    return dest


async def test_a_running_vm_moves_to_a_new_domain_on_this_host(w: World) -> None:
    vm = await running_vm(w)
    before = rec(w, "VM", vm)
    host = before["resident_on"]
    await w.call("VM.pool_migrate", w.root, vm, host, {"live": "true"})
    after = rec(w, "VM", vm)
    assert after["power_state"] == "Running" and after["resident_on"] == host
    assert after["domid"] != before["domid"]
    assert after["current_operations"] == {}


async def test_only_a_running_vm_migrates(w: World) -> None:
    halted = await new_vm(w)
    host = host_of(w)
    assert await w.fail("VM.pool_migrate", w.root, halted, host, {}) == bad_power(
        halted, "running", "halted"
    )
    assert await w.fail("VM.pool_migrate", w.root, halted, "OpaqueRef:nope", {}) == [
        "HANDLE_INVALID",
        "host",
        "OpaqueRef:nope",
    ]


async def test_migrate_receive_names_this_servers_services_and_a_new_session(w: World) -> None:
    dest = await dest_map(w)
    assert set(dest) == {"SM", "host", "xenops", "session_id", "master"}
    session = dest["session_id"]
    assert session != w.root and rec(w, "session", session)["is_local_superuser"]
    port = w.config.http_port
    base = "http://127.0.0.1" + ("" if port == 80 else f":{port}")
    assert dest["master"] == base and dest["host"] == host_of(w)
    assert dest["xenops"] == f"{base}/services/xenops?session_id={session}"
    assert dest["SM"] == f"{base}/services/SM?session_id={session}"
    unconnected = network_named(w, "Host internal management network")
    assert await w.fail("host.migrate_receive", w.root, host_of(w), unconnected, {}) == [
        "HOST_CANNOT_ATTACH_NETWORK",
        host_of(w),
        unconnected,
    ]


async def test_assert_can_migrate_refusals(w: World) -> None:
    vm = await new_vm(w)
    sr = next(r for r, s in w.store.table("SR").items() if s["content_type"] == "user")
    vdi = await new_vdi(w, sr)
    await new_vbd(w, vm, vdi)
    dest = await dest_map(w)
    partial = {k: v for k, v in dest.items() if k != "xenops"}
    assert await w.fail("VM.assert_can_migrate", w.root, vm, partial, True, {}, {}, {}) == [
        "INTERNAL_ERROR",
        "Not_found",
    ]
    assert await w.fail("VM.assert_can_migrate", w.root, vm, dest, True, {}, {}, {}) == [
        "VDI_NOT_IN_MAP",
        vdi,
    ]
    net = network_named(w, "NAT network")
    vif_map = {"OpaqueRef:some-vif": net}
    assert await w.fail(
        "VM.assert_can_migrate", w.root, vm, dest, True, {vdi: sr}, vif_map, {}
    ) == [
        "OPERATION_NOT_ALLOWED",
        "VIF mapping is not allowed for intra-pool migration -all VIFs must be on the same network",
    ]
    away = {**dest, "host": "OpaqueRef:elsewhere", "master": f"http://127.0.0.1:{free_port()}"}
    assert await w.fail("VM.assert_can_migrate", w.root, vm, away, True, {vdi: sr}, {}, {}) == [
        "VM_MIGRATE_CONTACT_REMOTE_SERVICE_FAILED"
    ]
    assert await w.call("VM.assert_can_migrate", w.root, vm, dest, True, {vdi: sr}, {}, {}) == ""


async def test_snapshots_and_default_templates_do_not_migrate(w: World) -> None:
    vm = await new_vm(w)
    snap = await w.call("VM.snapshot", w.root, vm, "snap")
    dest = await dest_map(w)
    assert await w.fail("VM.migrate_send", w.root, snap, dest, True, {}, {}, {}) == [
        "VM_IS_A_SNAPSHOT",
        snap,
        "migrate_send",
    ]
    template = next(r for r, v in w.store.table("VM").items() if v["is_default_template"])
    assert await w.fail("VM.migrate_send", w.root, template, dest, True, {}, {}, {}) == [
        "VM_IS_TEMPLATE",
        template,
        "migrate_send",
    ]


async def test_within_this_host_a_disk_moves_to_another_sr(w: World) -> None:
    vm = await new_vm(w)
    sr = next(r for r, s in w.store.table("SR").items() if s["content_type"] == "user")
    vdi = await new_vdi(w, sr)
    await write_vdi(w, vdi, [(0, b"migrating data" * 100)])
    data = await vdi_bytes(w, vdi)
    vbd = await new_vbd(w, vm, vdi)
    other = await new_sr(w)
    dest = await dest_map(w)
    copy = {"copy": "true"}
    assert (await w.fail("VM.migrate_send", w.root, vm, dest, False, {vdi: other}, {}, copy))[
        0
    ] == "OPERATION_NOT_ALLOWED"
    assert await w.call("VM.migrate_send", w.root, vm, dest, False, {vdi: other}, {}, {}) == vm
    moved = rec(w, "VBD", vbd)["VDI"]
    assert moved != vdi and rec(w, "VDI", moved)["SR"] == other
    assert w.store.get("VDI", vdi) is None
    assert await vdi_bytes(w, moved) == data
    assert rec(w, "VM", vm)["current_operations"] == {}
