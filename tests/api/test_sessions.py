"""Sessions: logout, idle expiry and the per-group caps (core-api.md §3.1)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from openxapi.spec.values import from_timestamp
from tests.api.world import World, open_world


async def test_logout_invalidates(world: World) -> None:
    s = await world.login_root()
    assert await world.call("session.logout", s) == ""
    assert await world.fail("VM.get_all", s) == ["SESSION_INVALID", s]
    assert await world.fail("session.logout", s) == ["SESSION_INVALID", s]
    assert world.store.get("session", s) is None


async def test_session_record_of_root(world: World) -> None:
    rec = world.store.get("session", world.root)
    assert rec is not None
    assert rec["is_local_superuser"] is True
    assert rec["this_host"] == world.state.host_ref
    assert rec["rbac_permissions"] == []
    assert rec["validation_time"] == rec["last_active"]


async def test_session_record_of_a_user(world: World) -> None:
    await world.add_user("op", ["vm-operator"])
    s = await world.login_user("op")
    rec = world.store.get("session", s)
    assert rec is not None
    assert rec["is_local_superuser"] is False
    assert rec["auth_user_sid"] == "local:op" and rec["auth_user_name"] == "op"
    assert "VM.start" in rec["rbac_permissions"]
    assert "VM.destroy" not in rec["rbac_permissions"]
    assert await world.call("session.get_all_subject_identifiers", world.root) == ["local:op"]


async def test_sessions_survive_a_restart(data_dir: Path) -> None:
    w = await open_world(data_dir, durable=True)
    try:
        s = w.root
        w2 = await w.restart()
    finally:
        await w.close()
    try:
        assert await w2.call("VM.get_all", s) == await w2.call("VM.get_all", w2.root)
    finally:
        await w2.close()


def _backdate(world: World, ref: str, seconds: float) -> None:
    world.store.update("session", ref, {"last_active": from_timestamp(time.time() - seconds)})


async def test_idle_sessions_expire(data_dir: Path) -> None:
    w = await open_world(data_dir, session_idle_timeout=0.2)
    try:
        idle, fresh = await w.login_root(), await w.login_root()
        _backdate(w, idle, 60)
        _backdate(w, w.root, 60)
        await asyncio.sleep(0.25)
        w.store.update("session", fresh, {"last_active": from_timestamp(time.time() + 60)})
        assert w.sessions.expire_idle() == 2
        assert await w.fail("VM.get_all", idle) == ["SESSION_INVALID", idle]
        assert await w.call("VM.get_all", fresh)
    finally:
        await w.close()


async def test_recently_used_session_is_not_expired_by_a_stale_record(world: World) -> None:
    s = await world.login_root()
    _backdate(world, s, 10 * 86400)
    assert world.sessions.expire_idle() == 0
    assert await world.call("VM.get_all", s)


async def test_anonymous_cap_destroys_the_oldest_first(data_dir: Path) -> None:
    w = await open_world(data_dir, max_anonymous_sessions=3)
    try:
        sessions = [w.root] + [await w.login_root() for _ in range(4)]
        alive = [s for s in sessions if w.store.get("session", s) is not None]
        assert alive == sessions[-3:]
        for s in sessions[:2]:
            assert await w.fail("VM.get_all", s) == ["SESSION_INVALID", s]
    finally:
        await w.close()


async def test_cap_prefers_the_least_recently_active(data_dir: Path) -> None:
    w = await open_world(data_dir, max_anonymous_sessions=2)
    try:
        a = await w.login_root()
        _backdate(w, a, 3600)
        _backdate(w, w.root, 60)
        await w.login_root()
        assert w.store.get("session", a) is None
        assert w.store.get("session", w.root) is not None
    finally:
        await w.close()


async def test_originator_groups_are_capped_separately(data_dir: Path) -> None:
    w = await open_world(data_dir, max_sessions_per_group=2, max_anonymous_sessions=100)
    try:
        xo = [await w.login_root("xo") for _ in range(3)]
        other = [await w.login_root("other") for _ in range(2)]
        assert w.store.get("session", xo[0]) is None
        for s in [*xo[1:], *other, w.root]:
            assert w.store.get("session", s) is not None
    finally:
        await w.close()


async def test_user_groups_are_capped_per_user(data_dir: Path) -> None:
    w = await open_world(data_dir, max_sessions_per_group=1)
    try:
        await w.add_user("ann", ["read-only"])
        await w.add_user("bob", ["read-only"])
        a1 = await w.login_user("ann")
        b1 = await w.login_user("bob")
        a2 = await w.login_user("ann")
        assert w.store.get("session", a1) is None
        assert w.store.get("session", a2) is not None
        assert w.store.get("session", b1) is not None
    finally:
        await w.close()


async def test_session_with_a_pending_task_is_not_disposable(data_dir: Path) -> None:
    w = await open_world(data_dir, max_anonymous_sessions=1)
    try:
        busy = w.root
        await w.call("task.create", busy, "hold", "")
        newer = await w.login_root()
        assert w.store.get("session", busy) is not None
        assert w.store.get("session", newer) is not None
    finally:
        await w.close()
