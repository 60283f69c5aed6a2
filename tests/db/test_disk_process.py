"""The store's writer process: batches committed in order, failures reported, and an exit
of its own once the daemon's end of the socket closes."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from openxapi.db import lockfile
from openxapi.db.disk import Batch, Disk
from openxapi.db.disk_process import DiskProcess, DiskProcessError
from openxapi.db.store import Store, StoreError
from tests.db.test_store import API, vm


def _prepared(path: Path) -> None:
    disk = Disk(path)
    disk.open()
    disk.close(None)


async def test_batches_are_committed_by_the_child(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    _prepared(path)
    lock = lockfile.acquire(path)
    writer = DiskProcess(path, lock)
    await writer.start()
    try:
        row = ("OpaqueRef:a", "VM", 5, b'{"name_label": "a"}', 5)
        await writer.commit(Batch(rows=[row]))
        await writer.commit(Batch(deltas=[(6, "OpaqueRef:a", b'{"name_label": "b"}')]))
        assert await writer.call("stored_updates") == 1
        with pytest.raises(DiskProcessError, match="unknown request"):
            await writer.call("no-such-request")
    finally:
        await writer.stop(None)
        lockfile.release(lock)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT data FROM objects").fetchall() == [(row[3],)]
        assert conn.execute("SELECT data FROM changes").fetchall() == [(b'{"name_label": "b"}',)]
    finally:
        conn.close()


async def test_the_child_exits_when_the_daemon_goes_away(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    _prepared(path)
    lock = lockfile.acquire(path)
    writer = DiskProcess(path, lock)
    await writer.start()
    proc = writer._proc
    assert proc is not None and writer._replies is not None
    assert writer._replies.transport is not None
    writer._replies.transport.close()  # as a killed daemon's socket would
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert proc.returncode == 0
    with pytest.raises(DiskProcessError):
        await writer.call("stored_updates")
    await writer.stop(None)
    lockfile.release(lock)


def test_a_second_owner_is_refused_until_the_first_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    first = lockfile.acquire(path)
    with pytest.raises(lockfile.StoreLocked):
        lockfile.acquire(path, wait=0.1)
    lockfile.release(first)
    lockfile.release(lockfile.acquire(path, wait=0.1))


async def test_a_killed_writer_is_replaced_and_no_acknowledged_write_is_lost(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    store = Store(API, path)
    await store.open()
    try:
        ref, rec = vm(1)
        store.create("VM", ref, rec)
        await store.sync()
        writer = store._writer_process
        assert writer is not None and writer.pid is not None
        first = writer.pid
        os.kill(first, signal.SIGKILL)
        acknowledged = []
        for n in range(5):
            store.update("VM", ref, {"name_label": f"after-{n}"})
            try:
                await store.sync()
            except StoreError:
                continue  # the batch the dead writer held: retried with the next one
            acknowledged.append(f"after-{n}")
        assert acknowledged, "writes must succeed again once the writer is replaced"
        assert writer.pid is not None and writer.pid != first
    finally:
        await store.close()
    again = Store(API, path)
    await again.open()
    try:
        got = again.get("VM", ref)
        assert got is not None and got["name_label"] == "after-4"
    finally:
        await again.close()
