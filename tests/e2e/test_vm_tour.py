"""The first tour of every XenServer user, with the XenAPI SDK over real sockets: a template
cloned, provisioned, given a network card, started, reporting guest metrics, suspended,
resumed, shut down and destroyed; illegal transitions with their exact errors; a guest that
ignores clean shutdown; Async operations followed through events; a restart mid-lifecycle."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import XenAPI

from tests.e2e.test_events_sdk import close, event_from, login
from tests.serverproc import ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed file <_io.TextIOWrapper:ResourceWarning"),
]

TINY = "openxapi tiny test guest"
SHUTDOWN_TIMEOUT = "0.5"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        Path(tmp_path_factory.mktemp("tour")),
        extra_args=["--sim-storage", "--vm-shutdown-timeout", SHUTDOWN_TIMEOUT],
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def x(server: ServerProcess) -> Iterator[Any]:
    session = login(server.http_url, "e2e-vm-tour")
    yield session.xenapi
    close(session)


def failure(call: Any, *args: Any) -> list[str]:
    with pytest.raises(XenAPI.Failure) as e:
        call(*args)
    details: list[str] = e.value.details
    return details


def install(x: Any, name: str, *, disks: bool = True) -> str:
    """What ``xe vm-install`` does: clone, point the disks at an SR, provision."""
    (tpl,) = x.VM.get_by_name_label(TINY)
    vm: str = x.VM.clone(tpl, name)
    pool = x.pool.get_all()[0]
    sr = x.pool.get_default_SR(pool)
    spec = x.VM.get_other_config(vm)["disks"]
    if disks:
        spec = spec.replace('sr=""', f'sr="{x.SR.get_uuid(sr)}"')
    else:
        spec = "<provision></provision>"
    x.VM.remove_from_other_config(vm, "disks")
    x.VM.add_to_other_config(vm, "disks", spec)
    x.VM.provision(vm)
    return vm


def test_the_tour(x: Any) -> None:
    names = {r["name_label"] for r in x.VM.get_all_records().values() if r["is_a_template"]}
    assert {
        "Debian Bookworm 12",
        "Ubuntu Jammy Jellyfish 22.04",
        "Other install media",
        TINY,
    } <= names
    vm = install(x, "tour")
    rec = x.VM.get_record(vm)
    assert rec["is_a_template"] is False and "disks" not in rec["other_config"]
    assert len(rec["VBDs"]) == 1
    net = x.network.create(
        {"name_label": "tour net", "name_description": "", "MTU": "1500", "other_config": {}}
    )
    vif = x.VIF.create(
        {
            "device": "0", "network": net, "VM": vm, "MAC": "", "MTU": "1500",
            "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {},
        }
    )  # fmt: skip
    x.VM.start(vm, False, False)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Running" and int(rec["domid"]) > 0
    assert x.VIF.get_currently_attached(vif) is True
    gm = x.VM_guest_metrics.get_record(rec["guest_metrics"])
    assert gm["networks"]["0/ip"] == gm["networks"]["0/ipv4/0"]
    assert {"name", "distro", "major", "minor", "uname"} <= set(gm["os_version"])
    assert gm["PV_drivers_detected"] is True
    assert "suspend" in rec["allowed_operations"]
    metrics = x.VM_metrics.get_record(rec["metrics"])
    assert int(metrics["memory_actual"]) == int(rec["memory_dynamic_max"])

    x.VM.suspend(vm)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Suspended" and rec["domid"] == "-1"
    assert x.VDI.get_type(rec["suspend_VDI"]) == "suspend"
    x.VM.resume(vm, False, False)
    assert x.VM.get_power_state(vm) == "Running"
    assert x.VM.get_suspend_VDI(vm) == "OpaqueRef:NULL"
    x.VM.clean_shutdown(vm)
    rec = x.VM.get_record(vm)
    assert rec["power_state"] == "Halted" and rec["resident_on"] == "OpaqueRef:NULL"
    assert rec["guest_metrics"] == "OpaqueRef:NULL"
    vdi = x.VBD.get_VDI(rec["VBDs"][0])
    x.VM.destroy(vm)
    x.VDI.destroy(vdi)
    assert vm not in x.VM.get_all()


def test_illegal_transitions_have_exact_errors(x: Any) -> None:
    vm = install(x, "illegal", disks=False)
    (tpl,) = x.VM.get_by_name_label(TINY)
    assert failure(x.VM.start, tpl, False, False) == ["VM_IS_TEMPLATE", tpl, "start"]
    assert failure(x.VM.provision, vm) == ["PROVISION_ONLY_ALLOWED_ON_TEMPLATE"]
    assert failure(x.VM.pause, vm) == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    assert failure(x.VM.hard_reboot, vm) == ["VM_BAD_POWER_STATE", vm, "paused, running", "halted"]
    x.VM.start(vm, True, False)
    assert x.VM.get_power_state(vm) == "Paused"
    assert failure(x.VM.suspend, vm) == ["VM_BAD_POWER_STATE", vm, "running", "paused"]
    x.VM.unpause(vm)
    assert failure(x.VM.destroy, vm) == ["VM_BAD_POWER_STATE", vm, "halted, suspended", "running"]
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def test_guest_ignoring_clean_shutdown(x: Any) -> None:
    vm = install(x, "stubborn", disks=False)
    x.VM.add_to_other_config(vm, "sim_ignore_clean_shutdown", "true")
    x.VM.start(vm, False, False)
    assert failure(x.VM.clean_shutdown, vm) == ["VM_SHUTDOWN_TIMEOUT", vm, SHUTDOWN_TIMEOUT]
    assert x.VM.get_power_state(vm) == "Running"
    x.VM.shutdown(vm)  # clean, then hard
    assert x.VM.get_power_state(vm) == "Halted"
    x.VM.destroy(vm)


def test_async_start_is_seen_through_events(x: Any) -> None:
    vm = install(x, "async", disks=False)
    token = event_from(x, ["vm"], "", 0.0)["token"]
    task = x.Async.VM.start(vm, False, False)
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        reply = event_from(x, ["vm"], token, 5.0)
        token = reply["token"]
        seen += [e["snapshot"] for e in reply["events"] if e["ref"] == vm and "snapshot" in e]
        if seen and seen[-1]["power_state"] == "Running" and not seen[-1]["current_operations"]:
            break
    assert any(s["current_operations"] == {task: "start"} for s in seen)
    assert any("start" not in s["allowed_operations"] for s in seen)
    last = seen[-1]
    assert last["power_state"] == "Running" and "clean_shutdown" in last["allowed_operations"]
    assert x.task.get_status(task) == "success"
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)


def test_running_guest_survives_a_restart(server: ServerProcess) -> None:
    session = login(server.http_url, "e2e-vm-tour")
    x = session.xenapi
    vm = install(x, "persistent", disks=False)
    x.VM.start(vm, False, False)
    domid = x.VM.get_domid(vm)
    close(session)
    server.stop()
    server.start()
    session = login(server.http_url, "e2e-vm-tour")
    x = session.xenapi
    assert x.VM.get_power_state(vm) == "Running" and x.VM.get_domid(vm) == domid
    x.VM.clean_shutdown(vm)
    assert x.VM.get_power_state(vm) == "Halted"
    close(session)
