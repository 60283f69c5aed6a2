"""Every power operation from every power state through the XenAPI SDK: the legal ones reach
the state the reference's table says, the illegal ones fail with VM_BAD_POWER_STATE naming
the allowed states exactly as the reference spells them (core-api.md §6.4)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import XenAPI

from tests.e2e.test_events_sdk import close, login
from tests.e2e.test_vm_tour import install
from tests.serverproc import ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed file <_io.TextIOWrapper:ResourceWarning"),
]

STATES = ("Halted", "Running", "Paused", "Suspended")

#: operation -> (the SDK call, the states it is allowed in as the reference lists them,
#: the state it leaves the VM in; None: the VM is gone)
OPERATIONS: dict[str, tuple[Callable[[Any, str], Any], str, str | None]] = {
    "start": (lambda x, vm: x.VM.start(vm, False, False), "halted", "Running"),
    "pause": (lambda x, vm: x.VM.pause(vm), "running", "Paused"),
    "unpause": (lambda x, vm: x.VM.unpause(vm), "paused", "Running"),
    "clean_shutdown": (lambda x, vm: x.VM.clean_shutdown(vm), "running", "Halted"),
    "clean_reboot": (lambda x, vm: x.VM.clean_reboot(vm), "running", "Running"),
    "suspend": (lambda x, vm: x.VM.suspend(vm), "running", "Suspended"),
    "resume": (lambda x, vm: x.VM.resume(vm, False, False), "suspended", "Running"),
    "hard_reboot": (lambda x, vm: x.VM.hard_reboot(vm), "paused, running", "Running"),
    "hard_shutdown": (
        lambda x, vm: x.VM.hard_shutdown(vm),
        "paused, suspended, running",
        "Halted",
    ),
    "shutdown": (lambda x, vm: x.VM.shutdown(vm), "paused, suspended, running", "Halted"),
    "destroy": (lambda x, vm: x.VM.destroy(vm), "halted, suspended", None),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        Path(tmp_path_factory.mktemp("transitions")),
        extra_args=["--sim-storage", "--vm-shutdown-timeout", "2"],
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def x(server: ServerProcess) -> Iterator[Any]:
    session = login(server.http_url, "e2e-transitions")
    yield session.xenapi
    close(session)


def vm_in(x: Any, state: str) -> str:
    vm = install(x, f"in-{state.lower()}", disks=False)
    if state in ("Running", "Suspended"):
        x.VM.start(vm, False, False)
    if state == "Paused":
        x.VM.start(vm, True, False)
    if state == "Suspended":
        x.VM.suspend(vm)
    assert x.VM.get_power_state(vm) == state
    return vm


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_operation_from_state(x: Any, op: str, state: str) -> None:
    call, allowed, after = OPERATIONS[op]
    vm = vm_in(x, state)
    legal = state.lower() in allowed.split(", ")
    if legal:
        call(x, vm)
        if after is None:
            assert vm not in x.VM.get_all()
            return
        assert x.VM.get_power_state(vm) == after
        assert x.VM.get_current_operations(vm) == {}
        if after == "Halted":
            assert x.VM.get_domid(vm) == "-1" and x.VM.get_resident_on(vm) == "OpaqueRef:NULL"
    else:
        with pytest.raises(XenAPI.Failure) as e:
            call(x, vm)
        assert e.value.details == ["VM_BAD_POWER_STATE", vm, allowed, state.lower()]
        assert x.VM.get_power_state(vm) == state  # nothing changed
    # every operation the VM now lists as allowed is one the table allows in its state
    if vm in x.VM.get_all():
        now = x.VM.get_power_state(vm).lower()
        for listed in x.VM.get_allowed_operations(vm):
            if listed in OPERATIONS:
                assert now in OPERATIONS[listed][1].split(", "), (listed, now)
        if now != "halted":
            x.VM.hard_shutdown(vm)
        x.VM.destroy(vm)
