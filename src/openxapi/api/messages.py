"""Messages (alerts) for the administrator: raising them, listing them by time, trimming them.

Messages are stored objects like any other (so they survive restarts and are durable before
they are announced), but have no generated accessors: the message class answers from here.
Their events are tracked by the second half of an event token (see ``api.events``).

Later features raise alerts with :func:`raise_alert`, e.g.
``raise_alert(state, "VM_CRASHED", 2, "VM", vm_uuid, "")`` followed by ``await store.sync()``.
"""

from __future__ import annotations

import time
from typing import Any

from openxapi.api.state import ServerState, new_ref, new_uuid
from openxapi.errors import ApiError
from openxapi.spec.values import DateTime, from_timestamp

MESSAGE = "message"
#: The stored class behind each value of the ``cls`` enum.
CLS_TABLE = {
    "VM": "VM",
    "Host": "host",
    "SR": "SR",
    "Pool": "pool",
    "VMPP": "VMPP",
    "VMSS": "VMSS",
    "PVS_proxy": "PVS_proxy",
    "VDI": "VDI",
    "Certificate": "Certificate",
}
#: How many messages are kept (the reference's ``message_limit``); older ones are trimmed.
MESSAGE_LIMIT = 10_000


class Messages:
    """Creation times to sub-second precision, so ``since`` queries order as the reference's
    (its message files are named by a fractional timestamp). Messages loaded from disk keep
    their stored second."""

    def __init__(self) -> None:
        self.stamps: dict[str, float] = {}

    def stamp(self, ref: str, rec: dict[str, Any]) -> float:
        t = self.stamps.get(ref)
        if t is not None:
            return t
        ts = rec["timestamp"]
        return ts.to_datetime().timestamp() if isinstance(ts, DateTime) else 0.0


def messages_of(state: ServerState) -> Messages:
    m = state.extras.get("messages")
    if not isinstance(m, Messages):
        m = Messages()
        state.extras["messages"] = m
    return m


def object_exists(state: ServerState, cls: str, obj_uuid: str) -> bool:
    table = CLS_TABLE.get(cls)
    if table is None or table not in state.store.classes():
        return False
    return state.store.ref_of_uuid(table, obj_uuid) is not None


def raise_alert(
    state: ServerState, name: str, priority: int, cls: str, obj_uuid: str, body: str
) -> str:
    """Create a message about an object (not yet durable); the reference's checks apply:
    INVALID_VALUE ["UTF8 expected"] for a body that is not UTF-8, UUID_INVALID [cls, uuid]
    for an object that does not exist."""
    try:
        body.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError("INVALID_VALUE", "UTF8 expected") from None
    if not object_exists(state, cls, obj_uuid):
        raise ApiError("UUID_INVALID", cls, obj_uuid)
    t = time.time()
    ref = new_ref()
    state.store.create(
        MESSAGE,
        ref,
        state.new_record(
            MESSAGE,
            {
                "uuid": new_uuid(),
                "name": name,
                "priority": priority,
                "cls": cls,
                "obj_uuid": obj_uuid,
                "timestamp": from_timestamp(t),
                "body": body,
            },
        ),
    )
    messages_of(state).stamps[ref] = t
    return ref


def newest_first(state: ServerState, refs: list[str] | None = None) -> list[str]:
    """Message refs, newest first (ties by the order they were written)."""
    store = state.store
    table = store.table(MESSAGE)
    msgs = messages_of(state)
    chosen = list(table) if refs is None else refs
    return sorted(
        chosen,
        key=lambda r: (msgs.stamp(r, table[r]), store.version(r)),
        reverse=True,
    )


def newer_than(state: ServerState, since: float, cls: str = "", obj_uuid: str = "") -> list[str]:
    """Messages created strictly after ``since`` (Unix time), optionally about one object."""
    table = state.store.table(MESSAGE)
    msgs = messages_of(state)
    refs = [
        ref
        for ref, rec in table.items()
        if msgs.stamp(ref, rec) > since
        and (not cls or (rec["cls"] == cls and rec["obj_uuid"] == obj_uuid))
    ]
    return newest_first(state, refs)


def destroy(state: ServerState, ref: str) -> None:
    """Remove a message; HANDLE_INVALID ["message", ref] for an unknown one."""
    if state.store.get(MESSAGE, ref) is None:
        raise ApiError("HANDLE_INVALID", MESSAGE, ref)
    state.store.delete(MESSAGE, ref)
    state.cache.forget(ref)
    messages_of(state).stamps.pop(ref, None)


def collect_garbage(state: ServerState, limit: int = MESSAGE_LIMIT) -> int:
    """Keep the newest ``limit`` messages, as the reference's message GC does."""
    table = state.store.table(MESSAGE)
    if len(table) <= limit:
        return 0
    doomed = newest_first(state)[limit:]
    for ref in doomed:
        destroy(state, ref)
    return len(doomed)
