"""The event hub (core-api.md §5): tokens, subscriptions, coalescing, waiting, durability,
restarts, and the legacy event.next queue."""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from pathlib import Path
from typing import Any

import pytest

from openxapi.api import events as E
from openxapi.api.context import CallContext
from openxapi.api.events import (
    Subscription,
    format_token,
    parse_subscriptions,
    parse_token,
    timeout_seconds,
)
from openxapi.errors import ApiError
from openxapi.wire import Preencoded
from tests.api.world import World, create_args, decode_json, decode_xml_value, open_world


def json_ctx() -> CallContext:
    return CallContext(codec="json")


async def frm(
    world: World, classes: list[str], token: str, timeout: float = 0.0, session: str = ""
) -> dict[str, Any]:
    value = await world.call(
        "event.from", session or world.root, classes, token, timeout, ctx=json_ctx()
    )
    assert isinstance(value, Preencoded)
    out: dict[str, Any] = decode_json(value)
    return out


async def new_vm(world: World, label: str = "vm") -> str:
    ref = await world.call("VM.create", world.root, create_args(world.api, "VM", name_label=label))
    assert isinstance(ref, str)
    return ref


async def now_token(world: World) -> str:
    await world.store.sync()
    return format_token(world.store.committed, world.store.committed)


def ops(reply: dict[str, Any], cls: str | None = None) -> list[tuple[str, str, str]]:
    return [
        (e["class"], e["operation"], e["ref"])
        for e in reply["events"]
        if cls is None or e["class"] == cls
    ]


# ---------------------------------------------------------------------------- parsing


def test_tokens_are_two_zero_padded_generations() -> None:
    assert format_token(5, 7) == "00000000000000000005,00000000000000000007"
    assert parse_token(format_token(5, 7)) == (5, 7)
    assert parse_token("") == (0, 0)
    assert parse_token("12,0") == (12, 0)
    assert parse_token("-3,4") == (0, 4)


@pytest.mark.parametrize("bad", ["abc", "1", "1,2,3", "1,x", " 1,2", ",", f"{2**64},1", "1.5,2"])
def test_malformed_tokens_are_refused(bad: str) -> None:
    with pytest.raises(ApiError) as e:
        parse_token(bad)
    assert e.value.description() == ["EVENT_FROM_TOKEN_PARSE_FAILURE", bad]


def test_subscriptions() -> None:
    sub = Subscription.parse(["VM", "Host/OpaqueRef:h", "pool"])
    assert sub.matches("vm", "OpaqueRef:any")
    assert sub.matches("host", "OpaqueRef:h")
    assert not sub.matches("host", "OpaqueRef:other")
    assert not sub.matches("sr", "OpaqueRef:x")
    assert sub.covers("host") and not sub.covers("sr")
    assert Subscription.parse(["*"]).matches("anything", "x")
    for bad in ("", "/OpaqueRef:x"):
        with pytest.raises(ApiError) as e:
            parse_subscriptions([bad])
        assert e.value.description() == ["EVENT_SUBSCRIPTION_PARSE_FAILURE", bad]


def test_timeouts_that_are_no_time_span_mean_a_day() -> None:
    for t in (-1.0, math.nan, math.inf, 1e300):
        assert timeout_seconds(t) == 86_400.0
    assert timeout_seconds(2.5) == 2.5
    assert timeout_seconds(0.0) == 0.0


def test_trackid_hides_the_session() -> None:
    assert E.trackid("OpaqueRef:s") == "trackid=" + hashlib.md5(b"OpaqueRef:s").hexdigest()


# ---------------------------------------------------------------------------- event.from


async def test_empty_token_lists_every_object_as_an_add(world: World) -> None:
    await new_vm(world)
    reply = await frm(world, ["VM", "host"], "")
    vms = set(world.store.table("VM"))
    hosts = set(world.store.table("host"))
    assert {e["ref"] for e in reply["events"] if e["class"] == "vm"} == vms
    assert {e["ref"] for e in reply["events"] if e["class"] == "host"} == hosts
    assert {e["operation"] for e in reply["events"]} == {"add"}
    event = reply["events"][0]
    assert list(event) == ["id", "timestamp", "class", "operation", "ref", "snapshot"]
    assert event["timestamp"] == "0.0"
    assert int(event["id"]) > 0
    cls = "VM" if event["class"] == "vm" else "host"
    assert event["snapshot"] == await world.record(cls, event["ref"])
    assert list(reply) == ["events", "valid_ref_counts", "token"]


async def test_everything_leaves_out_classes_without_events(world: World) -> None:
    reply = await frm(world, ["*"], "")
    classes = {e["class"] for e in reply["events"]}
    assert {"vm", "host", "pool", "role"} <= classes
    assert not classes & {"session", "user", "secret"}


async def test_valid_ref_counts_count_every_table(world: World) -> None:
    reply = await frm(world, ["vm"], "")
    counts = reply["valid_ref_counts"]
    expected = {c.lower(): len(world.store.table(c)) for c in world.store.classes()}
    del expected["message"]
    assert counts == expected
    assert counts["session"] >= 1 and "task" in counts
    xml = await world.call("event.from", world.root, ["vm"], "", 0.0)
    assert isinstance(xml, Preencoded)
    assert b"<member><name>task</name><value><i4>" in xml.xml
    decoded = decode_xml_value(xml.xml)
    assert decoded["valid_ref_counts"]["vm"] == len(world.store.table("VM"))


async def test_changes_since_a_token_are_coalesced_per_object(world: World) -> None:
    kept = await new_vm(world, "kept")
    doomed = await new_vm(world, "doomed")
    token = await now_token(world)
    added = await new_vm(world, "added")
    await world.call("VM.set_name_label", world.root, added, "added-renamed")
    await world.call("VM.set_name_label", world.root, kept, "kept-renamed")
    await world.call("VM.set_name_description", world.root, kept, "twice")
    fleeting = await new_vm(world, "fleeting")
    await world.call("VM.destroy", world.root, fleeting)
    await world.call("VM.destroy", world.root, doomed)
    reply = await frm(world, ["vm"], token)
    assert ops(reply) == [("vm", "add", added), ("vm", "mod", kept), ("vm", "del", doomed)]
    by_ref = {e["ref"]: e for e in reply["events"]}
    assert by_ref[added]["snapshot"]["name_label"] == "added-renamed"
    assert by_ref[kept]["snapshot"]["name_description"] == "twice"
    assert "snapshot" not in by_ref[doomed]
    assert reply["token"] > token


async def test_adds_mods_and_dels_each_come_newest_first(world: World) -> None:
    old = [await new_vm(world, f"old{i}") for i in range(2)]
    token = await now_token(world)
    new = [await new_vm(world, f"new{i}") for i in range(2)]
    for ref in old:
        await world.call("VM.set_name_label", world.root, ref, "x")
    reply = await frm(world, ["vm"], token)
    assert ops(reply) == [
        ("vm", "add", new[1]),
        ("vm", "add", new[0]),
        ("vm", "mod", old[1]),
        ("vm", "mod", old[0]),
    ]


async def test_object_subscriptions_and_case(world: World) -> None:
    a, b = await new_vm(world, "a"), await new_vm(world, "b")
    token = await now_token(world)
    await world.call("VM.set_name_label", world.root, a, "a2")
    await world.call("VM.set_name_label", world.root, b, "b2")
    assert ops(await frm(world, [f"Vm/{b}"], token)) == [("vm", "mod", b)]
    assert len(ops(await frm(world, ["VM"], token))) == 2
    assert ops(await frm(world, ["sr"], token)) == []


async def test_a_waiting_call_returns_when_a_matching_change_commits(world: World) -> None:
    vm = await new_vm(world)
    token = await now_token(world)
    pool = next(iter(world.store.table("pool")))
    waiting = asyncio.create_task(frm(world, ["vm"], token, 10.0))
    await asyncio.sleep(0.02)
    await world.call("pool.set_name_label", world.root, pool, "unrelated")
    await asyncio.sleep(0.02)
    assert not waiting.done()
    assert world.dispatcher.events.waiting == 1
    await world.call("VM.set_name_label", world.root, vm, "seen")
    reply = await asyncio.wait_for(waiting, 5)
    assert ops(reply) == [("vm", "mod", vm)]
    assert world.dispatcher.events.waiting == 0


async def test_a_timeout_returns_no_events_and_a_usable_token(world: World) -> None:
    token = await now_token(world)
    t0 = time.monotonic()
    reply = await frm(world, ["vm"], token, 0.2)
    assert 0.15 <= time.monotonic() - t0 < 3
    assert reply["events"] == []
    assert reply["token"] >= token
    vm = await new_vm(world)
    assert ops(await frm(world, ["vm"], reply["token"])) == [("vm", "add", vm)]


async def test_a_created_then_deleted_object_does_not_wake_to_an_empty_reply(
    world: World,
) -> None:
    token = await now_token(world)
    waiting = asyncio.create_task(frm(world, ["vm"], token, 0.5))
    await asyncio.sleep(0.02)
    vm = await new_vm(world)
    await world.call("VM.destroy", world.root, vm)
    reply = await asyncio.wait_for(waiting, 5)
    # Either it saw the add (woken between the two writes) or nothing until the timeout.
    assert ops(reply) in ([], [("vm", "add", vm)])


async def test_a_destroyed_session_ends_its_waiting_calls(world: World) -> None:
    session = await world.login_root()
    token = await now_token(world)
    waiting = asyncio.create_task(frm(world, ["vm"], token, 30.0, session=session))
    await asyncio.sleep(0.02)
    await world.call("session.logout", session)
    with pytest.raises(ApiError) as e:
        await asyncio.wait_for(waiting, 5)
    assert e.value.description() == ["SESSION_INVALID", session]
    assert world.dispatcher.events.waiting == 0


async def test_a_client_that_leaves_frees_its_waiter(world: World) -> None:
    callbacks: list[Any] = []

    def peer_gone(callback: Any) -> Any:
        callbacks.append(callback)
        return lambda: callbacks.remove(callback) if callback in callbacks else None

    token = await now_token(world)
    ctx = CallContext(codec="json", peer_gone=peer_gone)
    waiting = asyncio.create_task(
        world.call("event.from", world.root, ["vm"], token, 30.0, ctx=ctx)
    )
    await asyncio.sleep(0.02)
    assert world.dispatcher.events.waiting == 1 and len(callbacks) == 1
    callbacks[0]()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 5)
    assert world.dispatcher.events.waiting == 0 and callbacks == []


async def test_identical_waiters_share_one_reply(world: World) -> None:
    token = await now_token(world)
    waiting = [
        asyncio.create_task(world.call("event.from", world.root, ["vm"], token, 10.0))
        for _ in range(5)
    ]
    await asyncio.sleep(0.02)
    await new_vm(world)
    replies = await asyncio.wait_for(asyncio.gather(*waiting), 5)
    assert all(r is replies[0] for r in replies)


async def test_release_all_answers_waiting_calls(world: World) -> None:
    token = await now_token(world)
    waiting = asyncio.create_task(frm(world, ["vm"], token, 30.0))
    await asyncio.sleep(0.02)
    world.dispatcher.events.release_all()
    reply = await asyncio.wait_for(waiting, 5)
    assert reply["events"] == []


async def test_inject_touches_the_object_and_returns_the_token_before(world: World) -> None:
    pool = next(iter(world.store.table("pool")))
    token = await world.call("event.inject", world.root, "pool", pool)
    objects, messages = parse_token(token)
    assert messages == 0 and objects == world.store.version(pool) - 1
    assert ops(await frm(world, ["pool"], token)) == [("pool", "mod", pool)]
    assert await world.fail("event.inject", world.root, "VM", pool) == [
        "HANDLE_INVALID",
        "VM",
        pool,
    ]
    assert await world.fail("event.inject", world.root, "pool", "OpaqueRef:nope") == [
        "HANDLE_INVALID",
        "pool",
        "OpaqueRef:nope",
    ]


async def test_messages_follow_the_second_half_of_the_token(world: World) -> None:
    pool_uuid = next(iter(world.store.table("pool").values()))["uuid"]
    token = await now_token(world)
    msg = await world.call("message.create", world.root, "HELLO", 3, "Pool", pool_uuid, "body")
    reply = await frm(world, ["message"], token)
    assert ops(reply) == [("message", "add", msg)]
    assert reply["events"][0]["snapshot"]["name"] == "HELLO"
    assert ops(await frm(world, ["vm"], token)) == []
    objects, _ = parse_token(token)
    # The first half current, the second at the beginning: every message again.
    again = await frm(world, ["message"], format_token(objects + 10**6, 0))
    assert ops(again) == [("message", "add", msg)]
    await world.call("message.destroy", world.root, msg)
    assert ops(await frm(world, ["message"], reply["token"])) == [("message", "del", msg)]
    assert ops(await frm(world, ["message"], token)) == []  # made and gone since the token


async def test_async_tasks_are_seen_through_events(world: World) -> None:
    token = await now_token(world)
    task = await world.call("Async.VM.create", world.root, create_args(world.api, "VM"))
    await world.wait_task(task)
    reply = await frm(world, ["task"], token)
    (event,) = [e for e in reply["events"] if e["ref"] == task]
    assert event["operation"] == "add"
    assert event["snapshot"]["status"] == "success"
    assert event["snapshot"]["result"].startswith("<value>OpaqueRef:")


# ---------------------------------------------------------------------------- durability


async def test_a_write_not_yet_durable_is_held_back(data_dir: Path) -> None:
    w = await open_world(data_dir, durable=True)
    try:
        token = await now_token(w)
        vm = await new_vm(w)
        w.store.update("VM", vm, {"name_label": "not yet on disk"})
        reply = await frm(w, ["vm"], token)
        assert reply["events"] == []
        assert reply["token"] <= format_token(w.store.version(vm), w.store.version(vm))
        await w.store.sync()
        again = await frm(w, ["vm"], reply["token"])
        assert ops(again) == [("vm", "add", vm)]
        assert again["events"][0]["snapshot"]["name_label"] == "not yet on disk"
    finally:
        await w.close()


async def test_a_waiter_sees_a_change_only_after_its_commit(data_dir: Path) -> None:
    w = await open_world(data_dir, durable=True)
    try:
        vm = await new_vm(w)
        token = await now_token(w)
        waiting = asyncio.create_task(frm(w, ["vm"], token, 10.0))
        await asyncio.sleep(0.02)
        w.store.update("VM", vm, {"name_label": "durable"})
        await asyncio.sleep(0)
        assert not waiting.done()
        reply = await asyncio.wait_for(waiting, 5)
        assert w.store.committed >= w.store.version(vm)
        assert ops(reply) == [("vm", "mod", vm)]
    finally:
        await w.close()


async def test_a_token_from_before_a_restart_still_works(data_dir: Path) -> None:
    w = await open_world(data_dir, durable=True)
    try:
        kept = await new_vm(w, "kept")
        doomed = await new_vm(w, "doomed")
        token = await now_token(w)
        added = await new_vm(w, "added")
        await w.call("VM.set_name_label", w.root, kept, "renamed")
        await w.call("VM.destroy", w.root, doomed)
        pool_uuid = next(iter(w.store.table("pool").values()))["uuid"]
        msg = await w.call("message.create", w.root, "M", 5, "Pool", pool_uuid, "")
        w2 = await w.restart()
    finally:
        await w.close()
    try:
        reply = await frm(w2, ["vm", "message"], token)
        got = set(ops(reply))
        assert ("vm", "mod", kept) in got
        assert ("vm", "del", doomed) in got
        assert ("message", "add", msg) in got
        assert any(ref == added and op in ("add", "mod") for _, op, ref in got)
        assert reply["token"] > token
        assert ops(await frm(w2, ["vm", "message"], reply["token"])) == []
    finally:
        await w2.close()


async def test_a_token_older_than_the_kept_deletions_is_refused(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = await open_world(data_dir, durable=True)
    try:
        token = await now_token(w)
        await new_vm(w)  # so the restarted server's change log starts after the token
        w2 = await w.restart()
    finally:
        await w.close()
    try:
        monkeypatch.setattr(type(w2.store), "tombstone_floor", property(lambda s: 10**15))
        with pytest.raises(ApiError) as e:
            await frm(w2, ["vm"], token)
        assert e.value.description() == ["EVENTS_LOST"]
    finally:
        await w2.close()


# ---------------------------------------------------------------------------- legacy API


async def test_event_next_needs_a_registration(world: World) -> None:
    assert await world.fail("event.next", world.root) == [
        "SESSION_NOT_REGISTERED",
        E.trackid(world.root),
    ]


async def test_event_next_returns_each_change_with_its_snapshot(world: World) -> None:
    await world.call("event.register", world.root, ["VM"])
    before = await world.call("event.get_current_id", world.root)
    vm = await new_vm(world)
    await world.call("VM.set_name_label", world.root, vm, "one")
    await world.call("VM.set_name_label", world.root, vm, "two")
    await asyncio.sleep(0)
    events = await asyncio.wait_for(world.call("event.next", world.root, ctx=json_ctx()), 5)
    events = [decode_json(e) for e in events]
    assert [(e["class"], e["operation"]) for e in events] == [("vm", "add")] + [("vm", "mod")] * (
        len(events) - 1
    )
    assert len(events) >= 3
    assert events[-1]["snapshot"]["name_label"] == "two"
    assert events[0]["timestamp"].endswith(".") and int(events[0]["timestamp"][:-1]) > 0
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and ids[0] > before
    assert await world.call("event.get_current_id", world.root) == ids[-1]


async def test_event_next_blocks_until_something_relevant(world: World) -> None:
    await world.call("event.register", world.root, ["vm"])
    waiting = asyncio.create_task(world.call("event.next", world.root))
    await asyncio.sleep(0.02)
    pool = next(iter(world.store.table("pool")))
    await world.call("pool.set_name_label", world.root, pool, "not watched")
    await asyncio.sleep(0.02)
    assert not waiting.done()
    vm = await new_vm(world)
    events = await asyncio.wait_for(waiting, 5)
    assert {e["ref"] for e in events} == {vm}
    assert events[0]["operation"] == "add"


async def test_unregister_stops_delivery(world: World) -> None:
    await world.call("event.register", world.root, ["vm", "pool"])
    await world.call("event.unregister", world.root, ["VM"])
    await new_vm(world)
    pool = next(iter(world.store.table("pool")))
    await world.call("pool.set_name_label", world.root, pool, "watched")
    events = await asyncio.wait_for(world.call("event.next", world.root), 5)
    assert {e["class"] for e in events} == {"pool"}


async def test_an_overflowing_queue_reports_events_lost(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(E, "LEGACY_QUEUE_LIMIT", 3)
    await world.call("event.register", world.root, ["vm"])
    for i in range(5):
        await new_vm(world, f"v{i}")
    assert await world.fail("event.next", world.root) == ["EVENTS_LOST"]
    vm = await new_vm(world)
    events = await asyncio.wait_for(world.call("event.next", world.root), 5)
    assert {e["ref"] for e in events} == {vm}


async def test_logout_ends_a_waiting_event_next(world: World) -> None:
    session = await world.login_root()
    await world.call("event.register", session, ["vm"])
    waiting = asyncio.create_task(world.call("event.next", session))
    await asyncio.sleep(0.02)
    await world.call("session.logout", session)
    with pytest.raises(ApiError) as e:
        await asyncio.wait_for(waiting, 5)
    assert e.value.description() == ["SESSION_INVALID", session]


async def test_a_half_the_subscription_ignores_keeps_its_value(world: World) -> None:
    token = await now_token(world)
    objects, messages = parse_token(token)
    await new_vm(world)
    vm_only = await frm(world, ["vm"], token)
    assert parse_token(vm_only["token"])[1] == messages
    msg_only = await frm(world, ["message"], token)
    assert parse_token(msg_only["token"])[0] == objects
