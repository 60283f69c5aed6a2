"""VM.sysprep against a real QEMU guest: the tiny test guest is Linux, its agent does not
offer sysprep, so the call fails as the reference's does for such a guest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_events_sdk import close, login
from tests.e2e.test_qemu_vms import guest_metrics, leftovers, make_server, tiny_vm, wait_for
from tests.e2e.test_vm_tour import failure
from tests.serverproc import ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed file <_io.TextIOWrapper:ResourceWarning"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = make_server(Path(tmp_path_factory.mktemp("qemu-sysprep")))
    srv.start()
    yield srv
    leftovers(srv)


@pytest.fixture
def x(server: ServerProcess) -> Iterator[Any]:
    session = login(server.http_url, "e2e-qemu-sysprep")
    yield session.xenapi
    close(session)


def test_a_linux_guest_cannot_sysprep(x: Any) -> None:
    vm = tiny_vm(x, "linux-sysprep")
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
    try:
        gm = wait_for(lambda: guest_metrics(x, vm))
        assert gm["os_version"]["distro"] != "windows"
        assert failure(x.VM.sysprep, vm, "<unattend/>", 10.0) == [
            "SYSPREP",
            x.VM.get_uuid(vm),
            "VM driver does not support sysprep",
        ]
        assert x.VM.get_power_state(vm) == "Running"
        assert x.VM.get_current_operations(vm) == {}
    finally:
        x.VM.hard_shutdown(vm)
