"""Asynchronous calls: ``Async.<class>.<message>`` returns a task at once and runs on.

The task record follows the reference: pending, then success with ``result`` holding
the XML-RPC ``<value>`` fragment of the return value, or failure with ``error_info``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import Handler
from openxapi.api.state import ServerState, new_ref, new_uuid
from openxapi.errors import ApiError
from openxapi.spec.values import now
from openxapi.wire import encode_value_xml

log = logging.getLogger("openxapi.tasks")


class Tasks:
    """Creates task records and runs the work behind them."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.running: dict[str, asyncio.Task[None]] = {}
        self.owner: dict[str, str] = {}
        state.extras["task_sessions"] = self.owner

    def create(self, label: str, description: str, ctx: CallContext) -> str:
        st = self.state
        ref = new_ref()
        st.store.create(
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
                },
            ),
        )
        if ctx.session:
            self.owner[ref] = ctx.session
            srec = st.store.get("session", ctx.session)
            if srec is not None:
                st.store.update("session", ctx.session, {"tasks": [*srec["tasks"], ref]})
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
        return rec is not None and rec["status"] in ("pending", "cancelling")

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
        try:
            await self.state.store.sync()
        except Exception:
            log.exception("could not persist the end of task %s", ref)

    def fail_interrupted(self) -> int:
        """At start: tasks left pending by a previous run end as failures."""
        count = 0
        for ref, rec in list(self.state.store.table("task").items()):
            if rec["status"] in ("pending", "cancelling"):
                self.fail(ref, ApiError("INTERNAL_ERROR", "The server restarted during the task"))
                count += 1
        return count
