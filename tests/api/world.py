"""Helpers that build and drive an in-process API stack (see ``conftest.py``)."""

from __future__ import annotations

import asyncio
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from openxapi.api.bootstrap import ensure_world, sync_subjects
from openxapi.api.context import CallContext
from openxapi.api.dispatch import Dispatcher
from openxapi.api.generic import Generic
from openxapi.api.sessions import Sessions, sessions_of
from openxapi.api.state import ServerState
from openxapi.auth.accounts import AccountBook
from openxapi.config import Config
from openxapi.db.store import Store
from openxapi.errors import ApiError
from openxapi.spec import types as T
from openxapi.spec.model import NULL_REF, Api, load
from openxapi.wire import Preencoded

ROOT_PASSWORD = "root-pw"
USER_PASSWORD = "user-pw"


@dataclass
class World:
    """One server's API layer: call messages as a client would, inspect the store directly."""

    data_dir: Path
    durable: bool
    config: Config
    api: Api
    store: Store
    state: ServerState
    dispatcher: Dispatcher
    book: AccountBook
    root: str = ""
    closed: bool = field(default=False)

    @property
    def sessions(self) -> Sessions:
        return sessions_of(self.state)

    @property
    def generic(self) -> Generic:
        g = self.state.extras["generic"]
        assert isinstance(g, Generic)
        return g

    async def call(self, name: str, *params: Any, ctx: CallContext | None = None) -> Any:
        """The result of a call, or the ApiError it raises."""
        return await self.dispatcher.call(name, list(params), ctx or CallContext())

    async def fail(self, name: str, *params: Any, ctx: CallContext | None = None) -> list[str]:
        """The error description of a call that must fail."""
        try:
            result = await self.call(name, *params, ctx=ctx)
        except ApiError as e:
            return e.description()
        raise AssertionError(f"{name} succeeded with {result!r}")

    async def login_root(self, originator: str = "") -> str:
        """A root session over the unix socket (pre-authenticated: no password hashing)."""
        ref = await self.call(
            "session.login_with_password",
            "root",
            "",
            "1.0",
            originator,
            ctx=CallContext(transport="unix"),
        )
        assert isinstance(ref, str)
        return ref

    async def add_user(self, name: str, roles: list[str]) -> None:
        await asyncio.get_running_loop().run_in_executor(
            None, self.book.add, name, USER_PASSWORD, roles
        )
        sync_subjects(self.state, self.book)
        await self.store.sync()

    async def login_user(self, name: str, originator: str = "") -> str:
        ref = await self.call("session.login_with_password", name, USER_PASSWORD, "1.0", originator)
        assert isinstance(ref, str)
        return ref

    async def record(self, cls: str, ref: str) -> dict[str, Any]:
        """``<cls>.get_record`` as a JSON-RPC client would decode it (field order kept)."""
        value = await self.call(f"{cls}.get_record", self.root, ref, ctx=CallContext(codec="json"))
        return decode_json(value)

    async def wait_task(self, ref: str, timeout: float = 5.0) -> dict[str, Any]:
        """The task record once it is no longer pending."""
        running = self.dispatcher.tasks.running.get(ref)
        if running is not None:
            await asyncio.wait_for(asyncio.shield(running), timeout)
        rec = self.store.get("task", ref)
        assert rec is not None
        return rec

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for t in list(self.dispatcher.tasks.running.values()):
            t.cancel()
        for t in list(self.dispatcher.tasks.running.values()):
            try:
                await t
            except asyncio.CancelledError:
                pass
        await self.store.close()

    async def restart(self) -> World:
        """Close this server and start another on the same data directory."""
        await self.close()
        return await open_world(self.data_dir, durable=self.durable, config=self.config)


async def open_world(
    data_dir: Path,
    *,
    durable: bool = False,
    config: Config | None = None,
    **overrides: Any,
) -> World:
    """Start the API layer the way ``App.start`` does, and log root in."""
    overrides.setdefault("backend", "simulator")
    cfg = config or Config(data_dir=data_dir, auth_fail_delay=0.0, **overrides)
    api = load()
    store = Store(api, data_dir / "s.db", durable=durable)
    await store.open()
    book = AccountBook(data_dir)
    book.reload()
    state = ServerState(api, store, cfg)
    state.extras["accounts"] = book
    state.extras["sync_subjects"] = lambda: sync_subjects(state, book)
    dispatcher = Dispatcher(state)
    ensure_world(state, book)
    dispatcher.tasks.fail_interrupted()
    await store.sync()
    w = World(data_dir, durable, cfg, api, store, state, dispatcher, book)
    w.root = await w.login_root()
    return w


def decode_json(value: Any) -> Any:
    """A JSON-codec result (possibly pre-encoded) as plain Python."""
    if isinstance(value, Preencoded):
        return orjson.loads(value.json)
    if isinstance(value, dict):
        return {k: decode_json(v) for k, v in value.items()}
    return value


def decode_xml_value(fragment: bytes | str) -> Any:
    """One XML-RPC ``<value>`` element as ``xmlrpc.client`` decodes it."""
    text = fragment.decode() if isinstance(fragment, bytes) else fragment
    body = f"<methodResponse><params><param>{text}</param></params></methodResponse>"
    (value,), _ = xmlrpc.client.loads(body)
    return value


def empty_arg(t: T.Type, api: Api) -> Any:
    """A value of type ``t`` as a client would send it for a required constructor field."""
    if isinstance(t, T.Prim):
        return {
            "string": "",
            "int": "0",
            "float": 0.0,
            "bool": False,
            "datetime": "19700101T00:00:00Z",
        }[t.name]
    if isinstance(t, T.Ref):
        return NULL_REF
    if isinstance(t, T.Enum):
        return api.enums[t.name][0]
    if isinstance(t, T.Set):
        return []
    if isinstance(t, T.Map):
        return {}
    return ""


def create_args(api: Api, cls: str, **values: Any) -> dict[str, Any]:
    """A constructor struct holding exactly the required fields of ``cls``, then ``values``."""
    out = {
        f.name: empty_arg(f.type, api)
        for f in api.classes[cls].fields
        if f.in_constructor and not f.has_default
    }
    out.update(values)
    return out


def dummy(t: T.Type, api: Api) -> Any:
    """Some well-typed value for a message parameter."""
    if isinstance(t, T.Record):
        return {}
    if isinstance(t, T.Option):
        return None
    return empty_arg(t, api)
