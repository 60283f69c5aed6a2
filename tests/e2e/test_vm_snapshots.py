"""Clones, copies, checkpoints and reverts with the XenAPI SDK over real sockets: disks
cloned or copied with the VM, a running VM checkpointed and reverted to, an Async checkpoint
followed to its result, and a suspended VM destroyed with its suspend image."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_events_sdk import close, login
from tests.e2e.test_vm_tour import failure, install
from tests.serverproc import ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed file <_io.TextIOWrapper:ResourceWarning"),
]

NULL = "OpaqueRef:NULL"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        Path(tmp_path_factory.mktemp("snapshots")),
        extra_args=["--sim-storage", "--vm-shutdown-timeout", "0.5"],
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def x(server: ServerProcess) -> Iterator[Any]:
    session = login(server.http_url, "e2e-vm-snapshots")
    yield session.xenapi
    close(session)


def disk_of(x: Any, vm: str) -> str:
    (vbd,) = [v for v in x.VM.get_VBDs(vm) if x.VBD.get_type(v) == "Disk"]
    vdi: str = x.VBD.get_VDI(vbd)
    return vdi


def started(x: Any, name: str) -> str:
    """An installed VM, running, with its guest agent reporting (checkpoint needs it)."""
    vm = install(x, name)
    x.VM.start(vm, False, False)
    deadline = time.monotonic() + 20
    while "checkpoint" not in x.VM.get_allowed_operations(vm):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return vm


def test_clone_and_copy_take_the_disks_along(x: Any) -> None:
    vm = install(x, "with-disk")
    clone = x.VM.clone(vm, "cloned")
    assert disk_of(x, clone) != disk_of(x, vm)
    assert x.VDI.get_virtual_size(disk_of(x, clone)) == x.VDI.get_virtual_size(disk_of(x, vm))
    sr = x.VDI.get_SR(disk_of(x, vm))
    copy = x.VM.copy(vm, "copied", sr)
    assert x.VDI.get_SR(disk_of(x, copy)) == sr and disk_of(x, copy) != disk_of(x, vm)
    for v in (clone, copy, vm):
        vdi = disk_of(x, v)
        x.VM.destroy(v)
        x.VDI.destroy(vdi)


def test_checkpoint_and_revert(x: Any) -> None:
    vm = started(x, "checkpointed")
    snap = x.VM.checkpoint(vm, "cp")
    s = x.VM.get_record(snap)
    assert s["is_a_snapshot"] is True and s["snapshot_of"] == vm
    assert s["power_state"] == "Suspended" and x.VDI.get_type(s["suspend_VDI"]) == "suspend"
    assert x.VDI.get_snapshot_of(disk_of(x, snap)) == disk_of(x, vm)
    assert snap in x.VM.get_snapshots(vm)
    assert x.VM.get_power_state(vm) == "Running"
    assert failure(x.VM.resume, snap, False, False) == ["VM_IS_A_SNAPSHOT", snap, "resume"]
    x.VM.revert(snap)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Suspended" and rec["suspend_VDI"] != NULL
    assert rec["parent"] == snap
    x.VM.resume(vm, False, False)
    assert x.VM.get_power_state(vm) == "Running"
    x.VM.hard_shutdown(vm)


def test_async_checkpoint_returns_the_snapshot(x: Any) -> None:
    vm = started(x, "async-checkpoint")
    task = x.Async.VM.checkpoint(vm, "async-cp")
    deadline = time.monotonic() + 20
    while x.task.get_status(task) == "pending":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert x.task.get_status(task) == "success"
    result = x.task.get_result(task)
    snap = result.removeprefix("<value>").removesuffix("</value>")
    assert x.VM.get_snapshot_of(snap) == vm and x.VM.get_name_label(snap) == "async-cp"
    x.task.destroy(task)
    x.VM.hard_shutdown(vm)


def test_destroying_a_suspended_vm_removes_its_suspend_image(x: Any) -> None:
    vm = started(x, "suspended")
    x.VM.suspend(vm)
    image = x.VM.get_suspend_VDI(vm)
    x.VM.destroy(vm)
    assert image not in x.VDI.get_all()
