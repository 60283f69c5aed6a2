"""Task records of asynchronous calls, and tasks a restart interrupted (core-api.md §4)."""

from __future__ import annotations

from pathlib import Path

from openxapi.spec.values import EPOCH
from tests.api.world import World, create_args, open_world


async def test_async_task_is_pending_when_the_call_returns(world: World) -> None:
    task = await world.call("Async.VM.create", world.root, create_args(world.api, "VM"))
    rec = world.store.get("task", task)
    assert rec is not None
    assert rec["status"] == "pending"
    assert rec["allowed_operations"] == ["cancel"]
    assert rec["resident_on"] == world.state.host_ref
    done = await world.wait_task(task)
    assert done["status"] == "success"
    assert done["allowed_operations"] == []
    assert done["finished"] != EPOCH


async def test_task_create_and_destroy(world: World) -> None:
    task = await world.call("task.create", world.root, "label", "description")
    assert await world.call("task.get_name_label", world.root, task) == "label"
    assert await world.call("task.get_status", world.root, task) == "pending"
    assert await world.call("task.destroy", world.root, task) == ""
    assert await world.fail("task.get_status", world.root, task) == ["HANDLE_INVALID", "task", task]


async def test_pending_tasks_fail_at_restart(data_dir: Path) -> None:
    w = await open_world(data_dir, durable=True)
    try:
        pending = await w.call("task.create", w.root, "in flight", "")
        finished = await w.call("Async.VM.create", w.root, create_args(w.api, "VM"))
        assert (await w.wait_task(finished))["status"] == "success"
        await w.store.sync()
        w2 = await w.restart()
    finally:
        await w.close()
    try:
        rec = w2.store.get("task", pending)
        assert rec is not None
        assert rec["status"] == "failure"
        assert rec["error_info"][0] == "INTERNAL_ERROR"
        assert rec["finished"] != EPOCH and rec["progress"] == 1.0
        done = w2.store.get("task", finished)
        assert done is not None and done["status"] == "success"
        assert w2.dispatcher.tasks.fail_interrupted() == 0
    finally:
        await w2.close()


async def test_fail_interrupted_counts(world: World) -> None:
    await world.call("task.create", world.root, "a", "")
    await world.call("task.create", world.root, "b", "")
    assert world.dispatcher.tasks.fail_interrupted() == 2
    statuses = {rec["status"] for rec in world.store.table("task").values()}
    assert statuses == {"failure"}
