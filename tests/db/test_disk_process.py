"""The store's writer process: batches committed in order, failures reported, and an exit
of its own once the daemon's end of the socket closes."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from openxapi.db import lockfile
from openxapi.db.disk import Batch, Disk
from openxapi.db.disk_process import DiskProcess, DiskProcessError


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
