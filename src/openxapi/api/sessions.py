"""Session bookkeeping: validation, RBAC roles of a session, limits and expiry.

Sessions are store records (so they survive a restart, as in the reference); the roles
each session carries are cached in memory by ref.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.state import ServerState, new_ref, new_uuid
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF, Message
from openxapi.spec.values import DateTime, now

LAST_ACTIVE_RESOLUTION = 600.0  # seconds; the reference refreshes last_active this rarely


@dataclass(slots=True)
class SessionInfo:
    is_superuser: bool
    roles: frozenset[str]
    last_touch: float = field(default_factory=time.monotonic)  # last call, in memory
    last_write: float = field(default_factory=time.monotonic)  # last_active last persisted


class Sessions:
    """Create, check and retire sessions."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.info: dict[str, SessionInfo] = {}
        self._perm_cache: dict[frozenset[str], list[str]] = {}

    # ---- creation -----------------------------------------------------------------------
    def open(
        self,
        *,
        uname: str,
        originator: str,
        is_superuser: bool,
        subject: str = NULL_REF,
        sid: str = "",
        roles: frozenset[str] = frozenset(),
        parent: str = NULL_REF,
        pool: bool = False,
    ) -> str:
        """Make a session record (not yet durable) and enforce the session caps."""
        st = self.state
        stamp = now()
        ref = new_ref()
        st.store.create(
            "session",
            ref,
            st.new_record(
                "session",
                {
                    "uuid": new_uuid(),
                    "this_host": st.host_ref,
                    "this_user": NULL_REF,
                    "last_active": stamp,
                    "pool": pool,
                    "is_local_superuser": is_superuser,
                    "subject": subject,
                    "validation_time": stamp,
                    "auth_user_sid": sid,
                    "auth_user_name": uname,
                    "rbac_permissions": [] if is_superuser else self.permissions(roles),
                    "parent": parent,
                    "originator": originator,
                },
            ),
        )
        self.info[ref] = SessionInfo(is_superuser, roles)
        self._enforce_caps(uname, originator, is_superuser, pool, keep=ref)
        return ref

    def permissions(self, roles: frozenset[str]) -> list[str]:
        """Every permission (wire name) the roles grant, as the session record lists them."""
        cached = self._perm_cache.get(roles)
        if cached is None:
            cached = [
                name for name, m in self.state.api.messages.items() if roles.intersection(m.roles)
            ]
            self._perm_cache[roles] = cached
        return cached

    def close(self, ref: str) -> None:
        if self.state.store.get("session", ref) is not None:
            self.state.store.delete("session", ref)
        self.info.pop(ref, None)
        waiters = self.state.extras.get("session_closed")
        if callable(waiters):
            waiters(ref)

    # ---- checking -----------------------------------------------------------------------
    def check(self, ref: Any, ctx: CallContext) -> None:
        """Validate a session ref for a call and fill in who is calling, or SESSION_INVALID."""
        if not isinstance(ref, str):
            # A container is not echoed back: it may be huge or too deep to print.
            raise ApiError("SESSION_INVALID", "" if isinstance(ref, (list, dict)) else str(ref))
        info = self.info.get(ref)
        if info is None:
            rec = self.state.store.get("session", ref)
            if rec is None:
                raise ApiError("SESSION_INVALID", ref)
            info = self._load_info(rec)
            self.info[ref] = info
        ctx.session = ref
        ctx.is_superuser = info.is_superuser
        ctx.roles = info.roles
        t = time.monotonic()
        info.last_touch = t
        if t - info.last_write > LAST_ACTIVE_RESOLUTION:
            info.last_write = t
            if self.state.store.get("session", ref) is not None:
                self.state.store.update("session", ref, {"last_active": now()})

    def _load_info(self, rec: dict[str, Any]) -> SessionInfo:
        if rec["is_local_superuser"]:
            return SessionInfo(True, frozenset())
        return SessionInfo(False, self.subject_roles(rec["subject"]))

    def subject_roles(self, subject: str) -> frozenset[str]:
        srec = self.state.store.get("subject", subject)
        if srec is None:
            return frozenset()
        names = []
        for role_ref in srec["roles"]:
            role = self.state.store.get("role", role_ref)
            if role is not None:
                names.append(role["name_label"])
        return frozenset(names)

    @staticmethod
    def authorise(msg: Message, ctx: CallContext, permission: str) -> None:
        """RBAC: the caller's roles must include one the message allows (root: all)."""
        if ctx.is_superuser:
            return
        if not ctx.roles.intersection(msg.roles):
            allowed = ", ".join(msg.roles)
            raise ApiError(
                "RBAC_PERMISSION_DENIED",
                permission,
                f"No permission in user session. (Roles with this permission: {allowed})",
            )

    # ---- limits and expiry --------------------------------------------------------------
    def _group_of(self, rec: dict[str, Any]) -> tuple[str, str]:
        if rec["pool"]:
            return ("pool", "")
        if rec["originator"]:
            return ("originator", rec["originator"])
        if rec["auth_user_name"] in ("", "root") or rec["is_local_superuser"]:
            return ("anonymous", "")
        return ("user", rec["auth_user_name"])

    def _enforce_caps(
        self, uname: str, originator: str, superuser: bool, pool: bool, keep: str
    ) -> None:
        """Destroy the least recently active sessions of a group beyond its cap.

        The session just made (``keep``) is never one of them; ties go by creation order.
        """
        cfg = self.state.config
        table = self.state.store.table("session")
        probe = {
            "pool": pool,
            "originator": originator,
            "auth_user_name": uname,
            "is_local_superuser": superuser,
        }
        group = self._group_of(probe)
        limit = (
            cfg.max_anonymous_sessions if group[0] == "anonymous" else cfg.max_sessions_per_group
        )
        members = [(r, rec) for r, rec in table.items() if self._group_of(rec) == group]
        if len(members) <= limit:
            return
        busy = self._sessions_with_pending_tasks()
        disposable = sorted(
            (r for r, rec in members if r not in busy and r != keep),
            key=lambda r: (table[r]["last_active"], table[r]["validation_time"]),
        )
        for r in disposable[: len(members) - limit]:
            self.close(r)

    def _sessions_with_pending_tasks(self) -> set[str]:
        out: set[str] = set()
        sessions_of_task = self.state.extras.get("task_sessions")
        if isinstance(sessions_of_task, dict):
            for task, sess in sessions_of_task.items():
                trec = self.state.store.get("task", task)
                if trec is not None and trec["status"] == "pending":
                    out.add(sess)
        return out

    def expire_idle(self) -> int:
        """Destroy sessions idle longer than the configured timeout; returns how many."""
        limit = self.state.config.session_idle_timeout
        cutoff = time.time() - limit
        doomed = []
        for ref, rec in self.state.store.table("session").items():
            last = rec["last_active"]
            if isinstance(last, DateTime) and last.to_datetime().timestamp() < cutoff:
                info = self.info.get(ref)
                # A session used recently (in memory) is not idle even if its record lags.
                if info is not None and time.monotonic() - info.last_touch < limit:
                    continue
                doomed.append(ref)
        for ref in doomed:
            self.close(ref)
        return len(doomed)


def sessions_of(state: ServerState) -> Sessions:
    s = state.extras.get("sessions")
    if not isinstance(s, Sessions):
        s = Sessions(state)
        state.extras["sessions"] = s
    return s
