"""The object store's durability: group commit, failing disks, crashes, schema versions."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest

from openxapi.db import schema
from openxapi.db.store import Store, StoreError
from tests.db.test_store import API, vm


async def _limit_size(store: Store, pages: int | None) -> None:
    """Cap (or uncap) the store file's size so commits fail with SQLITE_FULL."""
    writer = store._writer_process
    assert writer is not None
    await writer.call("set_max_pages", pages)


async def test_concurrent_syncs_share_transactions(tmp_path: Path) -> None:
    s = Store(API, tmp_path / "s.db")
    await s.open()
    refs = []
    for i in range(40):
        ref, rec = vm(i)
        s.create("VM", ref, rec)
        refs.append(ref)
    await s.sync()
    before = s.batches_committed

    async def writer(ref: str) -> None:
        for k in range(5):
            s.update("VM", ref, {"other_config": {"k": str(k)}})
            await s.sync()

    await asyncio.gather(*(writer(ref) for ref in refs))
    batches = s.batches_committed - before
    assert 1 <= batches <= 200 // 4
    # several updates of one object in a batch are one row write
    assert s.rows_written <= 40 + 200
    await s.close()
    s = Store(API, tmp_path / "s.db")
    await s.open()
    try:
        assert all(s.table("VM")[ref]["other_config"] == {"k": "4"} for ref in refs)
    finally:
        await s.close()


async def test_sync_with_nothing_pending_returns_without_a_transaction(tmp_path: Path) -> None:
    s = Store(API, tmp_path / "s.db")
    await s.open()
    await s.sync()
    assert s.batches_committed == 0
    ref, rec = vm(1)
    s.create("VM", ref, rec)
    await s.sync()
    await s.sync()
    assert s.batches_committed == 1
    await s.close()


async def test_a_cancelled_sync_does_not_disturb_other_waiters(tmp_path: Path) -> None:
    s = Store(API, tmp_path / "s.db")
    await s.open()
    ref, rec = vm(1)
    s.create("VM", ref, rec)
    first = asyncio.create_task(s.sync())
    second = asyncio.create_task(s.sync())
    await asyncio.sleep(0)
    first.cancel()
    await second
    assert first.cancelled()
    await s.close()


async def test_a_full_disk_fails_the_waiting_syncs_and_a_retry_recovers(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = Store(API, path)
    await s.open()
    ref, rec = vm(1)
    s.create("VM", ref, rec)
    await s.sync()
    await _limit_size(s, 0)
    big = {f"k{i}": "x" * 1000 for i in range(50)}
    s.update("VM", ref, {"other_config": big})
    results = await asyncio.gather(s.sync(), s.sync(), return_exceptions=True)
    assert all(isinstance(r, StoreError) for r in results)
    assert isinstance(results[0], OSError)
    got = s.get("VM", ref)
    assert got is not None and got["other_config"] == big  # memory is left as it is
    await _limit_size(s, None)
    await s.sync()  # the failed batch is written with the next one
    await s.close()
    s = Store(API, path)
    await s.open()
    try:
        got = s.get("VM", ref)
        assert got is not None and got["other_config"] == big
    finally:
        await s.close()


async def test_updates_written_since_a_failed_batch_keep_its_fields(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = Store(API, path)
    await s.open()
    ref, rec = vm(1)
    s.create("VM", ref, rec)
    await s.sync()
    await _limit_size(s, 0)
    big = {f"k{i}": "x" * 1000 for i in range(50)}
    s.update("VM", ref, {"other_config": big})
    with pytest.raises(StoreError):
        await s.sync()
    s.update("VM", ref, {"name_label": "later"})  # queued while the failed batch waits
    await _limit_size(s, None)
    await s.sync()
    gen = s.version(ref)
    s2_ref, s2_rec = vm(2)
    s.create("VM", s2_ref, s2_rec)
    await _limit_size(s, 0)
    s.update("VM", s2_ref, {"name_label": "made and renamed"})
    with pytest.raises(StoreError):
        await s.sync()
    s.update("VM", s2_ref, {"tags": ["t"]})
    await _limit_size(s, None)
    await s.sync()
    await s.close()
    s = Store(API, path)
    await s.open()
    try:
        assert s.get("VM", ref) == {**rec, "other_config": big, "name_label": "later"}
        assert s.version(ref) == gen
        assert s.get("VM", s2_ref) == {**s2_rec, "name_label": "made and renamed", "tags": ["t"]}
    finally:
        await s.close()


async def test_updates_are_folded_once_enough_are_stored(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = Store(API, path, compact_after=10)
    await s.open()
    refs = [vm(i)[0] for i in range(3)]
    for i in range(3):
        s.create("VM", *vm(i))
    for k in range(25):
        for ref in refs:
            s.update("VM", ref, {"name_label": f"{ref}-{k}"})
        await s.sync()
    s.touch("VM", refs[0])
    await s.sync()
    expected = {ref: s.get("VM", ref) for ref in refs}
    versions = {ref: s.version(ref) for ref in refs}

    # 76 updates written, folded whenever 10 or more were waiting
    assert s._writer_process is not None
    assert 0 < await s._writer_process.call("stored_updates") < 10
    await s.close()
    s = Store(API, path)
    await s.open()
    try:
        assert {ref: s.get("VM", ref) for ref in refs} == expected
        assert {ref: s.version(ref) for ref in refs} == versions
    finally:
        await s.close()


async def test_close_reports_writes_it_could_not_flush(tmp_path: Path) -> None:
    s = Store(API, tmp_path / "s.db")
    await s.open()
    await _limit_size(s, 0)
    ref, rec = vm(1, other_config={f"k{i}": "x" * 1000 for i in range(50)})
    s.create("VM", ref, rec)
    with pytest.raises(StoreError):
        await s.close()


async def test_a_second_store_cannot_open_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    first = Store(API, path)
    await first.open()
    second = Store(API, path)
    with pytest.raises(StoreError):
        await second.open()
    ref, rec = vm(1)
    first.create("VM", ref, rec)
    await first.sync()
    await first.close()


async def test_a_file_from_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = Store(API, path)
    await s.open()
    await s.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (99,))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema version 99"):
        await Store(API, path).open()


async def test_an_older_schema_is_migrated_after_a_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.db"
    s = Store(API, path)
    await s.open()
    ref, rec = vm(1, name_label="before upgrade")
    s.create("VM", ref, rec)
    await s.close()

    def add_table(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE added_in_v4 (x INTEGER)")

    monkeypatch.setattr(schema, "SCHEMA_VERSION", 4)
    monkeypatch.setattr(schema, "MIGRATIONS", {**schema.MIGRATIONS, 3: add_table})
    s = Store(API, path)
    await s.open()
    try:
        assert s.schema_version_found == 3
        got = s.get("VM", ref)
        assert got is not None and got["name_label"] == "before upgrade"
    finally:
        await s.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (4,)
    conn.execute("SELECT x FROM added_in_v4")
    conn.close()
    backup = sqlite3.connect(tmp_path / "s.db.v3.bak")
    assert backup.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (3,)
    assert backup.execute("SELECT count(*) FROM objects").fetchone() == (1,)
    backup.close()
    # a new file is created at the newest version through the same steps
    fresh = Store(API, tmp_path / "new.db")
    await fresh.open()
    await fresh.close()
    conn = sqlite3.connect(tmp_path / "new.db")
    conn.execute("SELECT x FROM added_in_v4")
    conn.close()


async def test_the_creating_generation_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = Store(API, path)
    await s.open()
    ref, rec = vm(1)
    made = s.create("VM", ref, rec)
    changed = s.update("VM", ref, {"name_label": "later"})
    await s.close()
    s = Store(API, path)
    await s.open()
    try:
        assert s.created(ref) == made < changed == s.version(ref)
    finally:
        await s.close()


def _version_1_file(path: Path, rows: list[tuple[str, str, int, bytes]], generation: int) -> None:
    """A store file as the first layout wrote it: whole records only."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value)")
    conn.execute(
        "CREATE TABLE objects ("
        " ref TEXT PRIMARY KEY, cls TEXT NOT NULL, gen INTEGER NOT NULL, data BLOB NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE tombstones ("
        " gen INTEGER PRIMARY KEY, cls TEXT NOT NULL, ref TEXT NOT NULL, ts REAL NOT NULL)"
    )
    conn.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("schema_version", 1), ("generation", generation), ("reserved", generation)],
    )
    conn.executemany("INSERT INTO objects VALUES (?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()


async def test_a_version_1_file_keeps_every_object_and_generation(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    ref, rec = vm(1, name_label="from v1", tags=["a"])
    extra = {**rec, "legacy_field": 7}
    _version_1_file(path, [(ref, "VM", 41, orjson.dumps(extra))], 41)
    s = Store(API, path)
    await s.open()
    try:
        assert s.schema_version_found == 1
        assert s.get("VM", ref) == rec and s.version(ref) == 41
        assert s.created(ref) == 0  # not recorded before version 3
        assert s.extras(ref) == {"legacy_field": 7}
        gen = s.update("VM", ref, {"name_label": "after upgrade"})
        assert gen > 41
        await s.sync()
    finally:
        await s.close()
    s = Store(API, path)
    await s.open()
    try:
        assert s.get("VM", ref) == {**rec, "name_label": "after upgrade"}
        assert s.version(ref) == gen and s.extras(ref) == {"legacy_field": 7}
    finally:
        await s.close()
    backup = sqlite3.connect(tmp_path / "s.db.v1.bak")
    assert backup.execute("SELECT gen, data FROM objects").fetchall() == [(41, orjson.dumps(extra))]
    backup.close()


# ---------------------------------------------------------------- SIGKILL

_CHILD = r"""
import asyncio, sys
from pathlib import Path
from openxapi.db.store import Store
from openxapi.spec.model import load

api = load()
path, base = Path(sys.argv[1]), int(sys.argv[2])
template = {f.name: f.default for f in api.classes["VM"].fields}

async def main():
    s = Store(api, path, compact_after=50)  # kills land in compactions too
    await s.open()

    async def worker(w):
        i = 0
        while True:
            n = base + w * 100_000 + i
            ref = f"OpaqueRef:crash-{n}"
            rec = dict(template, uuid=f"uuid-{n}", name_label=ref,
                       other_config={"n": str(n), "pad": "p" * 2000})
            s.create("VM", ref, rec)
            g = s.update("VM", ref, {"name_description": "done " + ref, "tags": [str(n)]})
            print("wrote", g, flush=True)
            await s.sync()
            print("ack", ref, g, flush=True)
            g = s.update("VM", ref, {"tags": [str(n), "second"]})
            print("wrote", g, flush=True)
            await s.sync()
            print("second", ref, g, flush=True)
            i += 1

    await asyncio.gather(*(worker(w) for w in range(4)))

asyncio.run(main())
"""


def _run_and_kill(path: Path, base: int, acks_wanted: int) -> tuple[list[str], list[str], int]:
    """Run a writer process, SIGKILL it once it has acknowledged enough writes; returns
    the refs whose creation and whose second update were acknowledged, and the highest
    generation it handed out."""
    acked: list[str] = []
    seconds: list[str] = []
    highest = 0
    with subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), str(base)],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        watchdog = threading.Timer(60, proc.kill)
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                words = line.split()
                if (
                    not line.endswith("\n")
                    or not words
                    or len(words) != (2 if words[0] == "wrote" else 3)
                ):
                    continue  # cut short by the kill
                highest = max(highest, int(words[-1]))
                if words[0] == "second":
                    seconds.append(words[1])
                if words[0] == "ack":
                    acked.append(words[1])
                    if len(acked) == acks_wanted:
                        os.kill(proc.pid, signal.SIGKILL)
        finally:
            watchdog.cancel()
    assert proc.returncode == -signal.SIGKILL
    return acked, seconds, highest


def _check(path: Path, acked: list[str], seconds: list[str], highest: int) -> None:
    async def check() -> None:
        s = Store(API, path)
        await s.open()
        try:
            table = s.table("VM")
            for ref in acked:
                assert ref in table, f"acknowledged {ref} lost"
            names = [f.name for f in API.classes["VM"].fields]
            for ref, rec in table.items():
                n = ref.rsplit("-", 1)[1]
                assert list(rec) == names
                assert rec["name_description"] == "done " + ref  # the batch was atomic
                assert rec["other_config"] == {"n": n, "pad": "p" * 2000}
                assert rec["tags"] in ([n], [n, "second"])
                assert s.ref_of_uuid("VM", f"uuid-{n}") == ref
            for ref in seconds:
                assert table[ref]["tags"][1:] == ["second"], f"acknowledged update of {ref} lost"
            # no generation handed out before the crash is handed out again
            assert s.generation >= highest
            ref, rec = vm(999_999_999)
            assert s.create("VM", ref, rec) > highest
            s.delete("VM", ref)
        finally:
            await s.close()

    asyncio.run(check())


def test_sigkill_loses_no_acknowledged_write(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    all_acked: list[str] = []
    all_seconds: list[str] = []
    for round_no in range(2):
        acked, seconds, highest = _run_and_kill(path, round_no * 1_000_000, 150 + 100 * round_no)
        all_acked += acked
        all_seconds += seconds
        _check(path, all_acked, all_seconds, highest)
