"""The committed generation: what the event layer may show, and when it is told."""

from __future__ import annotations

import asyncio
from pathlib import Path

from openxapi.db.store import Store, StoreError
from tests.db.test_store import API, vm
from tests.db.test_store_durability import _limit_size


async def test_a_write_is_committed_only_once_it_is_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = Store(API, path)
    await s.open()
    seen: list[tuple[int, int]] = []
    ref, rec = vm(1)
    # The file is locked exclusively, so "on disk" is read as "a batch was committed".
    s.on_commit(lambda gen: seen.append((gen, s.batches_committed)))
    try:
        start = s.committed
        gen = s.create("VM", ref, rec)
        assert s.committed == start < gen
        assert seen == []
        await s.sync()
        assert s.committed == gen
        assert seen == [(gen, 1)]
    finally:
        await s.close()


async def test_a_burst_of_writes_is_announced_by_few_commits(tmp_path: Path) -> None:
    s = Store(API, tmp_path / "s.db")
    await s.open()
    seen: list[int] = []
    s.on_commit(seen.append)
    try:
        gens = []
        for i in range(100):
            ref, rec = vm(i)
            gens.append(s.create("VM", ref, rec))
        await s.sync()
        assert seen[-1] == gens[-1] == s.committed
        assert len(seen) <= 2
        assert seen == sorted(seen)
    finally:
        await s.close()


async def test_writes_during_a_commit_wait_for_the_next_one(tmp_path: Path) -> None:
    s = Store(API, tmp_path / "s.db")
    await s.open()
    seen: list[int] = []
    s.on_commit(seen.append)
    try:
        ref1, rec1 = vm(1)
        g1 = s.create("VM", ref1, rec1)
        first = asyncio.create_task(s.sync())
        await asyncio.sleep(0)  # the writer takes the first batch
        ref2, rec2 = vm(2)
        g2 = s.create("VM", ref2, rec2)
        await first
        assert s.committed >= g1
        await s.sync()
        assert s.committed == g2
        assert g2 in seen
    finally:
        await s.close()


async def test_a_failed_commit_announces_nothing_until_it_is_retried(tmp_path: Path) -> None:
    s = Store(API, tmp_path / "s.db")
    await s.open()
    seen: list[int] = []
    s.on_commit(seen.append)
    try:
        ref, rec = vm(1)
        s.create("VM", ref, rec)
        await s.sync()
        before = s.committed
        await _limit_size(s, 0)
        gen = s.update("VM", ref, {"other_config": {f"k{i}": "x" * 1000 for i in range(50)}})
        try:
            await s.sync()
        except StoreError:
            pass
        else:
            raise AssertionError("the commit should have failed")
        assert s.committed == before
        assert seen[-1] == before
        await _limit_size(s, None)
        await s.sync()
        assert s.committed == gen
        assert seen[-1] == gen
    finally:
        await s.close()


async def test_an_in_memory_store_commits_at_the_next_loop_turn() -> None:
    s = Store(API, None, durable=False)
    await s.open()
    seen: list[int] = []
    unsubscribe = s.on_commit(seen.append)
    gens = []
    for i in range(5):
        ref, rec = vm(i)
        gens.append(s.create("VM", ref, rec))
    assert s.committed < gens[0]
    await asyncio.sleep(0)
    assert s.committed == gens[-1]
    assert seen == [gens[-1]]  # one announcement for the whole burst
    unsubscribe()
    ref, rec = vm(9)
    s.create("VM", ref, rec)
    await asyncio.sleep(0)
    assert seen == [gens[-1]]


async def test_committed_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = Store(API, path)
    await s.open()
    ref, rec = vm(1)
    gen = s.create("VM", ref, rec)
    await s.sync()
    await s.close()
    s = Store(API, path)
    await s.open()
    try:
        assert s.committed == s.generation >= gen
        assert s.version(ref) == gen
    finally:
        await s.close()


async def test_a_failing_callback_does_not_stop_the_others(tmp_path: Path) -> None:
    s = Store(API, tmp_path / "s.db")
    await s.open()
    seen: list[int] = []

    def broken(gen: int) -> None:
        raise RuntimeError("boom")

    s.on_commit(broken)
    s.on_commit(seen.append)
    try:
        ref, rec = vm(1)
        gen = s.create("VM", ref, rec)
        await s.sync()
        assert seen == [gen]
    finally:
        await s.close()


async def test_sync_commits_writes_that_need_no_disk_at_once() -> None:
    s = Store(API, None, durable=False)
    await s.open()
    seen: list[int] = []
    s.on_commit(seen.append)
    ref, rec = vm(1)
    gen = s.create("VM", ref, rec)
    await s.sync()
    assert s.committed == gen
    assert seen == [gen]
    await asyncio.sleep(0)
    assert seen == [gen]
