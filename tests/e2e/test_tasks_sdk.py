"""Tasks with the XenAPI SDK over real sockets: Async calls followed through events to
success, failure and cancellation (a long operation cancelled half way leaves nothing
behind), the transient task of a synchronous call, and task.create / cancel / destroy."""

from __future__ import annotations

import time
import xmlrpc.client
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.test_events_sdk import close, event_from, login, vm_args
from tests.serverproc import ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed file <_io.TextIOWrapper:ResourceWarning"),
]

VIFS = 300


@pytest.fixture
def x(server: ServerProcess) -> Iterator[Any]:
    session = login(server.http_url, "e2e-tasks")
    yield session.xenapi
    close(session)


def follow(x: Any, task: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every snapshot of the task seen through event.from until it is no longer pending."""
    seen: list[dict[str, Any]] = []
    token = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = event_from(x, [f"task/{task}"], token, 5.0)
        token = reply["token"]
        for event in reply["events"]:
            assert event["ref"] == task and event["class"] == "task"
            if event["operation"] == "del":
                return seen
            seen.append(event["snapshot"])
        if seen and seen[-1]["status"] not in ("pending", "cancelling"):
            return seen
    raise AssertionError(f"task {task} did not finish: {seen[-1:]}")


def value_of(fragment: str) -> Any:
    body = f"<methodResponse><params><param>{fragment}</param></params></methodResponse>"
    (value,), _ = xmlrpc.client.loads(body)
    return value


def test_async_call_followed_to_success(x: Any) -> None:
    vm = x.VM.create(vm_args("async-source"))
    task = x.Async.VM.clone(vm, "async-copy")
    assert task.startswith("OpaqueRef:")
    seen = follow(x, task)
    final = seen[-1]
    assert final["status"] == "success"
    assert final["name_label"] == "Async.VM.clone"
    assert final["progress"] == 1.0 and final["allowed_operations"] == []
    assert final["result"].startswith("<value>OpaqueRef:")
    clone = value_of(final["result"])
    assert x.VM.get_name_label(clone) == "async-copy"
    assert x.task.get_status(task) == "success"
    assert x.task.get_result(task) == final["result"]
    x.task.destroy(task)
    assert task not in x.task.get_all()


def test_async_call_followed_to_failure(x: Any) -> None:
    task = x.Async.VM.destroy("OpaqueRef:no-such-vm")
    final = follow(x, task)[-1]
    assert final["status"] == "failure"
    assert final["error_info"] == ["HANDLE_INVALID", "VM", "OpaqueRef:no-such-vm"]
    assert final["result"] == ""
    x.task.destroy(task)


def test_a_long_operation_cancelled_half_way_leaves_nothing(x: Any) -> None:
    vm = x.VM.create(vm_args("many-vifs"))
    net = x.network.create(
        {"name_label": "e2e-net", "name_description": "", "MTU": "1500", "other_config": {}}
    )
    for i in range(VIFS):
        x.VIF.create(
            {
                "device": str(i),
                "network": net,
                "VM": vm,
                "MAC": "",
                "MTU": "1500",
                "other_config": {},
                "qos_algorithm_type": "",
                "qos_algorithm_params": {},
            }
        )
    vms_before, vifs_before = len(x.VM.get_all()), len(x.VIF.get_all())
    task = x.Async.VM.clone(vm, "never-finished")
    token = ""
    progress = 0.0
    while progress == 0.0:  # wait until the copy has really started
        reply = event_from(x, [f"task/{task}"], token, 10.0)
        token = reply["token"]
        for event in reply["events"]:
            progress = event["snapshot"]["progress"]
            assert event["snapshot"]["status"] == "pending", "finished before the cancel"
    assert 0 < progress < 1
    x.task.cancel(task)
    final = follow(x, task)[-1]
    assert final["status"] == "cancelled"
    assert final["error_info"] == ["TASK_CANCELLED", task]
    assert len(x.VM.get_all()) == vms_before
    assert len(x.VIF.get_all()) == vifs_before
    assert x.VM.get_by_name_label("never-finished") == []
    x.task.destroy(task)


def test_a_sync_call_runs_under_a_transient_task(x: Any) -> None:
    tasks_before = set(x.task.get_all())
    x.event.register(["task"])
    try:
        x.VM.create(vm_args("sync"))
        events: list[dict[str, Any]] = []
        while not any(e["operation"] == "del" for e in events):
            events += x.event.next()
    finally:
        x.event.unregister(["task"])
    add = next(e for e in events if e["operation"] == "add")
    assert add["class"] == "task"
    assert any(e["operation"] == "del" and e["ref"] == add["ref"] for e in events)
    assert set(x.task.get_all()) == tasks_before


def test_task_create_cancel_destroy(x: Any) -> None:
    task = x.task.create("external work", "made by a client")
    rec = x.task.get_record(task)
    assert rec["status"] == "pending" and rec["name_description"] == "made by a client"
    assert rec["allowed_operations"] == ["cancel"]
    x.task.set_progress(task, 0.25)
    x.task.add_to_other_config(task, "k", "v")
    assert x.task.get_other_config(task) == {"k": "v"}
    x.task.cancel(task)
    assert x.task.get_status(task) == "cancelled"
    x.task.destroy(task)
    assert task not in x.task.get_all()
