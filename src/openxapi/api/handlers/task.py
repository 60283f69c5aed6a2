"""task: creating, cancelling and destroying tasks, and the setters their owners use.

Every message that changes a task checks, as the reference does, that the caller owns it
(same user) or holds ``task.destroy/any``.
"""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.tasks import tasks_of
from openxapi.errors import ApiError


@handler("task.create")
async def create(state: ServerState, ctx: CallContext, label: str, description: str) -> Any:
    ref = tasks_of(state).create(label, description, ctx)
    await state.store.sync()
    return ref


@handler("task.destroy")
async def destroy(state: ServerState, ctx: CallContext, self: str) -> Any:
    tasks_of(state).destroy(self, ctx)
    await state.store.sync()
    return ""


@handler("task.cancel")
async def cancel(state: ServerState, ctx: CallContext, task: str) -> Any:
    tasks_of(state).cancel(task, ctx)
    await state.store.sync()
    return ""


async def _set(state: ServerState, ctx: CallContext, ref: str, field: str, value: Any) -> Any:
    state.record("task", ref)
    tasks_of(state).assert_may_operate(ref, ctx)
    state.store.update("task", ref, {field: value})
    await state.store.sync()
    return ""


@handler("task.set_status")
async def set_status(state: ServerState, ctx: CallContext, self: str, value: str) -> Any:
    return await _set(state, ctx, self, "status", value)


@handler("task.set_progress")
async def set_progress(state: ServerState, ctx: CallContext, self: str, value: float) -> Any:
    return await _set(state, ctx, self, "progress", value)


@handler("task.set_result")
async def set_result(state: ServerState, ctx: CallContext, self: str, value: str) -> Any:
    return await _set(state, ctx, self, "result", value)


@handler("task.set_error_info")
async def set_error_info(state: ServerState, ctx: CallContext, self: str, value: list[str]) -> Any:
    return await _set(state, ctx, self, "error_info", value)


@handler("task.set_other_config")
async def set_other_config(
    state: ServerState, ctx: CallContext, self: str, value: dict[str, str]
) -> Any:
    return await _set(state, ctx, self, "other_config", value)


@handler("task.add_to_other_config")
async def add_to_other_config(
    state: ServerState, ctx: CallContext, self: str, key: str, value: str
) -> Any:
    rec = state.record("task", self)
    tasks_of(state).assert_may_operate(self, ctx)
    if key in rec["other_config"]:
        raise ApiError("MAP_DUPLICATE_KEY", "task", "other_config", rec["uuid"], key)
    state.store.update("task", self, {"other_config": {**rec["other_config"], key: value}})
    await state.store.sync()
    return ""


@handler("task.remove_from_other_config")
async def remove_from_other_config(
    state: ServerState, ctx: CallContext, self: str, key: str
) -> Any:
    rec = state.record("task", self)
    tasks_of(state).assert_may_operate(self, ctx)
    new = dict(rec["other_config"])
    if key in new:
        del new[key]
        state.store.update("task", self, {"other_config": new})
        await state.store.sync()
    return ""
