"""role and subject: RBAC roles, their permissions, and the subjects that hold them.

As in the reference, every permission is itself a role object (lower-cased permission
name, ``is_internal`` true, no subroles), and a role's ``subroles`` lists its permissions.
"""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.errors import ApiError

ROLES_ONLY = "subroles<>[]"
PERMISSIONS_ONLY = "subroles=[]"


def _is_role(rec: dict[str, Any]) -> bool:
    return bool(rec["subroles"])


def _select(state: ServerState, expr: str) -> list[str]:
    """The reference matches these two expressions literally and returns all otherwise."""
    table = state.store.table("role")
    if expr == ROLES_ONLY:
        return [r for r, rec in table.items() if _is_role(rec)]
    if expr == PERMISSIONS_ONLY:
        return [r for r, rec in table.items() if not _is_role(rec)]
    return list(table)


@handler("role.get_all_where")
async def get_all_where(state: ServerState, ctx: CallContext, expr: str) -> Any:
    return _select(state, expr)


@handler("role.get_all_records_where")
async def get_all_records_where(state: ServerState, ctx: CallContext, expr: str) -> Any:
    table = state.store.table("role")
    return {r: state.cache.encoded(r, table[r], ctx.codec) for r in _select(state, expr)}


@handler("role.get_permissions")
async def get_permissions(state: ServerState, ctx: CallContext, self: str) -> Any:
    return list(state.record("role", self)["subroles"])


@handler("role.get_permissions_name_label")
async def get_permissions_name_label(state: ServerState, ctx: CallContext, self: str) -> Any:
    return _permission_names(state, state.record("role", self)["subroles"])


def _permission_names(state: ServerState, refs: list[str]) -> list[str]:
    out = []
    for ref in refs:
        rec = state.store.get("role", ref)
        if rec is not None:
            out.append(rec["name_label"])
    return out


@handler("role.get_by_permission")
async def get_by_permission(state: ServerState, ctx: CallContext, permission: str) -> Any:
    state.record("role", permission)
    return [r for r, rec in state.store.table("role").items() if permission in rec["subroles"]]


@handler("role.get_by_permission_name_label")
async def get_by_permission_name_label(state: ServerState, ctx: CallContext, label: str) -> Any:
    table = state.store.table("role")
    perms = {r for r, rec in table.items() if not _is_role(rec) and rec["name_label"] == label}
    return [r for r, rec in table.items() if perms.intersection(rec["subroles"])]


@handler("subject.get_permissions_name_label")
async def subject_permissions(state: ServerState, ctx: CallContext, self: str) -> Any:
    names: set[str] = set()
    for role in state.record("subject", self)["roles"]:
        rec = state.store.get("role", role)
        if rec is not None:
            names.update(_permission_names(state, rec["subroles"]))
    return sorted(names)


def _role_ref(state: ServerState, role: str) -> str:
    rec = state.store.get("role", role)
    if rec is None or not _is_role(rec):
        raise ApiError("ROLE_NOT_FOUND")
    return role


@handler("subject.add_to_roles")
async def add_to_roles(state: ServerState, ctx: CallContext, self: str, role: str) -> Any:
    rec = state.record("subject", self)
    _role_ref(state, role)
    if role in rec["roles"]:
        raise ApiError("ROLE_ALREADY_EXISTS")
    state.store.update("subject", self, {"roles": [*rec["roles"], role]})
    _forget_session_roles(state, self)
    await state.store.sync()
    return ""


@handler("subject.remove_from_roles")
async def remove_from_roles(state: ServerState, ctx: CallContext, self: str, role: str) -> Any:
    rec = state.record("subject", self)
    if role not in rec["roles"]:
        raise ApiError("ROLE_NOT_FOUND")
    state.store.update("subject", self, {"roles": [r for r in rec["roles"] if r != role]})
    _forget_session_roles(state, self)
    await state.store.sync()
    return ""


def _forget_session_roles(state: ServerState, subject: str) -> None:
    """Sessions of this subject pick up the new roles on their next call."""
    sessions: Any = state.extras.get("sessions")
    if sessions is None:
        return
    for sref, srec in state.store.table("session").items():
        if srec["subject"] == subject:
            sessions.info.pop(sref, None)
