"""Real VMs in QEMU (TCG) driven with the XenAPI SDK over real sockets: the tiny test guest
installed from its template, its agent reporting, every power operation, checkpoints, a
guest that ignores ACPI, the daemon killed under running VMs and a QEMU process killed
behind the daemon's back. Nothing of QEMU may be left behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import XenAPI

from openxapi.storage.localdir import BASE_PREFIX
from openxapi.xenops.qemu.backend import _runtime_root
from tests.e2e.test_events_sdk import close, login
from tests.e2e.test_vm_tour import TINY, failure, install
from tests.guestimage import guest_image_dir
from tests.serverproc import ServerProcess, free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed file <_io.TextIOWrapper:ResourceWarning"),
]

SHUTDOWN_TIMEOUT = 60.0
BOOT_WAIT = 90.0


def qemu_pids(marker: str) -> list[int]:
    """QEMU processes whose command line mentions ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in cmd and marker.encode() in cmd:
            pids.append(int(entry.name))
    return pids


def make_server(data: Path, *extra: str) -> ServerProcess:
    return ServerProcess(
        data,
        extra_args=[
            "--backend",
            "qemu",
            "--accel",
            "tcg",
            "--guest-image-dir",
            str(guest_image_dir()),
            "--vm-shutdown-timeout",
            str(SHUTDOWN_TIMEOUT),
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = make_server(Path(tmp_path_factory.mktemp("qemu")))
    srv.start()
    yield srv
    leftovers(srv)


def leftovers(srv: ServerProcess) -> None:
    """Stop the server after halting every VM; nothing of QEMU may remain."""
    try:
        session = login(srv.http_url, "e2e-qemu-cleanup")
        x = session.xenapi
        for vm, rec in x.VM.get_all_records().items():
            if rec["power_state"] in ("Running", "Paused") and not rec["is_control_domain"]:
                x.VM.hard_shutdown(vm)
        close(session)
    finally:
        srv.stop()
    run_root = _runtime_root(srv.data_dir / "qemu", "")
    assert qemu_pids(str(run_root)) == []
    left = [p for p in run_root.iterdir() if p.name != "next-domid"] if run_root.exists() else []
    assert left == []


@pytest.fixture
def x(server: ServerProcess) -> Iterator[Any]:
    session = login(server.http_url, "e2e-qemu")
    yield session.xenapi
    close(session)


def wait_for(what: Callable[[], Any], timeout: float = BOOT_WAIT, step: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)


def guest_metrics(x: Any, vm: str) -> dict[str, Any] | None:
    gm = x.VM.get_guest_metrics(vm)
    if gm == "OpaqueRef:NULL":
        return None
    try:
        rec: dict[str, Any] = x.VM_guest_metrics.get_record(gm)
    except XenAPI.Failure:
        return None
    return rec if rec["networks"].get("0/ip") else None


def tiny_vm(x: Any, name: str, args: str = "", forward: int = 0) -> str:
    vm = install(x, name)
    if args:
        x.VM.set_PV_args(vm, x.VM.get_PV_args(vm) + " " + args)
    (net,) = x.network.get_by_name_label("NAT network")
    other = {"hostfwd": f"{forward}-:7777"} if forward else {}
    x.VIF.create(
        {
            "VM": vm,
            "network": net,
            "device": "0",
            "MAC": "",
            "MTU": "1500",
            "other_config": other,
            "qos_algorithm_type": "",
            "qos_algorithm_params": {},
        }
    )
    return vm


def hello(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        return s.recv(100)


def test_template_boots_a_real_guest_through_every_power_operation(x: Any) -> None:
    port = free_port()
    vm = tiny_vm(x, "real-tour", forward=port)
    assert x.VM.get_PV_kernel(vm).endswith("vmlinuz")
    x.VM.start(vm, False, False)
    assert x.VM.get_power_state(vm) == "Running" and int(x.VM.get_domid(vm)) > 0
    gm = wait_for(lambda: guest_metrics(x, vm))
    assert gm["os_version"]["distro"] == "tinyvm"
    assert gm["os_version"]["uname"]
    assert gm["networks"]["0/ip"] == "10.0.2.15" == gm["networks"]["0/ipv4/0"]
    assert gm["PV_drivers_detected"] is True
    assert wait_for(lambda: hello(port)).startswith(b"hello from tinyvm")
    consoles = x.VM.get_consoles(vm)
    assert [x.console.get_protocol(c) for c in consoles] == ["rfb"]
    # live figures from the QEMU process, as the reference's data sources
    wait_for(lambda: "cpu0" in {d["name_label"] for d in x.VM.get_data_sources(vm)})
    assert 0.0 <= x.VM.query_data_source(vm, "cpu0") <= 1.0
    assert x.VM.query_data_source(vm, "memory") == 128 * 1024 * 1024
    assert failure(x.VM.query_data_source, vm, "no_such_source")[0] == "INTERNAL_ERROR"

    x.VM.suspend(vm)
    assert x.VM.get_power_state(vm) == "Suspended"
    assert qemu_pids(x.VM.get_uuid(vm)) == []
    suspend_vdi = x.VM.get_suspend_VDI(vm)
    assert x.VDI.get_type(suspend_vdi) == "suspend"
    x.VM.resume(vm, False, False)
    assert x.VM.get_power_state(vm) == "Running"
    assert x.VM.get_suspend_VDI(vm) == "OpaqueRef:NULL"
    # the guest kept its state: the same service answers without a new boot
    assert hello(port).startswith(b"hello from tinyvm")

    x.VM.pause(vm)
    assert x.VM.get_power_state(vm) == "Paused"
    assert failure(x.VM.clean_shutdown, vm)[0] == "VM_BAD_POWER_STATE"
    x.VM.unpause(vm)
    assert x.VM.get_power_state(vm) == "Running"

    wait_for(lambda: guest_metrics(x, vm))
    start = x.VM_metrics.get_start_time(x.VM.get_metrics(vm))
    x.VM.clean_reboot(vm)
    assert x.VM.get_power_state(vm) == "Running"
    assert x.VM_metrics.get_start_time(x.VM.get_metrics(vm)) > start
    wait_for(lambda: guest_metrics(x, vm))

    x.VM.clean_shutdown(vm)
    assert x.VM.get_power_state(vm) == "Halted"
    assert qemu_pids(x.VM.get_uuid(vm)) == []
    assert x.VM.get_consoles(vm) == []
    x.VM.destroy(vm)


def test_hard_operations(x: Any) -> None:
    vm = tiny_vm(x, "real-hard")
    x.VM.start(vm, True, False)
    assert x.VM.get_power_state(vm) == "Paused"
    x.VM.hard_reboot(vm)
    assert x.VM.get_power_state(vm) == "Running"
    x.VM.hard_shutdown(vm)
    assert x.VM.get_power_state(vm) == "Halted"
    assert qemu_pids(x.VM.get_uuid(vm)) == []
    x.VM.destroy(vm)


def test_checkpoint_and_revert(x: Any) -> None:
    port = free_port()
    vm = tiny_vm(x, "real-checkpoint", forward=port)
    x.VM.start(vm, False, False)
    wait_for(lambda: guest_metrics(x, vm))
    cp = x.VM.checkpoint(vm, "cp1")
    assert x.VM.get_power_state(cp) == "Suspended" and x.VM.get_is_a_snapshot(cp)
    assert x.VM.get_power_state(vm) == "Running"
    x.VM.hard_shutdown(vm)
    x.VM.revert(cp)
    assert x.VM.get_power_state(vm) == "Suspended"
    x.VM.resume(vm, False, False)
    assert x.VM.get_power_state(vm) == "Running"
    assert hello(port).startswith(b"hello from tinyvm")
    x.VM.hard_shutdown(vm)
    x.VM.destroy(cp)
    x.VM.destroy(vm)


def test_guest_that_ignores_acpi(tmp_path: Path) -> None:
    srv = make_server(tmp_path, "--vm-shutdown-timeout", "6")
    srv.start()
    try:
        session = login(srv.http_url, "e2e-qemu-acpi")
        x = session.xenapi
        vm = tiny_vm(x, "stubborn", args="tinyacpi=ignore")
        x.VM.start(vm, False, False)
        wait_for(lambda: guest_metrics(x, vm))
        assert failure(x.VM.clean_shutdown, vm) == ["VM_SHUTDOWN_TIMEOUT", vm, "6."]
        assert x.VM.get_power_state(vm) == "Running"
        x.VM.shutdown(vm)  # clean first, then hard
        assert x.VM.get_power_state(vm) == "Halted"
        close(session)
    finally:
        leftovers(srv)


def test_daemon_killed_while_vms_run_then_readopted(tmp_path: Path) -> None:
    srv = make_server(tmp_path)
    srv.start()
    try:
        session = login(srv.http_url, "e2e-qemu-kill")
        x = session.xenapi
        vm = tiny_vm(x, "survivor")
        x.VM.start(vm, False, False)
        wait_for(lambda: guest_metrics(x, vm))
        uuid = x.VM.get_uuid(vm)
        domid = x.VM.get_domid(vm)
        (pid,) = qemu_pids(uuid)
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        session("close")()  # its server is gone: no logout
        assert qemu_pids(uuid) == [pid]  # QEMU outlives the daemon
        srv.start()
        session = login(srv.http_url, "e2e-qemu-kill")
        x = session.xenapi
        assert x.VM.get_power_state(vm) == "Running" and x.VM.get_domid(vm) == domid
        x.VM.pause(vm)
        x.VM.unpause(vm)
        wait_for(lambda: guest_metrics(x, vm))
        x.VM.clean_shutdown(vm)
        assert x.VM.get_power_state(vm) == "Halted"
        assert qemu_pids(uuid) == []
        close(session)
    finally:
        leftovers(srv)


def test_qemu_killed_behind_the_daemons_back(x: Any) -> None:
    vm = tiny_vm(x, "victim")
    x.VM.start(vm, False, False)
    uuid = x.VM.get_uuid(vm)
    (pid,) = qemu_pids(uuid)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: x.VM.get_power_state(vm) == "Halted", timeout=20)
    alerts = [
        m
        for m in x.message.get_all_records().values()
        if m["obj_uuid"] == uuid and m["name"] == "VM_CRASHED"
    ]
    assert len(alerts) == 1 and alerts[0]["priority"] == "2"
    x.VM.start(vm, False, False)  # it can start again
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def test_the_tiny_template_is_listed(x: Any) -> None:
    (tpl,) = x.VM.get_by_name_label(TINY)
    assert x.VM.get_is_a_template(tpl)
    assert Path(x.VM.get_PV_kernel(tpl)).parent == guest_image_dir()


def rfb_banner(srv: ServerProcess, session_ref: str, console_uuid: str) -> bytes:
    """CONNECT /console through the server; the first bytes the VM's VNC server sends."""
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=10) as s:
        query = f"uuid={console_uuid}&session_id={session_ref}"
        s.sendall(f"CONNECT /console?{query} HTTP/1.0\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(1)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 200"), head
        return s.recv(12)


def test_console_of_a_real_vm_is_tunnelled(server: ServerProcess) -> None:
    session = login(server.http_url, "e2e-qemu-console")
    x = session.xenapi
    try:
        vm = tiny_vm(x, "console")
        x.VM.start(vm, False, False)
        (console,) = x.VM.get_consoles(vm)
        assert x.console.get_location(console).endswith(
            f"/console?uuid={x.console.get_uuid(console)}"
        )
        banner = rfb_banner(server, session._session, x.console.get_uuid(console))
        assert banner == b"RFB 003.008\n"  # QEMU's own VNC server answers
        x.VM.hard_shutdown(vm)
        x.VM.destroy(vm)
    finally:
        close(session)


def qemu_img_info(path: str) -> dict[str, Any]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", path], check=True, capture_output=True
    )
    info: dict[str, Any] = json.loads(out.stdout)
    return info


def test_disk_snapshot_of_a_running_vm_pivots_live(x: Any) -> None:
    vm = tiny_vm(x, "live-disk")
    x.VM.start(vm, False, False)
    (vbd,) = [v for v in x.VM.get_VBDs(vm) if x.VBD.get_type(v) == "Disk"]
    vdi = x.VBD.get_VDI(vbd)
    snap = x.VDI.snapshot(vdi, {})
    assert x.VM.get_power_state(vm) == "Running"
    (pid,) = qemu_pids(x.VM.get_uuid(vm))
    # QEMU now writes to a fresh overlay whose backing file is the shared base
    fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    images = [f for f in fds if f.endswith(".qcow2")]
    top = next(f for f in images if x.VDI.get_location(vdi) in f)
    base = qemu_img_info(top)["backing-filename"]
    assert base.startswith(BASE_PREFIX)
    assert str(Path(top).parent / base) in images  # the old image, now read-only below it
    snap_top = next(
        str(p) for p in Path(top).parent.iterdir() if x.VDI.get_location(snap) in p.name
    )
    assert qemu_img_info(snap_top)["backing-filename"] == base
    x.VM.clean_shutdown(vm)
    for path in (top, snap_top):
        subprocess.run(["qemu-img", "check", "-q", path], check=True)
    x.VDI.destroy(snap)
    x.VM.destroy(vm)


def test_vm_on_a_namespaced_bridge(x: Any) -> None:
    ns = f"oxq-{uuidlib.uuid4().hex[:8]}"
    net = x.network.create(
        {
            "name_label": "ns net",
            "name_description": "",
            "MTU": "1500",
            "other_config": {"netns": ns},
            "bridge": "",
        }
    )
    vm = install(x, "ns-guest")
    try:
        x.VM.set_PV_args(vm, x.VM.get_PV_args(vm) + " tinyip=10.77.0.10/24")
        x.VIF.create(
            {
                "VM": vm,
                "network": net,
                "device": "0",
                "MAC": "",
                "MTU": "1500",
                "other_config": {},
                "qos_algorithm_type": "",
                "qos_algorithm_params": {},
            }
        )
        x.VM.start(vm, False, False)
        bridge = x.network.get_bridge(net)
        subprocess.run(["ip", "-n", ns, "addr", "add", "10.77.0.1/24", "dev", bridge], check=True)
        probe = (
            "import socket,sys\n"
            "s=socket.create_connection(('10.77.0.10',7777),timeout=5)\n"
            "sys.stdout.write(s.recv(100).decode())\n"
        )

        def reply() -> str:
            out = subprocess.run(
                ["ip", "netns", "exec", ns, sys.executable, "-c", probe],
                capture_output=True,
                text=True,
            )
            return out.stdout

        assert wait_for(reply).startswith("hello from tinyvm")
        # nothing of it in the host's own namespace
        root_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert bridge not in root_links
        x.VM.hard_shutdown(vm)
    finally:
        with contextlib.suppress(XenAPI.Failure):
            x.VM.hard_shutdown(vm)
        x.VM.destroy(vm)
        x.network.destroy(net)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def open_files(vm_uuid: str) -> set[str]:
    (pid,) = qemu_pids(vm_uuid)
    fds = Path(f"/proc/{pid}/fd")
    out = set()
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            out.add(os.readlink(fd))
    return out


def test_disks_and_cds_change_while_the_vm_runs(x: Any, server: ServerProcess) -> None:
    iso = server.data_dir / "iso" / "tools.iso"
    iso.parent.mkdir(exist_ok=True)
    iso.write_bytes(b"\0" * (1 << 20))
    (iso_sr,) = [s for s in x.SR.get_all() if x.SR.get_content_type(s) == "iso"]
    x.SR.scan(iso_sr)
    (iso_vdi,) = [v for v in x.SR.get_VDIs(iso_sr) if x.VDI.get_location(v) == "tools.iso"]
    vm = tiny_vm(x, "hotplug")
    cd = x.VBD.create(
        {
            "VM": vm,
            "VDI": "OpaqueRef:NULL",
            "userdevice": "3",
            "bootable": False,
            "mode": "RO",
            "type": "CD",
            "empty": True,
            "other_config": {},
            "qos_algorithm_type": "",
            "qos_algorithm_params": {},
        }
    )
    x.VM.start(vm, False, False)
    wait_for(lambda: guest_metrics(x, vm))
    uuid = x.VM.get_uuid(vm)
    # a CD goes in and comes out again
    x.VBD.insert(cd, iso_vdi)
    assert str(iso) in open_files(uuid)
    x.VBD.eject(cd)
    assert str(iso) not in open_files(uuid)
    # a new disk is plugged into the running guest and unplugged again
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    vdi = x.VDI.create(
        {
            "name_label": "extra",
            "name_description": "",
            "SR": sr,
            "virtual_size": str(32 << 20),
            "type": "user",
            "sharable": False,
            "read_only": False,
            "other_config": {},
            "xenstore_data": {},
            "sm_config": {},
            "tags": [],
        }
    )
    vbd = x.VBD.create(
        {
            "VM": vm,
            "VDI": vdi,
            "userdevice": "1",
            "bootable": False,
            "mode": "RW",
            "type": "Disk",
            "empty": False,
            "other_config": {},
            "qos_algorithm_type": "",
            "qos_algorithm_params": {},
        }
    )
    x.VBD.plug(vbd)
    location = x.VDI.get_location(vdi)
    assert any(location in f for f in open_files(uuid))
    x.VBD.unplug(vbd)
    assert not any(location in f for f in open_files(uuid))
    x.VM.hard_shutdown(vm)
    x.VBD.destroy(vbd)
    x.VDI.destroy(vdi)
    x.VM.destroy(vm)


def test_pool_migrate_moves_the_running_guest_to_a_new_domain(x: Any) -> None:
    port = free_port()
    vm = tiny_vm(x, "migrant", forward=port)
    x.VM.start(vm, False, False)
    wait_for(lambda: guest_metrics(x, vm))
    uuid = x.VM.get_uuid(vm)
    (before,) = qemu_pids(uuid)
    domid = x.VM.get_domid(vm)
    host = x.VM.get_resident_on(vm)
    x.VM.pool_migrate(vm, host, {"live": "true"})
    assert x.VM.get_power_state(vm) == "Running"
    assert x.VM.get_domid(vm) != domid and x.VM.get_resident_on(vm) == host
    (after,) = qemu_pids(uuid)
    assert after != before
    # the guest carried on: its service answers through the same forwarded port
    assert wait_for(lambda: hello(port), timeout=20).startswith(b"hello from tinyvm")
    x.VM.clean_shutdown(vm)
    assert qemu_pids(uuid) == []
    x.VM.destroy(vm)


def vcpu_threads(vm_uuid: str) -> int:
    """How many vCPU threads ("CPU n/TCG") the VM's QEMU process runs."""
    (pid,) = qemu_pids(vm_uuid)
    names = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            names.append((task / "comm").read_text())
    return sum(1 for n in names if n.startswith("CPU "))


def test_vcpus_are_plugged_and_unplugged_live(x: Any) -> None:
    vm = tiny_vm(x, "vcpus")
    x.VM.set_VCPUs_max(vm, "2")
    x.VM.start(vm, False, False)
    wait_for(lambda: guest_metrics(x, vm))
    metrics = x.VM.get_metrics(vm)
    uuid = x.VM.get_uuid(vm)
    assert x.VM_metrics.get_VCPUs_number(metrics) == "1" and vcpu_threads(uuid) == 1
    x.VM.set_VCPUs_number_live(vm, "2")
    assert x.VM_metrics.get_VCPUs_number(metrics) == "2" and vcpu_threads(uuid) == 2
    assert x.VM.get_VCPUs_at_startup(vm) == "2"
    assert failure(x.VM.set_VCPUs_number_live, vm, "3")[0] == "INVALID_VALUE"
    x.VM.set_VCPUs_number_live(vm, "1")  # the guest releases the plugged one
    assert x.VM_metrics.get_VCPUs_number(metrics) == "1"
    assert wait_for(lambda: vcpu_threads(uuid) == 1, timeout=10)
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)
