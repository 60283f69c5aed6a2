"""Cross-pool migration between two real servers with the XenAPI SDK (simulated guests):
host.migrate_receive's dest map, VM.assert_can_migrate's refusals, VM.migrate_send of
halted, running and snapshotted VMs (disk contents, VIF and SR maps, copy mode), a failed
migration leaving the source as it was and the destination clean, and storage motion
within one server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import XenAPI

from openxapi.xenops.qemu.backend import _runtime_root
from tests.e2e.storage_support import MiB, get_raw, new_vdi, put_raw, sample, sha
from tests.e2e.test_events_sdk import close, login
from tests.e2e.test_qemu_vms import (
    guest_metrics,
    hello,
    leftovers,
    make_server,
    qemu_pids,
    tiny_vm,
    wait_for,
)
from tests.serverproc import ServerProcess, free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed file <_io.TextIOWrapper:ResourceWarning"),
]

DEST_KEYS = {"SM", "host", "xenops", "session_id", "master"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ...]]:
    started = []
    try:
        for name, extra in (("src", []), ("dst", ["--sim-host-memory", "64G"])):
            srv = ServerProcess(Path(tmp_path_factory.mktemp(name)), extra_args=extra)
            srv.start()
            started.append(srv)
        yield tuple(started)
    finally:
        for srv in started:
            srv.stop()


@pytest.fixture
def src(servers: tuple[ServerProcess, ...]) -> ServerProcess:
    return servers[0]


@pytest.fixture
def dst(servers: tuple[ServerProcess, ...]) -> ServerProcess:
    return servers[1]


@pytest.fixture
def a(src: ServerProcess) -> Iterator[Any]:
    session = login(src.http_url, "e2e-migrate-src")
    yield session
    close(session)


@pytest.fixture
def b(dst: ServerProcess) -> Iterator[Any]:
    session = login(dst.http_url, "e2e-migrate-dst")
    yield session
    close(session)


def failure(call: Any, *args: Any) -> list[str]:
    with pytest.raises(XenAPI.Failure) as e:
        call(*args)
    details: list[str] = e.value.details
    return details


def network(x: Any, label: str) -> str:
    (net,) = x.network.get_by_name_label(label)
    return str(net)


def default_sr(x: Any) -> str:
    return str(x.pool.get_default_SR(x.pool.get_all()[0]))


def receive(b: Any) -> dict[str, str]:
    x = b.xenapi
    host = x.host.get_all()[0]
    dest: dict[str, str] = x.host.migrate_receive(host, network(x, "Pool-wide network 0"), {})
    return dest


def make_vm(a: Any, src: ServerProcess, name: str, content: bytes = b"") -> tuple[str, str, str]:
    """A VM with one disk (holding ``content``) and one VIF: (vm, vdi, vif)."""
    x = a.xenapi
    vm = x.VM.create(
        {
            "name_label": name,
            "name_description": "",
            "user_version": "1",
            "is_a_template": False,
            "affinity": "OpaqueRef:NULL",
            "memory_target": str(256 * MiB),
            "memory_static_max": str(256 * MiB),
            "memory_dynamic_max": str(256 * MiB),
            "memory_dynamic_min": str(256 * MiB),
            "memory_static_min": str(256 * MiB),
            "VCPUs_params": {},
            "VCPUs_max": "1",
            "VCPUs_at_startup": "1",
            "actions_after_shutdown": "destroy",
            "actions_after_reboot": "restart",
            "actions_after_crash": "restart",
            "PV_bootloader": "",
            "PV_kernel": "",
            "PV_ramdisk": "",
            "PV_args": "",
            "PV_bootloader_args": "",
            "PV_legacy_args": "",
            "HVM_boot_policy": "BIOS order",
            "HVM_boot_params": {"order": "c"},
            "platform": {},
            "PCI_bus": "",
            "other_config": {},
            "recommendations": "",
        }
    )
    vdi = new_vdi(x, default_sr(x), 4 * MiB, f"{name} disk")
    if content:
        assert put_raw(src, a._session, vdi, content).status == 200
    x.VBD.create(
        {
            "VM": vm, "VDI": vdi, "userdevice": "0", "bootable": True, "mode": "RW",
            "type": "Disk", "empty": False, "other_config": {},
            "qos_algorithm_type": "", "qos_algorithm_params": {},
        }
    )  # fmt: skip
    vif = x.VIF.create(
        {
            "device": "0", "network": network(x, "Pool-wide network 0"), "VM": vm, "MAC": "",
            "MTU": "1500", "other_config": {}, "qos_algorithm_type": "",
            "qos_algorithm_params": {},
        }
    )  # fmt: skip
    return vm, vdi, vif


def test_migrate_receive_hands_out_the_dest_map(dst: ServerProcess, b: Any) -> None:
    dest = receive(b)
    assert set(dest) == DEST_KEYS
    base = f"http://127.0.0.1:{dst.http_port}"
    assert dest["master"] == base
    assert dest["xenops"] == f"{base}/services/xenops?session_id={dest['session_id']}"
    assert dest["SM"] == f"{base}/services/SM?session_id={dest['session_id']}"
    assert dest["host"] == b.xenapi.host.get_all()[0]
    other = XenAPI.Session(dst.http_url)
    other._session = dest["session_id"]
    assert other.xenapi.session.get_this_host(dest["session_id"]) == dest["host"]
    other("close")()
    x = b.xenapi
    host = x.host.get_all()[0]
    internal = network(x, "Host internal management network")
    assert failure(x.host.migrate_receive, host, internal, {}) == [
        "HOST_CANNOT_ATTACH_NETWORK",
        host,
        internal,
    ]


def test_a_halted_vm_moves_with_its_disk_vif_and_snapshot(
    src: ServerProcess, dst: ServerProcess, a: Any, b: Any
) -> None:
    x, y = a.xenapi, b.xenapi
    data = sample(4 * MiB, 7)
    vm, vdi, vif = make_vm(a, src, "mover", data)
    snap = x.VM.snapshot(vm, "before")
    uuid, mac = x.VM.get_uuid(vm), x.VIF.get_MAC(vif)
    dest = receive(b)
    target_sr = default_sr(y)
    target_net = network(y, "NAT network")
    x.VM.assert_can_migrate(vm, dest, True, {vdi: target_sr}, {vif: target_net}, {})
    new = x.VM.migrate_send(vm, dest, True, {vdi: target_sr}, {vif: target_net}, {})
    assert failure(x.VM.get_by_uuid, uuid)[0] == "UUID_INVALID"
    assert failure(x.VDI.get_record, vdi)[0] == "HANDLE_INVALID"
    rec = y.VM.get_record(new)
    assert rec["uuid"] == uuid and rec["power_state"] == "Halted"
    (new_vif,) = rec["VIFs"]
    assert y.VIF.get_network(new_vif) == target_net and y.VIF.get_MAC(new_vif) == mac
    (vbd,) = rec["VBDs"]
    new_vdi = y.VBD.get_VDI(vbd)
    assert y.VDI.get_SR(new_vdi) == target_sr
    reply = get_raw(dst, b._session, new_vdi)
    assert reply.status == 200 and sha(reply.body) == sha(data)
    (new_snap,) = rec["snapshots"]
    srec = y.VM.get_record(new_snap)
    assert srec["is_a_snapshot"] and srec["snapshot_of"] == new
    assert srec["name_label"] == "before"
    assert failure(x.VM.get_record, snap)[0] == "HANDLE_INVALID"
    y.VM.destroy(new_snap)
    y.VM.destroy(new)


def test_a_running_vm_runs_on_at_the_destination(
    src: ServerProcess, dst: ServerProcess, a: Any, b: Any
) -> None:
    x, y = a.xenapi, b.xenapi
    vm, vdi, vif = make_vm(a, src, "runner", sample(4 * MiB, 8))
    x.VM.start(vm, False, False)
    started = x.VM_metrics.get_start_time(x.VM.get_metrics(vm))
    dest = receive(b)
    net = network(y, "Pool-wide network 0")
    new = x.VM.migrate_send(vm, dest, True, {vdi: default_sr(y)}, {vif: net}, {})
    rec = y.VM.get_record(new)
    assert rec["power_state"] == "Running"
    assert rec["resident_on"] == dest["host"] and int(rec["domid"]) > 0
    assert y.VM_metrics.get_start_time(rec["metrics"]) == started
    (new_vif,) = rec["VIFs"]
    assert y.VIF.get_currently_attached(new_vif) is True
    assert x.VM.get_all_records_where(f'field "uuid" = "{rec["uuid"]}"') == {}
    y.VM.hard_shutdown(new)
    y.VM.destroy(new)


def test_a_suspended_vm_resumes_at_the_destination(
    src: ServerProcess, dst: ServerProcess, a: Any, b: Any
) -> None:
    x, y = a.xenapi, b.xenapi
    vm, vdi, vif = make_vm(a, src, "sleeper", sample(4 * MiB, 5))
    x.VM.start(vm, False, False)
    x.VM.suspend(vm)
    image = x.VM.get_suspend_VDI(vm)
    dest = receive(b)
    maps = ({vdi: default_sr(y)}, {vif: network(y, "NAT network")})
    new = x.VM.migrate_send(vm, dest, True, *maps, {})
    assert failure(x.VDI.get_record, image)[0] == "HANDLE_INVALID"
    assert y.VM.get_power_state(new) == "Suspended"
    assert y.VDI.get_SR(y.VM.get_suspend_VDI(new)) == default_sr(y)
    y.VM.resume(new, False, False)
    assert y.VM.get_power_state(new) == "Running"
    y.VM.hard_shutdown(new)
    y.VM.destroy(new)


def test_copy_keeps_the_source(src: ServerProcess, a: Any, b: Any) -> None:
    x, y = a.xenapi, b.xenapi
    vm, vdi, vif = make_vm(a, src, "copied")
    dest = receive(b)
    maps = ({vdi: default_sr(y)}, {vif: network(y, "Pool-wide network 0")})
    new = x.VM.migrate_send(vm, dest, False, *maps, {"copy": "true"})
    assert x.VM.get_power_state(vm) == "Halted"
    assert y.VM.get_uuid(new) != x.VM.get_uuid(vm)
    x.VM.start(vm, False, False)
    assert failure(x.VM.assert_can_migrate, vm, dest, True, *maps, {"copy": "true"}) == [
        "VM_BAD_POWER_STATE",
        vm,
        "halted",
        "running",
    ]
    x.VM.hard_shutdown(vm)
    y.VM.destroy(new)


def test_assert_can_migrate_refuses_as_the_reference(src: ServerProcess, a: Any, b: Any) -> None:
    x, y = a.xenapi, b.xenapi
    vm, vdi, vif = make_vm(a, src, "checked")
    dest = receive(b)
    sr, net = default_sr(y), network(y, "Pool-wide network 0")
    assert failure(x.VM.assert_can_migrate, vm, dest, True, {}, {vif: net}, {}) == [
        "VDI_NOT_IN_MAP",
        vdi,
    ]
    bogus = "OpaqueRef:00000000-0000-0000-0000-000000000001"
    assert failure(x.VM.assert_can_migrate, vm, dest, True, {vdi: bogus}, {vif: net}, {}) == [
        "HANDLE_INVALID",
        "SR",
        bogus,
    ]
    assert failure(x.VM.assert_can_migrate, vm, dest, True, {vdi: sr}, {}, {}) == [
        "VIF_NOT_IN_MAP",
        vif,
    ]
    assert failure(x.VM.assert_can_migrate, vm, dest, True, {vdi: sr}, {vif: bogus}, {}) == [
        "HANDLE_INVALID",
        "network",
        bogus,
    ]
    gone = {**dest, "master": f"http://127.0.0.1:{free_port()}"}
    assert failure(x.VM.assert_can_migrate, vm, gone, True, {vdi: sr}, {vif: net}, {}) == [
        "VM_MIGRATE_CONTACT_REMOTE_SERVICE_FAILED"
    ]
    x.VM.set_memory_limits(vm, *[str(128 << 30)] * 4)
    x.VM.start(vm, False, False)
    assert failure(x.VM.assert_can_migrate, vm, dest, True, {vdi: sr}, {vif: net}, {}) == [
        "HOST_NOT_ENOUGH_FREE_MEMORY",
        str(128 << 30),
        str(64 << 30),
    ]
    x.VM.pause(vm)
    assert failure(x.VM.migrate_send, vm, dest, True, {vdi: sr}, {vif: net}, {}) == [
        "VM_BAD_POWER_STATE",
        vm,
        "halted, suspended, running",
        "paused",
    ]
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def test_a_failed_migration_leaves_the_source_as_it_was(
    tmp_path: Path, src: ServerProcess, a: Any
) -> None:
    """The destination runs another hypervisor: the VM's records and disk arrive, its guest
    cannot; everything made there goes and the guest runs on here."""
    other = make_server(tmp_path / "qemu-dst")
    other.start()
    try:
        session = login(other.http_url, "e2e-migrate-other")
        y = session.xenapi
        x = a.xenapi
        vm, vdi, vif = make_vm(a, src, "stayer", sample(4 * MiB, 9))
        x.VM.start(vm, False, False)
        domid = x.VM.get_domid(vm)
        before = {cls: set(getattr(y, cls).get_all()) for cls in ("VM", "VDI", "VBD", "VIF")}
        dest = receive(session)
        maps = ({vdi: default_sr(y)}, {vif: network(y, "NAT network")})
        details = failure(x.VM.migrate_send, vm, dest, True, *maps, {})
        assert details[:4] == ["VM_MIGRATE_FAILED", vm, x.VM.get_resident_on(vm), dest["host"]]
        assert x.VM.get_power_state(vm) == "Running" and x.VM.get_domid(vm) == domid
        assert x.VM.get_current_operations(vm) == {}
        assert x.VBD.get_VDI(x.VM.get_VBDs(vm)[0]) == vdi
        after = {cls: set(getattr(y, cls).get_all()) for cls in ("VM", "VDI", "VBD", "VIF")}
        assert after == before
        x.VM.hard_shutdown(vm)
        reply = get_raw(src, a._session, vdi)
        assert reply.status == 200 and sha(reply.body) == sha(sample(4 * MiB, 9))
        x.VM.destroy(vm)
        close(session)
    finally:
        leftovers(other)


def test_within_one_server_disks_move_between_srs(src: ServerProcess, a: Any) -> None:
    x = a.xenapi
    host = x.host.get_all()[0]
    second = x.SR.create(host, {}, "0", "second SR", "", "dummy", "user", False, {})
    vm, vdi, vif = make_vm(a, src, "local mover")
    snap = x.VM.snapshot(vm, "kept")
    x.VM.start(vm, False, False)
    domid = x.VM.get_domid(vm)
    dest = x.host.migrate_receive(host, network(x, "Pool-wide network 0"), {})
    assert (
        failure(x.VM.migrate_send, vm, dest, True, {vdi: second}, {vif: "OpaqueRef:NULL"}, {})[0]
        == "OPERATION_NOT_ALLOWED"
    )
    assert failure(x.VM.migrate_send, vm, dest, True, {vdi: second}, {}, {"copy": "true"}) == [
        "OPERATION_NOT_ALLOWED",
        "Copy mode is disallowed on intra pool storage migration, try efficient alternatives, "
        "for example, VM.copy/clone.",
    ]
    assert x.VM.migrate_send(vm, dest, True, {vdi: second}, {}, {}) == vm
    assert x.VM.get_power_state(vm) == "Running" and x.VM.get_domid(vm) != domid
    (vbd,) = x.VM.get_VBDs(vm)
    moved = x.VBD.get_VDI(vbd)
    assert moved != vdi and x.VDI.get_SR(moved) == second
    assert failure(x.VDI.get_record, vdi)[0] == "HANDLE_INVALID"
    (snap_vbd,) = x.VM.get_VBDs(snap)
    assert x.VDI.get_SR(x.VBD.get_VDI(snap_vbd)) == second
    x.VM.hard_shutdown(vm)
    for ref in (snap, vm):
        for v in x.VM.get_VBDs(ref):
            x.VDI.destroy(x.VBD.get_VDI(v))
        x.VM.destroy(ref)


def _qemu_pair(tmp: Path) -> tuple[ServerProcess, ServerProcess]:
    return make_server(tmp / "qsrc"), make_server(tmp / "qdst")


def test_a_real_guest_moves_live_between_two_qemu_servers(tmp_path: Path) -> None:
    """The tiny guest's disk is mirrored and its memory streamed from one QEMU to another
    over loopback TCP: it keeps serving through the same forwarded port, without a reboot."""
    src_srv, dst_srv = _qemu_pair(tmp_path)
    src_srv.start()
    try:
        dst_srv.start()
        try:
            _move_a_real_guest(src_srv, dst_srv)
        finally:
            leftovers(dst_srv)
    finally:
        leftovers(src_srv)


def _move_a_real_guest(src_srv: ServerProcess, dst_srv: ServerProcess) -> None:
    a, b = login(src_srv.http_url, "e2e-qemu-src"), login(dst_srv.http_url, "e2e-qemu-dst")
    x, y = a.xenapi, b.xenapi
    port = free_port()
    vm = tiny_vm(x, "traveller", forward=port)
    (vbd,) = [v for v in x.VM.get_VBDs(vm) if x.VBD.get_type(v) == "Disk"]
    vdi = x.VBD.get_VDI(vbd)
    size = int(x.VDI.get_virtual_size(vdi))
    data = sample(min(size, 4 * MiB), 3) + bytes(max(size - 4 * MiB, 0))
    assert put_raw(src_srv, a._session, vdi, data).status == 200
    x.VM.start(vm, False, False)
    wait_for(lambda: guest_metrics(x, vm))
    assert wait_for(lambda: hello(port)).startswith(b"hello from tinyvm")
    uuid = x.VM.get_uuid(vm)
    (vif,) = x.VM.get_VIFs(vm)
    dest = receive(b)
    new = x.VM.migrate_send(
        vm, dest, True, {vdi: default_sr(y)}, {vif: network(y, "NAT network")}, {}
    )
    assert y.VM.get_power_state(new) == "Running" and y.VM.get_uuid(new) == uuid
    assert failure(x.VM.get_record, vm)[0] == "HANDLE_INVALID"
    src_root = _runtime_root(src_srv.data_dir / "qemu", "")
    dst_root = _runtime_root(dst_srv.data_dir / "qemu", "")
    assert qemu_pids(str(src_root)) == [] and len(qemu_pids(str(dst_root))) == 1
    # the same guest carries on: its service answers through the same port, and the
    # destination's console shows no boot
    assert wait_for(lambda: hello(port), timeout=30).startswith(b"hello from tinyvm")
    assert wait_for(lambda: guest_metrics(y, new))
    assert b"TINYVM-READY" not in (dst_root / uuid / "serial.log").read_bytes()
    y.VM.hard_shutdown(new)
    (new_vbd,) = [v for v in y.VM.get_VBDs(new) if y.VBD.get_type(v) == "Disk"]
    reply = get_raw(dst_srv, b._session, y.VBD.get_VDI(new_vbd))
    assert reply.status == 200 and sha(reply.body) == sha(data)
    y.VM.destroy(new)
    close(a)
    close(b)
