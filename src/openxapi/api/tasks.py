"""Tasks: ``Async.`` calls, the transient task of a synchronous call, and the task class.

``Async.<class>.<message>`` makes a task record durable, returns its ref and runs the
handler as an asyncio task; the task ends as ``success`` with ``result`` holding the XML-RPC
``<value>`` fragment of the return value, or ``failure`` / ``cancelled`` with ``error_info``.
A synchronous call of an async-capable message runs under a transient task row named after
the call, created with the call's first writes and destroyed when it ends (as the reference
does). Tasks move out of ``pending`` once; later completions are ignored.

Contract for long operations (any handler):

- ``ctx.task`` is the task the call runs under ("" for messages that have no async form).
- ``tasks_of(state).set_progress(ctx, p)`` records progress in 0..1 (written when it moved by
  at least 1%); it becomes durable, and visible to event watchers, at the next checkpoint.
- ``await tasks_of(state).checkpoint(ctx)`` is a well-defined cancellation point: it makes the
  work done so far durable and raises ``TASK_CANCELLED [task]`` once the task was cancelled.
  On any error a handler undoes what it made, then lets the error go: a cancelled
  operation leaves nothing half done.
- ``await tasks_of(state).interruptible(ctx, awaitable)`` waits for something long (a backend
  call) and raises ``TASK_CANCELLED`` as soon as the task is cancelled meanwhile.

``task.cancel`` is cooperative: an operation running here is asked to stop (the request shows
in ``current_operations``) and stops at its next checkpoint; a pending task with no operation
here (one made by ``task.create``) is marked ``cancelled`` at once. Cancelling or destroying
someone else's task needs the ``task.destroy/any`` permission (pool-operator and above).

Completed tasks are garbage-collected by the reference's rules (``collect_garbage``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from openxapi.api.context import CallContext
from openxapi.api.registry import Handler
from openxapi.api.state import ServerState, new_ref, new_uuid
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF
from openxapi.spec.values import DateTime, now
from openxapi.wire import encode_value_xml

log = logging.getLogger("openxapi.tasks")

T = TypeVar("T")

PENDING = frozenset({"pending", "cancelling"})
COMPLETED = frozenset({"success", "failure", "cancelled"})
#: The extra permission to cancel or destroy tasks of other users.
DESTROY_ANY = "task.destroy/any"
DESTROY_ANY_ROLES = ("pool-admin", "pool-operator")
#: Garbage collection (the reference's db_gc_util ``timeout_tasks``).
COMPLETED_TASK_TIMEOUT = 3900.0
PENDING_TASK_TIMEOUT = 86_400.0
MAX_TASKS = 200
#: Progress moves smaller than this are not written.
PROGRESS_STEP = 0.01


def _seconds(stamp: Any) -> float:
    return stamp.to_datetime().timestamp() if isinstance(stamp, DateTime) else 0.0


class Tasks:
    """Creates task records, runs the work behind them and answers the task class."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        #: Async operations running here, by task ref.
        self.running: dict[str, asyncio.Task[None]] = {}
        #: Tasks with an operation running here (Async or a synchronous call's).
        self.active: set[str] = set()
        #: The session that made each task (sessions with pending tasks are not evicted).
        self.owner: dict[str, str] = {}
        #: The auth_user_sid of that session: who may cancel and destroy without extra rights.
        self.owner_sid: dict[str, str] = {}
        self._cancel_asked: dict[str, asyncio.Event] = {}
        self._destroy_when_done: set[str] = set()
        self._probation: dict[str, float] = {}
        state.extras["task_sessions"] = self.owner

    # ------------------------------------------------------------------ records

    def create(
        self, label: str, description: str, ctx: CallContext, *, transient: bool = False
    ) -> str:
        """A pending task owned by the caller, a subtask of ``ctx.task`` if any (not yet
        durable). A transient one (a synchronous call's) is not listed in the session."""
        st = self.state
        store = st.store
        ref = new_ref()
        parent = ctx.task if ctx.task and store.get("task", ctx.task) is not None else NULL_REF
        store.create(
            "task",
            ref,
            st.new_record(
                "task",
                {
                    "uuid": new_uuid(),
                    "name_label": label,
                    "name_description": description,
                    "allowed_operations": ["cancel"],
                    "created": now(),
                    "status": "pending",
                    "resident_on": st.host_ref,
                    "progress": 0.0,
                    "type": "<none/>",
                    "subtask_of": parent,
                },
            ),
        )
        if parent != NULL_REF:
            prec = store.get("task", parent)
            if prec is not None:
                store.update("task", parent, {"subtasks": [*prec["subtasks"], ref]})
        if ctx.session:
            self.owner[ref] = ctx.session
            srec = store.get("session", ctx.session)
            if srec is not None:
                self.owner_sid[ref] = srec["auth_user_sid"]
                if not transient:
                    store.update("session", ctx.session, {"tasks": [*srec["tasks"], ref]})
        return ref

    def succeed(self, ref: str, result: Any) -> None:
        if self._pending(ref):
            self.state.store.update(
                "task",
                ref,
                {
                    "status": "success",
                    "progress": 1.0,
                    "finished": now(),
                    "allowed_operations": [],
                    "result": encode_value_xml(result).decode(),
                },
            )

    def fail(self, ref: str, error: ApiError) -> None:
        if self._pending(ref):
            status = "cancelled" if error.code == "TASK_CANCELLED" else "failure"
            self.state.store.update(
                "task",
                ref,
                {
                    "status": status,
                    "progress": 1.0,
                    "finished": now(),
                    "allowed_operations": [],
                    "error_info": error.description(),
                },
            )

    def _pending(self, ref: str) -> bool:
        rec = self.state.store.get("task", ref)
        return rec is not None and rec["status"] in PENDING

    def remove(self, ref: str) -> None:
        """Delete a task record with its links (parent's subtasks, session's tasks)."""
        store = self.state.store
        rec = store.get("task", ref)
        if rec is not None:
            parent = rec["subtask_of"]
            prec = store.get("task", parent) if parent != NULL_REF else None
            if prec is not None and ref in prec["subtasks"]:
                store.update(
                    "task", parent, {"subtasks": [t for t in prec["subtasks"] if t != ref]}
                )
            session = self.owner.get(ref, "")
            srec = store.get("session", session) if session else None
            if srec is not None and ref in srec["tasks"]:
                store.update("session", session, {"tasks": [t for t in srec["tasks"] if t != ref]})
            store.delete("task", ref)
            self.state.cache.forget(ref)
        self.owner.pop(ref, None)
        self.owner_sid.pop(ref, None)
        self._destroy_when_done.discard(ref)
        self._cancel_asked.pop(ref, None)

    # ------------------------------------------------------------------ running operations

    async def run_async(self, label: str, h: Handler, values: list[Any], ctx: CallContext) -> str:
        """Start ``h`` as a task and return the task ref once the task record is durable."""
        ref = self.create(label, "", ctx)
        await self.state.store.sync()
        task_ctx = CallContext(
            transport=ctx.transport,
            peer=ctx.peer,
            codec="xml",
            user_agent=ctx.user_agent,
            session=ctx.session,
            is_superuser=ctx.is_superuser,
            roles=ctx.roles,
            wire_name=ctx.wire_name,
            task=ref,
        )
        self.active.add(ref)
        self.running[ref] = asyncio.create_task(self._run(ref, h, values, task_ctx))
        return ref

    async def _run(self, ref: str, h: Handler, values: list[Any], ctx: CallContext) -> None:
        try:
            result = await h(self.state, ctx, *values)
        except ApiError as e:
            self.fail(ref, e)
        except asyncio.CancelledError:
            self.fail(ref, ApiError("TASK_CANCELLED", ref))
        except Exception as e:
            log.exception("internal error in task %s", ref)
            self.fail(ref, ApiError("INTERNAL_ERROR", f"{type(e).__name__}: {e}"))
        else:
            self.succeed(ref, result)
        finally:
            self.running.pop(ref, None)
            self.active.discard(ref)
            if ref in self._destroy_when_done:
                self.remove(ref)
            self._cancel_asked.pop(ref, None)
        try:
            await self.state.store.sync()
        except Exception:
            log.exception("could not persist the end of task %s", ref)

    async def run_sync(self, label: str, h: Handler, values: list[Any], ctx: CallContext) -> Any:
        """Run a synchronous call of an async-capable message under a transient task."""
        ref = self.create(label, "", ctx, transient=True)
        outer = ctx.task
        ctx.task = ref
        self.active.add(ref)
        try:
            return await h(self.state, ctx, *values)
        finally:
            ctx.task = outer
            self.active.discard(ref)
            self.remove(ref)

    def set_progress(self, ctx: CallContext, value: float) -> None:
        """Record the progress (0..1) of the operation running under ``ctx.task``."""
        ref = ctx.task
        if not ref:
            return
        rec = self.state.store.get("task", ref)
        if rec is None or rec["status"] not in PENDING:
            return
        value = min(max(float(value), 0.0), 1.0)
        if abs(value - rec["progress"]) >= PROGRESS_STEP or (value == 1.0 != rec["progress"]):
            self.state.store.update("task", ref, {"progress": value})

    def cancel_requested(self, ref: str) -> bool:
        """Whether the task was asked to stop (or was marked cancelled meanwhile)."""
        if not ref:
            return False
        event = self._cancel_asked.get(ref)
        if event is not None and event.is_set():
            return True
        rec = self.state.store.get("task", ref)
        if rec is None:
            return False
        return rec["status"] in ("cancelling", "cancelled") or (
            "cancel" in rec["current_operations"].values()
        )

    async def checkpoint(self, ctx: CallContext) -> None:
        """Make the work so far durable; TASK_CANCELLED [task] if the task was cancelled."""
        ref = ctx.task
        if self.cancel_requested(ref):
            raise ApiError("TASK_CANCELLED", ref)
        await self.state.store.sync()
        await asyncio.sleep(0)  # let a cancellation (or anything else) in, even in memory
        if self.cancel_requested(ref):
            raise ApiError("TASK_CANCELLED", ref)

    async def interruptible(self, ctx: CallContext, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable``, abandoning it with TASK_CANCELLED if the task is cancelled."""
        ref = ctx.task
        work = asyncio.ensure_future(awaitable)
        if not ref:
            return await work
        if self.cancel_requested(ref):
            work.cancel()
            raise ApiError("TASK_CANCELLED", ref)
        event = self._cancel_asked.setdefault(ref, asyncio.Event())
        stop = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if work.done():
            return work.result()
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work
        raise ApiError("TASK_CANCELLED", ref)

    # ------------------------------------------------------------------ the task class

    def assert_may_operate(self, ref: str, ctx: CallContext) -> None:
        """The owner (same user), the task's own operation, or ``task.destroy/any``."""
        if ctx.is_superuser or ctx.task == ref:
            return
        owner = self.owner_sid.get(ref)
        if owner is not None and ctx.session:
            srec = self.state.store.get("session", ctx.session)
            if srec is not None and srec["auth_user_sid"] == owner:
                return
        if ctx.roles.intersection(DESTROY_ANY_ROLES):
            return
        raise ApiError(
            "RBAC_PERMISSION_DENIED",
            DESTROY_ANY,
            "No permission in user session. (Roles with this permission: "
            + ", ".join(DESTROY_ANY_ROLES)
            + ")",
        )

    def cancel(self, ref: str, ctx: CallContext) -> None:
        """Ask the operation to stop, or end a task nobody runs here as cancelled."""
        store = self.state.store
        rec = self.state.record("task", ref)
        self.assert_may_operate(ref, ctx)
        if rec["status"] not in PENDING:
            return
        if ref in self.active:
            key = ctx.task or ref
            store.update("task", ref, {"current_operations": {key: "cancel"}})
            self._cancel_asked.setdefault(ref, asyncio.Event()).set()
            return
        store.update(
            "task",
            ref,
            {
                "status": "cancelled",
                "progress": 1.0,
                "finished": now(),
                "allowed_operations": [],
            },
        )

    def destroy(self, ref: str, ctx: CallContext) -> None:
        """Destroy a task; one whose operation still runs goes when the operation ends."""
        rec = self.state.record("task", ref)
        self.assert_may_operate(ref, ctx)
        if ref in self.active and rec["status"] in PENDING:
            ops = dict(rec["current_operations"])
            ops["task"] = "destroy"
            self.state.store.update("task", ref, {"current_operations": ops})
            self._destroy_when_done.add(ref)
            return
        self.remove(ref)

    # ------------------------------------------------------------------ restart and GC

    def fail_interrupted(self) -> int:
        """At start: tasks left pending by a previous run end as failures."""
        count = 0
        for ref, rec in list(self.state.store.table("task").items()):
            if rec["status"] in PENDING:
                self.fail(ref, ApiError("INTERNAL_ERROR", "The server restarted during the task"))
                count += 1
        return count

    def collect_garbage(self, at: float | None = None) -> int:
        """Destroy tasks by the reference's rules; returns how many went.

        Completed tasks marked for destruction go at once; completed tasks finished more
        than 65 minutes ago go; pending tasks older than 24 hours go if their progress did not
        move since the previous pass; if more than 200 remain, the oldest completed go.
        """
        t = time.time() if at is None else at
        table = self.state.store.table("task")
        doomed: list[str] = []
        young_done: list[tuple[float, str]] = []
        young_pending = 0
        probation: dict[str, float] = {}
        for ref, rec in table.items():
            if rec["status"] in COMPLETED:
                marked = "destroy" in rec["current_operations"].values()
                if marked or _seconds(rec["finished"]) < t - COMPLETED_TASK_TIMEOUT:
                    doomed.append(ref)
                else:
                    young_done.append((_seconds(rec["finished"]), ref))
            elif _seconds(rec["created"]) < t - PENDING_TASK_TIMEOUT:
                before = self._probation.get(rec["uuid"])
                probation[rec["uuid"]] = rec["progress"]
                if before is not None and rec["progress"] - before <= 0.0:
                    doomed.append(ref)
                else:
                    young_pending += 1
            else:
                young_pending += 1
        self._probation = probation
        if young_pending + len(young_done) > MAX_TASKS:
            keep = max(MAX_TASKS - young_pending, 0)
            young_done.sort(reverse=True)
            doomed += [ref for _, ref in young_done[keep:]]
        for ref in doomed:
            if self._pending(ref):
                log.warning("garbage-collected task %s while it was still pending", ref)
            self.remove(ref)
        return len(doomed)


def tasks_of(state: ServerState) -> Tasks:
    """The server's task manager (built with the dispatcher)."""
    t = state.extras.get("tasks")
    if not isinstance(t, Tasks):
        raise RuntimeError("no task manager: the dispatcher builds it")
    return t
