"""Fuzzing the dispatcher and the RPC endpoints with arbitrary names, values and bodies.

Whatever arrives, a call returns or raises ApiError, no bug surfaces as an internal error,
every stored record keeps all its class's fields with well-typed values, and an HTTP body
of any shape gets a 200 (a readable reply) or a 500 (an unreadable envelope).
"""

from __future__ import annotations

import asyncio
import json
import logging
import xmlrpc.client
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openxapi.api.context import CallContext
from openxapi.errors import ApiError
from openxapi.http.message import Request
from openxapi.server.rpc import RpcEndpoints
from openxapi.spec import types as T
from openxapi.spec.model import NULL_REF, Api, load
from openxapi.spec.values import DateTime, from_datetime
from tests.api.world import World, create_args, open_world

API = load()
WIRE = sorted(API.messages)
FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
RPC_FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SESSION = object()  # stands for a valid root session, filled in per example
# event.from / event.next may rightly wait for a change that never comes.
LONG_POLLS = {"event.from", "event.next"}
LONG_POLL_WAIT = 3.0
VM_FIELDS = [f.name for f in API.classes["VM"].fields]


def deep_list(n: int) -> Any:
    v: Any = "x"
    for _ in range(n):
        v = [v]
    return v


def well_typed(v: Any, t: T.Type, api: Api) -> bool:
    """Whether a stored value has exactly the shape its API type promises."""
    if isinstance(t, T.Prim):
        if t.name == "datetime":
            return isinstance(v, DateTime)
        if t.name == "int":
            return type(v) is int
        if t.name == "float":
            return type(v) is float
        if t.name == "bool":
            return type(v) is bool
        return isinstance(v, str)
    if isinstance(t, T.Ref):
        return isinstance(v, str)
    if isinstance(t, T.Enum):
        return isinstance(v, str) and v in api.enums.get(t.name, ())
    if isinstance(t, T.Set):
        return isinstance(v, list) and all(well_typed(x, t.elem, api) for x in v)
    if isinstance(t, T.Map):
        return isinstance(v, dict) and all(
            isinstance(k, str) and well_typed(x, t.value, api) for k, x in v.items()
        )
    return True


def check_record(world: World, cls: str, ref: str) -> None:
    rec = world.store.get(cls, ref)
    if rec is None:
        return
    fields = world.api.classes[cls].fields
    assert list(rec) == [f.name for f in fields], (cls, ref)
    for f in fields:
        assert well_typed(rec[f.name], f.type, world.api), (cls, ref, f.name, rec[f.name])


def check_store(world: World) -> None:
    for cls in world.store.classes():
        for ref in list(world.store.table(cls)):
            check_record(world, cls, ref)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def harness(data_dir: Path) -> Iterator[tuple[asyncio.AbstractEventLoop, World, _Errors]]:
    """A world on a private loop (hypothesis drives examples synchronously)."""
    loop = asyncio.new_event_loop()
    errors = _Errors()
    logger = logging.getLogger("openxapi")
    logger.addHandler(errors)
    world = loop.run_until_complete(open_world(data_dir, durable=False))
    try:
        yield loop, world, errors
    finally:
        logger.removeHandler(errors)
        loop.run_until_complete(world.close())
        loop.close()


def _known(world: World) -> list[str]:
    return [
        world.state.host_ref,
        world.state.pool_ref,
        world.root,
        NULL_REF,
        "",
        "OpaqueRef:",
        *list(world.store.table("VM"))[:2],
        *API.enums["vm_power_state"],
        "19700101T00:00:00Z",
        "2024-02-29T12:00:00+01:00",
        'field "name__label" = "x"',
        "true",
    ]


def _values(world: World) -> st.SearchStrategy[Any]:
    known = _known(world)
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(),
        st.text(max_size=12),
        st.binary(max_size=8),
        st.datetimes(timezones=st.just(UTC)).map(from_datetime),
        st.sampled_from(known),
        st.integers(-3, 2**40).map(str),
    )
    nested = st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from(VM_FIELDS) | st.text(max_size=6), inner, max_size=4)
        ),
        max_leaves=10,
    )
    vm_struct = st.dictionaries(st.sampled_from(VM_FIELDS), scalars, max_size=4).map(
        lambda extra: {**create_args(API, "VM"), **extra}
    )
    return st.one_of(nested, vm_struct, st.integers(1, 3000).map(deep_list))


def _typed(t: T.Type, known: list[str], world: World) -> st.SearchStrategy[Any]:
    """Mostly well-typed values for a parameter of type ``t`` (so calls reach behaviour)."""
    if isinstance(t, T.Prim):
        return {
            "string": st.sampled_from(known) | st.text(max_size=8),
            "int": st.integers(-(2**63), 2**63 - 1) | st.integers(0, 2**40).map(str),
            "float": st.floats(allow_nan=False) | st.integers(0, 100),
            "bool": st.booleans(),
            "datetime": st.datetimes(timezones=st.just(UTC)).map(from_datetime),
        }[t.name]
    if isinstance(t, T.Ref):
        if t.cls in world.store.classes():
            table = world.store.table(t.cls)
            live = st.builds(
                lambda i: list(table)[i % len(table)] if table else NULL_REF, st.integers(0, 50)
            )
            return st.one_of(live, live, live, st.sampled_from(known))
        return st.sampled_from(known)
    if isinstance(t, T.Enum):
        return st.sampled_from(API.enums.get(t.name) or [""])
    if isinstance(t, T.Set):
        return st.lists(_typed(t.elem, known, world), max_size=3)
    if isinstance(t, T.Map):
        return st.dictionaries(
            _typed(t.key, known, world).map(str), _typed(t.value, known, world), max_size=3
        )
    if isinstance(t, T.Record) and t.cls in API.classes:
        cls = API.classes[t.cls]
        return st.fixed_dictionaries(
            {},
            optional={f.name: _typed(f.type, known, world) for f in cls.fields if f.in_constructor},
        ).map(lambda extra: {**create_args(API, cls.name), **extra})
    return st.none()


def _calls(world: World, values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """(name, params) pairs: a real message with the right number of mostly typed params."""
    known = _known(world)

    @st.composite
    def call(draw: st.DrawFn) -> tuple[str, bool, list[Any]]:
        wire = draw(st.sampled_from(WIRE))
        msg = API.messages[wire]
        n = draw(st.integers(msg.required_count, len(msg.params)))
        params = [
            draw(_typed(p.type, known, world) if draw(st.integers(0, 9)) else values)
            for p in msg.params[:n]
        ]
        forms = [wire, wire.replace(".", "_", 1)] + (["Async." + wire] if msg.is_async else [])
        name = draw(st.sampled_from(forms))
        return name, msg.session, params

    return call()


def _names() -> st.SearchStrategy[str]:
    real = st.sampled_from(WIRE)
    return st.one_of(
        real,
        real,
        real.map(lambda w: w.replace(".", "_", 1)),
        real.map(lambda w: "Async." + w),
        st.sampled_from(
            ["system.listMethods", "system.isAlive:x", "system.methodHelp", "", ".", "Async."]
        ),
        st.text(max_size=20),
    )


async def _fresh_root(world: World) -> str:
    if world.store.get("session", world.root) is None:
        world.root = await world.login_root()
    return world.root


async def _settle(world: World) -> None:
    running = list(world.dispatcher.tasks.running.values())
    if running:
        await asyncio.wait(running, timeout=5)


def test_dispatcher_fuzz(harness: tuple[asyncio.AbstractEventLoop, World, _Errors]) -> None:
    loop, world, errors = harness
    touched: set[tuple[str, str]] = set()
    unsubscribe = world.store.subscribe(lambda c: touched.add((c.cls, c.ref)))
    values = _values(world)
    arbitrary = st.tuples(_names(), st.booleans(), st.lists(values, max_size=5))

    @FUZZ
    @given(
        call=st.one_of(_calls(world, values), _calls(world, values), arbitrary),
        transport=st.sampled_from(["internal", "http", "unix"]),
        codec=st.sampled_from(["xml", "json"]),
    )
    def run(call: tuple[str, bool, list[Any]], transport: str, codec: str) -> None:
        name, with_session, params = call

        async def go() -> None:
            args = list(params)
            if with_session:
                args.insert(0, await _fresh_root(world))
            call = world.dispatcher.call(name, args, CallContext(transport, codec=codec))
            try:
                await asyncio.wait_for(call, LONG_POLL_WAIT)
            except ApiError as e:
                assert all(isinstance(p, str) for p in e.description())
            except TimeoutError:  # only a long poll may still be waiting
                assert name.replace("_", ".", 1) in LONG_POLLS, name
            await _settle(world)

        touched.clear()
        loop.run_until_complete(go())
        for cls, ref in touched:
            check_record(world, cls, ref)
        assert not errors.records, [r.getMessage() for r in errors.records]

    try:
        run()
    finally:
        unsubscribe()
    check_store(world)


# ---- through the RPC endpoints --------------------------------------------------------------

XML_SCALARS = [
    "<value>s</value>",
    "<value><string>x</string></value>",
    "<value><i4>7</i4></value>",
    "<value><int>-1</int></value>",
    f"<value><i8>{2**70}</i8></value>",
    "<value><i8>12x</i8></value>",
    "<value><double>nan</double></value>",
    "<value><double>1e400</double></value>",
    "<value><boolean>1</boolean></value>",
    "<value><boolean>maybe</boolean></value>",
    "<value><dateTime.iso8601>20240101T00:00:00Z</dateTime.iso8601></value>",
    "<value><dateTime.iso8601>garbage</dateTime.iso8601></value>",
    "<value><base64>aGk=</base64></value>",
    "<value><base64>!!</base64></value>",
    "<value><nil/></value>",
    "<value><array><data></data></array></value>",
    "<value><struct></struct></value>",
    "<value><struct><member><name>name_label</name><value>x</value></member></struct></value>",
]


def _xml_param(depth: int, leaf: str) -> str:
    return "<value><array><data>" * depth + leaf + "</data></array></value>" * depth


def _xml_bodies(world: World) -> st.SearchStrategy[bytes]:
    session = f"<value>{world.root}</value>"
    handmade = st.builds(
        lambda name, leaves, depth, with_session: (
            "<?xml version='1.0'?><methodCall><methodName>"
            + name
            + "</methodName><params>"
            + (f"<param>{session}</param>" if with_session else "")
            + "".join(f"<param>{_xml_param(depth, leaf)}</param>" for leaf in leaves)
            + "</params></methodCall>"
        ).encode(),
        st.sampled_from(WIRE) | st.text(alphabet="abcXYZ._<&", max_size=10),
        st.lists(st.sampled_from(XML_SCALARS), max_size=4),
        st.sampled_from([0, 0, 1, 3, 70]),
        st.booleans(),
    )
    dumped = st.builds(
        lambda name, params: xmlrpc.client.dumps(tuple(params), name, allow_none=True).encode(),
        st.sampled_from(WIRE),
        st.lists(
            st.recursive(
                st.none()
                | st.booleans()
                | st.integers(-(2**31), 2**31 - 1)
                | st.floats()
                | st.text(max_size=8)
                | st.sampled_from([world.root, NULL_REF]),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3)
                ),
                max_leaves=8,
            ),
            max_size=4,
        ),
    )
    truncated = st.builds(lambda body, cut: body[:cut], handmade | dumped, st.integers(0, 400))
    return st.one_of(handmade, dumped, truncated, st.binary(max_size=200))


def _json_bodies(world: World) -> st.SearchStrategy[bytes]:
    json_values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text(max_size=8)
        | st.sampled_from([world.root, NULL_REF]),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=8,
    )
    envelope = st.fixed_dictionaries(
        {"method": st.sampled_from(WIRE) | st.text(max_size=10), "params": json_values},
        optional={
            "jsonrpc": st.sampled_from(["2.0", "1.0", 2]),
            "id": st.integers() | st.text(max_size=4) | st.none(),
        },
    )
    encoded = envelope.map(lambda d: json.dumps(d).encode())
    deep = st.integers(1, 200).map(
        lambda n: (
            b'{"jsonrpc":"2.0","id":1,"method":"VM.get_all","params":' + b"[" * n + b"]" * n + b"}"
        )
    )
    return st.one_of(encoded, deep, st.binary(max_size=200))


def _check_reply(path: str, status: int, body: bytes) -> None:
    assert status in (200, 500)
    if status != 200:
        return
    if path == "/jsonrpc":
        doc = orjson.loads(body)
        assert "result" in doc or "error" in doc
    else:
        (reply,), _ = xmlrpc.client.loads(body)
        assert reply["Status"] in ("Success", "Failure")


def test_rpc_endpoints_fuzz(harness: tuple[asyncio.AbstractEventLoop, World, _Errors]) -> None:
    loop, world, errors = harness
    endpoints = RpcEndpoints(world.dispatcher)

    @RPC_FUZZ
    @given(
        target=st.sampled_from([("/", "x"), ("/RPC2", "x"), ("/json", "x"), ("/jsonrpc", "j")]),
        data=st.data(),
    )
    def run(target: tuple[str, str], data: st.DataObject) -> None:
        path, kind = target
        body = data.draw(_xml_bodies(world) if kind == "x" else _json_bodies(world))

        async def go() -> tuple[int, bytes]:
            await _fresh_root(world)
            req = Request("POST", path, body=body, peer="127.0.0.1")
            handler = endpoints.jsonrpc if kind == "j" else endpoints.xmlrpc
            resp = await handler(req)
            await _settle(world)
            return resp.status, resp.body

        status, reply = loop.run_until_complete(go())
        _check_reply(path, status, reply)
        assert not errors.records, [r.getMessage() for r in errors.records]

    run()
    check_store(world)


def test_store_starts_consistent(
    harness: tuple[asyncio.AbstractEventLoop, World, _Errors],
) -> None:
    _, world, _ = harness
    check_store(world)
