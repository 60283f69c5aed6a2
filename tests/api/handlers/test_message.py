"""message: alerts about objects, listed newest first, queried by time, trimmed by GC."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from openxapi.api import messages as M
from openxapi.api.context import CallContext
from openxapi.spec.values import from_timestamp
from tests.api.world import World, decode_json, open_world


def pool_uuid(world: World) -> str:
    return str(next(iter(world.store.table("pool").values()))["uuid"])


def host_uuid(world: World) -> str:
    return str(next(iter(world.store.table("host").values()))["uuid"])


async def create(world: World, name: str, cls: str = "Pool", uuid: str = "", **kw: Any) -> str:
    ref = await world.call(
        "message.create",
        world.root,
        name,
        kw.get("priority", 3),
        cls,
        uuid or pool_uuid(world),
        kw.get("body", "body"),
    )
    assert isinstance(ref, str)
    return ref


async def records(world: World, name: str, *params: Any) -> dict[str, Any]:
    value = await world.call(name, world.root, *params, ctx=CallContext(codec="json"))
    out: dict[str, Any] = decode_json(value)
    return out


async def test_create_and_read_back(world: World) -> None:
    ref = await create(world, "VM_STARTED", priority=5, body="started <ok>")
    rec = await records(world, "message.get_record", ref)
    assert list(rec) == ["uuid", "name", "priority", "cls", "obj_uuid", "timestamp", "body"]
    assert rec["name"] == "VM_STARTED" and rec["priority"] == 5 and rec["cls"] == "Pool"
    assert rec["obj_uuid"] == pool_uuid(world) and rec["body"] == "started <ok>"
    assert await world.call("message.get_by_uuid", world.root, rec["uuid"]) == ref
    assert await world.call("message.get_all", world.root) == [ref]
    assert list(await records(world, "message.get_all_records")) == [ref]


async def test_create_checks_the_object_and_the_body(world: World) -> None:
    assert await world.fail("message.create", world.root, "X", 1, "VM", "no-such-uuid", "") == [
        "UUID_INVALID",
        "VM",
        "no-such-uuid",
    ]
    assert await world.fail("message.create", world.root, "X", 1, "Host", pool_uuid(world), "") == [
        "UUID_INVALID",
        "Host",
        pool_uuid(world),
    ]
    assert await world.fail(
        "message.create", world.root, "X", 1, "Pool", pool_uuid(world), "bad \udc80"
    ) == ["INVALID_VALUE", "UTF8 expected"]
    await create(world, "HOST_OK", "Host", host_uuid(world))


async def test_unknown_messages(world: World) -> None:
    assert await world.fail("message.get_record", world.root, "OpaqueRef:x") == [
        "HANDLE_INVALID",
        "message",
        "OpaqueRef:x",
    ]
    assert await world.fail("message.destroy", world.root, "OpaqueRef:x") == [
        "HANDLE_INVALID",
        "message",
        "OpaqueRef:x",
    ]
    assert await world.fail("message.get_by_uuid", world.root, "u") == [
        "UUID_INVALID",
        "message",
        "u",
    ]
    assert await world.fail("message.get", world.root, "VM", "nope", "19700101T00:00:00Z") == [
        "UUID_INVALID"
    ]


async def test_newest_first_and_since(world: World) -> None:
    first = await create(world, "A")
    msgs = M.messages_of(world.state)
    split = msgs.stamps[first]
    await asyncio.sleep(0.01)
    second = await create(world, "B")
    third = await create(world, "C", "Host", host_uuid(world))
    assert await world.call("message.get_all", world.root) == [third, second, first]
    since = await records(world, "message.get_since", "19700101T00:00:00Z")
    assert list(since) == [third, second, first]
    # Sub-second precision: "since" a moment between the first and the second message.
    msgs.stamps[first] = split - 5
    msgs.stamps[second] = split + 5
    msgs.stamps[third] = split + 6
    later = await records(world, "message.get_since", from_timestamp(split))
    assert list(later) == [third, second]
    about_pool = await records(world, "message.get", "Pool", pool_uuid(world), "19700101T00:00:00Z")
    assert list(about_pool) == [second, first]


async def test_where_queries(world: World) -> None:
    a = await create(world, "ALARM", priority=1)
    await create(world, "VM_STARTED", priority=5)
    got = await records(world, "message.get_all_records_where", 'field "priority"="1"')
    assert list(got) == [a]
    assert await world.call("message.get_all_where", world.root, 'field "name"="ALARM"') == [a]
    assert (await world.fail("message.get_all_records_where", world.root, "field"))[0] == (
        "INVALID_VALUE"
    )


async def test_destroy_many_and_destroy_all(world: World) -> None:
    refs = [await create(world, f"M{i}", priority=i % 2 + 1) for i in range(6)]
    await world.call("message.destroy_many", world.root, refs[:2])
    assert set(await world.call("message.get_all", world.root)) == set(refs[2:])
    await world.call("message.destroy_all", world.root, {"priority": "1"})
    left = await world.call("message.get_all", world.root)
    assert left and all(world.store.table("message")[r]["priority"] == 2 for r in left)
    await world.call("message.destroy_all", world.root, {"before": "20991231T00:00:00Z"})
    assert await world.call("message.get_all", world.root) == []
    assert (await world.fail("message.destroy_all", world.root, {"after": "soon"}))[0] == (
        "INVALID_VALUE"
    )


async def test_only_pool_operators_create_and_destroy(world: World) -> None:
    await world.add_user("reader", ["read-only"])
    reader = await world.login_user("reader")
    denied = await world.fail("message.create", reader, "X", 1, "Pool", pool_uuid(world), "")
    assert denied[0] == "RBAC_PERMISSION_DENIED"
    ref = await create(world, "X")
    assert (await world.fail("message.destroy", reader, ref))[0] == "RBAC_PERMISSION_DENIED"
    assert await world.call("message.get_all", reader) == [ref]


async def test_gc_keeps_the_newest(world: World) -> None:
    refs = [await create(world, f"M{i}") for i in range(5)]
    assert M.collect_garbage(world.state, limit=3) == 2
    assert set(world.store.table("message")) == set(refs[2:])


async def test_messages_survive_a_restart(data_dir: Path) -> None:
    w = await open_world(data_dir, durable=True)
    try:
        ref = await create(w, "KEPT")
        w2 = await w.restart()
    finally:
        await w.close()
    try:
        assert await w2.call("message.get_all", w2.root) == [ref]
        since = await records(w2, "message.get_since", "19700101T00:00:00Z")
        assert since[ref]["name"] == "KEPT"
    finally:
        await w2.close()
