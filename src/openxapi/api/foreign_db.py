"""Database sessions: read-only logins whose calls read a foreign copy of a pool database.

VDI.open_database (and session.create_from_db_file) load a database copy into a separate
in-memory store and return a session registered with it, as the reference registers the
session with its database. The session lives in this server's store with the read-only
role's permissions; its calls run against a :class:`ServerState` over the copy:

* generated messages (getters, get_all_records, get_all_records_where…) read the copy;
* the recovery messages (``VM.recover``, ``VM_appliance.recover`` and their checks) read
  the copy and write this server's database (the one ``session_to`` names);
* ``session.*``, ``task.*`` and ``event.*`` stay with this server (logout, task polling);
* any other hand-written message is refused (OPERATION_NOT_ALLOWED): its behaviour needs
  live hypervisor or storage state the copy does not have.

The copy is dropped when its session ends. The copy's store refuses writes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import Handler, handlers
from openxapi.api.sessions import sessions_of
from openxapi.api.state import ServerState
from openxapi.db.store import Store
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF, Message

#: Classes whose messages a database session sends to this server's own database.
HOME_CLASSES = frozenset({"session", "task", "event"})
#: Hand-written messages that understand a foreign database.
FOREIGN_AWARE = frozenset(
    {
        "VM.recover",
        "VM.assert_can_be_recovered",
        "VM.get_SRs_required_for_recovery",
        "VM_appliance.recover",
        "VM_appliance.assert_can_be_recovered",
        "VM_appliance.get_SRs_required_for_recovery",
    }
)
READ_ONLY_ROLE = "read-only"
READ_ONLY_SID = "readonly-sid"
_KEY = "foreign_databases"


def home_of(state: ServerState) -> ServerState:
    """This server's own state, given it or the state of a foreign database."""
    home = state.extras.get("home")
    return home if isinstance(home, ServerState) else state


def is_foreign(state: ServerState) -> bool:
    return home_of(state) is not state


def _foreign_state(home: ServerState, store: Store) -> ServerState:
    pools = list(store.table("pool"))
    pool = pools[0] if pools else NULL_REF
    master = NULL_REF
    if pool != NULL_REF:
        master = store.table("pool")[pool]["master"]
    foreign = ServerState(home.api, store, home.config, host_ref=master, pool_ref=pool)
    foreign.extras.update(
        home=home, tasks=home.extras.get("tasks"), generic=home.extras.get("generic")
    )
    return foreign


class ForeignDatabases:
    """The foreign databases this server has open, by the session that reads each."""

    def __init__(self, home: ServerState) -> None:
        self.home = home
        self.states: dict[str, ServerState] = {}
        previous = home.extras.get("session_closed")

        def closed(session: str) -> None:
            self.states.pop(session, None)
            if callable(previous):
                previous(session)

        home.extras["session_closed"] = closed
        home.extras["session_router"] = self.route

    def open_session(self, store: Store, uname: str) -> str:
        """A new read-only session registered with ``store`` (not yet durable)."""
        session = sessions_of(self.home).open(
            uname=uname,
            originator="",
            is_superuser=False,
            sid=READ_ONLY_SID,
            roles=frozenset({READ_ONLY_ROLE}),
        )
        self.states[session] = _foreign_state(self.home, store)
        return session

    def state_of(self, session: str) -> ServerState | None:
        return self.states.get(session)

    def route(self, ctx: CallContext, msg: Message, h: Handler) -> Handler:
        """The behaviour to run for a call: ``h`` itself, or ``h`` over a foreign state."""
        foreign = self.states.get(ctx.session)
        if foreign is None or msg.cls in HOME_CLASSES:
            return h
        if handlers().get(msg.wire_name) is h and msg.wire_name not in FOREIGN_AWARE:
            raise ApiError(
                "OPERATION_NOT_ALLOWED",
                f"{msg.wire_name} cannot be called on a session to a foreign database",
            )

        async def on_foreign(_state: ServerState, call: CallContext, *args: Any) -> Any:
            return await h(foreign, call, *args)

        return on_foreign


def foreign_databases(state: ServerState) -> ForeignDatabases:
    home = home_of(state)
    f = home.extras.get(_KEY)
    if not isinstance(f, ForeignDatabases):
        f = ForeignDatabases(home)
        home.extras[_KEY] = f
    return f


def session_to_state(state: ServerState, session_to: str, action: str) -> ServerState:
    """This server's state, once ``session_to`` is one of its sessions (SESSION_INVALID
    otherwise): recovery always writes the database of this server."""
    home = home_of(state)
    sessions_of(home).check(session_to, CallContext())
    return home


def assert_session_allows_dr(state: ServerState, session_to: str, action: str) -> None:
    """As the reference: the DR feature, and a ``session_to`` that could have opened the
    database (VDI.open_database's permission) — recovery itself is open to read-only."""
    from openxapi.api.handlers.pool_features import assert_feature_enabled

    home = home_of(state)
    probe = CallContext()
    sessions_of(home).check(session_to, probe)
    assert_feature_enabled(home, "DR")
    allowed = home.api.messages["VDI.open_database"].roles
    if not probe.is_superuser and not probe.roles.intersection(allowed):
        raise ApiError(
            "RBAC_PERMISSION_DENIED",
            action,
            "The supplied session does not have the required permissions for VM recovery.",
        )


Router = Callable[[CallContext, Message, Handler], Handler]
