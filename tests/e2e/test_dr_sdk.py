"""Disaster recovery and sysprep with the XenAPI SDK over real sockets (simulator): the
database replicated to a metadata VDI, a VM destroyed and brought back from the copy
through a database session, and a Windows guest sysprepped with its answer file."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import XenAPI

from tests.e2e.test_events_sdk import close, login
from tests.e2e.test_vm_tour import failure, install
from tests.serverproc import ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed file <_io.TextIOWrapper:ResourceWarning"),
]

UNATTEND = "<unattend xmlns='urn:schemas-microsoft-com:unattend'/>"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(Path(tmp_path_factory.mktemp("dr")), extra_args=["--sim-storage"])
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def session(server: ServerProcess) -> Iterator[Any]:
    s = login(server.http_url, "e2e-dr")
    yield s
    close(s)


def on(server: ServerProcess, ref: str) -> Any:
    """An SDK session object using a session ref obtained some other way."""
    s = XenAPI.Session(server.http_url)
    s._session = ref
    s.last_login_method = "login_with_password"  # what the SDK's logout looks at
    return s


def wait_for_copy(server: ServerProcess, x: Any, vdi: str, vm_uuid: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        db = on(server, x.VDI.open_database(vdi))
        try:
            if db.xenapi.VM.get_all_records_where(f'field "uuid" = "{vm_uuid}"'):
                return
        finally:
            close(db)
        assert time.monotonic() < deadline, "the copy never showed the VM"
        time.sleep(0.2)


def test_a_destroyed_vm_is_recovered_from_the_replicated_database(
    server: ServerProcess, session: Any
) -> None:
    x = session.xenapi
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    x.SR.assert_supports_database_replication(sr)
    x.SR.enable_database_replication(sr)
    (meta,) = [v for v in x.SR.get_VDIs(sr) if x.VDI.get_type(v) == "metadata"]
    assert x.VDI.get_metadata_latest(meta) is True

    vm = install(x, "survivor")
    uuid = x.VM.get_uuid(vm)
    disks = sorted(x.VBD.get_VDI(v) for v in x.VM.get_VBDs(vm))
    wait_for_copy(server, x, meta, uuid)
    x.VM.destroy(vm)
    assert failure(x.VM.get_by_uuid, uuid)[0] == "UUID_INVALID"

    db = on(server, x.VDI.open_database(meta))
    try:
        (old,) = db.xenapi.VM.get_by_name_label("survivor")
        assert db.xenapi.VM.get_SRs_required_for_recovery(old, session._session) == []
        db.xenapi.VM.assert_can_be_recovered(old, session._session)
        assert failure(db.xenapi.VM.set_name_label, old, "x")[0] == "RBAC_PERMISSION_DENIED"
        task = db.xenapi.Async.VM.recover(old, session._session, False)
        deadline = time.monotonic() + 20
        while x.task.get_status(task) == "pending":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert x.task.get_status(task) == "success", x.task.get_error_info(task)
    finally:
        close(db)

    back = x.VM.get_by_uuid(uuid)
    record = x.VM.get_record(back)
    assert (record["name_label"], record["power_state"]) == ("survivor", "Halted")
    assert sorted(x.VBD.get_VDI(v) for v in record["VBDs"]) == disks
    x.VM.start(back, False, False)
    assert x.VM.get_power_state(back) == "Running"
    x.VM.hard_shutdown(back)

    x.SR.disable_database_replication(sr)
    assert failure(x.VDI.get_uuid, meta)[0] == "HANDLE_INVALID"


def test_a_windows_guest_is_sysprepped(session: Any) -> None:
    x = session.xenapi
    vm = install(x, "windows")
    x.VM.add_to_other_config(vm, "sim_os", "windows")
    x.VBD.create(
        {
            "VM": vm,
            "VDI": "OpaqueRef:NULL",
            "userdevice": "3",
            "bootable": False,
            "mode": "RO",
            "type": "CD",
            "unpluggable": True,
            "empty": True,
            "other_config": {},
            "qos_algorithm_type": "",
            "qos_algorithm_params": {},
        }
    )
    x.VM.start(vm, False, False)
    deadline = time.monotonic() + 20
    while x.VM.get_guest_metrics(vm) == "OpaqueRef:NULL":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    x.VM.sysprep(vm, UNATTEND, 30.0)
    assert x.VM.get_power_state(vm) == "Halted"
    assert failure(x.VM.sysprep, vm, UNATTEND, 30.0)[0] == "VM_BAD_POWER_STATE"
