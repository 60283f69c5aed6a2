"""task: creating tasks on behalf of clients (HTTP transfers, xo's barriers)."""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.tasks import Tasks


def _tasks(state: ServerState) -> Tasks:
    t = state.extras["tasks"]
    assert isinstance(t, Tasks)
    return t


@handler("task.create")
async def create(state: ServerState, ctx: CallContext, label: str, description: str) -> Any:
    ref = _tasks(state).create(label, description, ctx)
    await state.store.sync()
    return ref


@handler("task.destroy")
async def destroy(state: ServerState, ctx: CallContext, self: str) -> Any:
    state.record("task", self)
    state.store.delete("task", self)
    _tasks(state).owner.pop(self, None)
    await state.store.sync()
    return ""
