"""Task life cycle beyond Async: transient tasks of synchronous calls, progress and
checkpoints, cancellation, destruction, ownership, subtasks and garbage collection."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from openxapi.api.context import CallContext
from openxapi.api.tasks import MAX_TASKS, tasks_of
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF
from openxapi.spec.values import from_timestamp
from tests.api.world import World, create_args

GIB = 1 << 30


async def new_vm(world: World, label: str = "vm") -> str:
    ref = await world.call("VM.create", world.root, create_args(world.api, "VM", name_label=label))
    assert isinstance(ref, str)
    return ref


async def vm_with_vifs(world: World, count: int) -> str:
    vm = await new_vm(world, "source")
    net = await world.call(
        "network.create",
        world.root,
        {"name_label": "net", "name_description": "", "MTU": 1500, "other_config": {}},
    )
    for i in range(count):
        await world.call(
            "VIF.create",
            world.root,
            {
                **create_args(world.api, "VIF"),
                "device": str(i),
                "network": net,
                "VM": vm,
                "MAC": "",
                "MTU": 1500,
            },
        )
    return vm


def counts(world: World) -> dict[str, int]:
    return {c: len(world.store.table(c)) for c in ("VM", "VM_metrics", "VIF", "VIF_metrics")}


# ---------------------------------------------------------------------------- transient tasks


async def test_a_sync_call_of_an_async_capable_message_has_a_transient_task(world: World) -> None:
    seen: list[tuple[str, str]] = []
    labels: list[str] = []

    def watch(change: Any) -> None:
        if change.cls == "task":
            seen.append((change.op, change.ref))
            rec = world.store.get("task", change.ref)
            if rec is not None:
                labels.append(rec["name_label"])

    before = set(world.store.table("task"))
    unsubscribe = world.store.subscribe(watch)
    try:
        await new_vm(world)
    finally:
        unsubscribe()
    assert [op for op, _ in seen] == ["add", "del"]
    assert seen[0][1] == seen[1][1]
    assert labels == ["VM.create"]
    assert set(world.store.table("task")) == before


async def test_sync_only_messages_make_no_task(world: World) -> None:
    host = next(iter(world.store.table("host")))
    seen: list[str] = []
    unsubscribe = world.store.subscribe(lambda c: seen.append(c.cls))
    try:
        await world.call("host.get_record", world.root, host)
        await world.call("VM.get_all", world.root)
    finally:
        unsubscribe()
    assert "task" not in seen


async def test_async_labels_keep_the_prefix(world: World) -> None:
    task = await world.call("Async.VM.create", world.root, create_args(world.api, "VM"))
    rec = await world.wait_task(task)
    assert rec["name_label"] == "Async.VM.create"
    assert rec["type"] == "<none/>"
    assert rec["progress"] == 1.0


async def test_a_failed_async_call_records_the_error(world: World) -> None:
    task = await world.call("Async.VM.destroy", world.root, "OpaqueRef:nope")
    rec = await world.wait_task(task)
    assert rec["status"] == "failure"
    assert rec["error_info"] == ["HANDLE_INVALID", "VM", "OpaqueRef:nope"]
    assert rec["result"] == "" and rec["allowed_operations"] == []


# ---------------------------------------------------------------------------- cancellation


async def test_cancelling_a_long_operation_half_way_leaves_nothing(world: World) -> None:
    vm = await vm_with_vifs(world, 40)
    before = counts(world)
    task = await world.call("Async.VM.clone", world.root, vm, "copy")
    for _ in range(10_000):
        rec = world.store.get("task", task)
        assert rec is not None
        if rec["progress"] > 0:
            break
        await asyncio.sleep(0)
    assert 0 < rec["progress"] < 1 and rec["status"] == "pending"
    await world.call("task.cancel", world.root, task)
    done = await world.wait_task(task)
    assert done["status"] == "cancelled"
    assert done["error_info"] == ["TASK_CANCELLED", task]
    assert done["progress"] == 1.0
    assert counts(world) == before
    assert [r for r in world.store.table("VM").values() if r["name_label"] == "copy"] == []


async def test_a_clone_that_is_not_cancelled_copies_the_vifs(world: World) -> None:
    vm = await vm_with_vifs(world, 3)
    before = counts(world)
    task = await world.call("Async.VM.clone", world.root, vm, "copy")
    done = await world.wait_task(task)
    assert done["status"] == "success", done["error_info"]
    new = done["result"].removeprefix("<value>").removesuffix("</value>")
    rec = world.store.get("VM", new)
    assert rec is not None and rec["name_label"] == "copy" and rec["power_state"] == "Halted"
    assert len(rec["VIFs"]) == 3 and rec["parent"] == NULL_REF
    src = world.store.get("VM", vm)
    assert src is not None
    assert rec["other_config"]["mac_seed"] != src["other_config"]["mac_seed"]
    after = counts(world)
    assert after["VM"] == before["VM"] + 1 and after["VIF"] == before["VIF"] + 3


async def test_cancelling_a_task_nobody_runs_ends_it_at_once(world: World) -> None:
    task = await world.call("task.create", world.root, "external", "")
    await world.call("task.cancel", world.root, task)
    rec = world.store.get("task", task)
    assert rec is not None
    assert rec["status"] == "cancelled" and rec["progress"] == 1.0
    assert rec["allowed_operations"] == []
    await world.call("task.cancel", world.root, task)  # a finished task: nothing happens
    assert await world.fail("task.cancel", world.root, "OpaqueRef:nope") == [
        "HANDLE_INVALID",
        "task",
        "OpaqueRef:nope",
    ]


async def test_checkpoints_and_interruptible_waits_stop_a_cancelled_task(world: World) -> None:
    tasks = tasks_of(world.state)
    reached = asyncio.Event()
    outcome: list[str] = []

    async def long_op(state: Any, ctx: CallContext) -> str:
        tasks.set_progress(ctx, 0.5)
        await tasks.checkpoint(ctx)
        reached.set()
        try:
            await tasks.interruptible(ctx, asyncio.sleep(30))
        except ApiError as e:
            outcome.append(e.code)
            raise
        return "never"

    ctx = CallContext(session=world.root, is_superuser=True)
    task = await tasks.run_async("Async.test", long_op, [], ctx)
    await asyncio.wait_for(reached.wait(), 5)
    rec = world.store.get("task", task)
    assert rec is not None and rec["progress"] == 0.5
    tasks.cancel(task, ctx)
    done = await world.wait_task(task)
    assert outcome == ["TASK_CANCELLED"]
    assert done["status"] == "cancelled"


async def test_progress_moves_are_written_when_they_matter(world: World) -> None:
    tasks = tasks_of(world.state)
    task = await world.call("task.create", world.root, "t", "")
    ctx = CallContext(session=world.root, task=task)
    tasks.set_progress(ctx, 0.5)
    version = world.store.version(task)
    tasks.set_progress(ctx, 0.501)
    assert world.store.version(task) == version
    tasks.set_progress(ctx, 7.0)
    rec = world.store.get("task", task)
    assert rec is not None and rec["progress"] == 1.0


# ---------------------------------------------------------------------------- destroy


async def test_destroying_a_running_task_waits_for_its_end(world: World) -> None:
    tasks = tasks_of(world.state)
    release = asyncio.Event()

    async def op(state: Any, ctx: CallContext) -> str:
        await release.wait()
        return "done"

    ctx = CallContext(session=world.root, is_superuser=True)
    task = await tasks.run_async("Async.test", op, [], ctx)
    await world.call("task.destroy", world.root, task)
    rec = world.store.get("task", task)
    assert rec is not None and rec["current_operations"] == {"task": "destroy"}
    release.set()
    running = tasks.running[task]
    await asyncio.wait_for(running, 5)
    assert world.store.get("task", task) is None


async def test_session_tasks_and_subtasks_stay_in_step(world: World) -> None:
    parent = await world.call("task.create", world.root, "parent", "")
    session = world.store.get("session", world.root)
    assert session is not None and parent in session["tasks"]
    child = tasks_of(world.state).create("child", "", CallContext(session=world.root, task=parent))
    parent_rec = world.store.get("task", parent)
    assert parent_rec is not None and parent_rec["subtasks"] == [child]
    assert await world.call("task.get_subtask_of", world.root, child) == parent
    await world.call("task.destroy", world.root, child)
    parent_rec = world.store.get("task", parent)
    assert parent_rec is not None and parent_rec["subtasks"] == []
    await world.call("task.destroy", world.root, parent)
    session = world.store.get("session", world.root)
    assert session is not None and parent not in session["tasks"]


# ---------------------------------------------------------------------------- ownership


async def test_only_the_owner_or_pool_operators_may_touch_a_task(world: World) -> None:
    await world.add_user("alice", ["vm-admin"])
    await world.add_user("bob", ["vm-admin"])
    await world.add_user("oper", ["pool-operator"])
    alice = await world.login_user("alice")
    alice2 = await world.login_user("alice")
    bob = await world.login_user("bob")
    oper = await world.login_user("oper")
    task = await world.call("task.create", alice, "mine", "")
    denied = await world.fail("task.cancel", bob, task)
    assert denied[:2] == ["RBAC_PERMISSION_DENIED", "task.destroy/any"]
    assert "pool-operator" in denied[2]
    assert (await world.fail("task.destroy", bob, task))[0] == "RBAC_PERMISSION_DENIED"
    assert (await world.fail("task.set_progress", bob, task, 0.3))[0] == "RBAC_PERMISSION_DENIED"
    assert (await world.fail("task.add_to_other_config", bob, task, "k", "v"))[0] == (
        "RBAC_PERMISSION_DENIED"
    )
    await world.call("task.set_progress", alice2, task, 0.3)
    await world.call("task.add_to_other_config", alice, task, "k", "v")
    assert await world.fail("task.add_to_other_config", alice, task, "k", "w") == [
        "MAP_DUPLICATE_KEY",
        "task",
        "other_config",
        world.store.table("task")[task]["uuid"],
        "k",
    ]
    await world.call("task.remove_from_other_config", alice, task, "k")
    await world.call("task.remove_from_other_config", alice, task, "k")
    await world.call("task.set_status", oper, task, "success")
    await world.call("task.destroy", oper, task)
    assert world.store.get("task", task) is None


# ---------------------------------------------------------------------------- GC


def _task(world: World, status: str, created: float, finished: float, **extra: Any) -> str:
    tasks = tasks_of(world.state)
    ref = tasks.create("gc", "", CallContext())
    world.store.update(
        "task",
        ref,
        {
            "status": status,
            "created": from_timestamp(created),
            "finished": from_timestamp(finished),
            **extra,
        },
    )
    return ref


async def test_gc_follows_the_reference_rules(world: World) -> None:
    tasks = tasks_of(world.state)
    t = time.time()
    old_done = _task(world, "success", t - 8000, t - 4000)
    young_done = _task(world, "failure", t - 100, t - 50)
    marked = _task(world, "success", t - 100, t - 50, current_operations={"task": "destroy"})
    old_pending = _task(world, "pending", t - 90_000, 0, progress=0.2)
    moving = _task(world, "pending", t - 90_000, 0, progress=0.2)
    young_pending = _task(world, "pending", t - 10, 0)
    assert tasks.collect_garbage(t) == 2
    assert world.store.get("task", old_done) is None and world.store.get("task", marked) is None
    world.store.update("task", moving, {"progress": 0.6})
    assert tasks.collect_garbage(t + 60) == 1  # the old pending task did not move
    assert world.store.get("task", old_pending) is None
    for ref in (young_done, moving, young_pending):
        assert world.store.get("task", ref) is not None


async def test_gc_keeps_at_most_max_tasks(world: World) -> None:
    tasks = tasks_of(world.state)
    t = time.time()
    for ref in list(world.store.table("task")):
        tasks.remove(ref)
    pending = [_task(world, "pending", t, 0) for _ in range(10)]
    done = [_task(world, "success", t - 1000, t - 1000 + i) for i in range(MAX_TASKS)]
    assert tasks.collect_garbage(t) == 10
    left = set(world.store.table("task"))
    assert set(pending) <= left
    assert set(done[:10]).isdisjoint(left) and set(done[10:]) <= left


async def test_gc_removes_nothing_from_a_quiet_server(world: World) -> None:
    assert tasks_of(world.state).collect_garbage() == 0


@pytest.mark.parametrize("status", ["success", "failure", "cancelled"])
async def test_a_task_leaves_pending_only_once(world: World, status: str) -> None:
    tasks = tasks_of(world.state)
    task = await world.call("task.create", world.root, "t", "")
    world.store.update("task", task, {"status": status})
    tasks.succeed(task, "ignored")
    tasks.fail(task, ApiError("X"))
    rec = world.store.get("task", task)
    assert rec is not None and rec["status"] == status and rec["result"] == ""
