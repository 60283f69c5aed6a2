"""The store file: whole rows, field-level updates over them, and folding the two together."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from openxapi.db.disk import Batch, Disk, apply_deltas


def _open(path: Path) -> Disk:
    disk = Disk(path)
    disk.open()
    return disk


def _objects(disk: Disk) -> dict[str, dict[str, Any]]:
    """Each object as loading sees it: its row with the newer updates applied, and gen."""
    deltas = disk.deltas()
    out: dict[str, dict[str, Any]] = {}
    for ref, _cls, gen, data, _created in disk.rows():
        stored = orjson.loads(data)
        stored["gen"] = apply_deltas(stored, deltas.get(ref, []), gen)
        out[ref] = stored
    return out


def _count(disk: Disk, table: str) -> int:
    (n,) = disk.conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert isinstance(n, int)
    return n


def test_updates_apply_over_the_row_in_generation_order(tmp_path: Path) -> None:
    disk = _open(tmp_path / "s.db")
    disk.commit(Batch(rows=[("r1", "VM", 1, b'{"a": 1, "b": 1}', 1)], generation=1))
    disk.commit(Batch(deltas=[(2, "r1", b'{"a": 2}')], generation=2))
    disk.commit(Batch(deltas=[(3, "r1", b'{"b": 3}'), (4, "r1", b'{"a": 4}')], generation=4))
    disk.close(None)  # as after a crash: nothing folded
    disk = _open(tmp_path / "s.db")
    try:
        assert _count(disk, "changes") == 3
        assert _objects(disk) == {"r1": {"a": 4, "b": 3, "gen": 4}}
    finally:
        disk.close(None)


def test_updates_older_than_the_row_are_ignored(tmp_path: Path) -> None:
    disk = _open(tmp_path / "s.db")
    try:
        disk.commit(Batch(rows=[("r1", "VM", 1, b'{"a": 1}', 1)], generation=1))
        disk.commit(Batch(deltas=[(2, "r1", b'{"a": 2}')], generation=2))
        # deleted and made again under the same ref: the old update predates the new row
        disk.commit(Batch(deletes=[("r1",)], generation=3))
        disk.commit(Batch(rows=[("r1", "VM", 4, b'{"a": 4}', 4)], generation=4))
        assert _objects(disk) == {"r1": {"a": 4, "gen": 4}}
    finally:
        disk.close(None)


def test_compact_folds_updates_into_rows_and_forgets_them(tmp_path: Path) -> None:
    disk = _open(tmp_path / "s.db")
    try:
        disk.commit(
            Batch(
                rows=[("r1", "VM", 1, b'{"a": 1, "x": null}', 1), ("r2", "VM", 2, b'{"a": 2}', 2)],
                generation=2,
            )
        )
        disk.commit(Batch(deltas=[(3, "r1", b'{"a": 3}'), (4, "r2", b'{"a": 4}')], generation=4))
        disk.commit(Batch(deletes=[("r2",)], deltas=[(5, "r1", b'{"x": [5]}')], generation=5))
        before = _objects(disk)
        assert disk.compact() == []
        assert _count(disk, "changes") == 0
        assert _objects(disk) == before == {"r1": {"a": 3, "x": [5], "gen": 5}}
        row = disk.conn.execute("SELECT gen, data FROM objects WHERE ref = 'r1'").fetchone()
        assert row[0] == 5 and orjson.loads(row[1]) == {"a": 3, "x": [5]}
    finally:
        disk.close(None)


def test_a_clean_close_folds_the_updates(tmp_path: Path) -> None:
    disk = _open(tmp_path / "s.db")
    disk.commit(Batch(rows=[("r1", "VM", 1, b'{"a": 1}', 1)], generation=1))
    disk.commit(Batch(deltas=[(2, "r1", b'{"a": 2}')], generation=2))
    disk.close(2)
    conn = sqlite3.connect(tmp_path / "s.db")
    try:
        assert conn.execute("SELECT count(*) FROM changes").fetchone() == (0,)
        assert conn.execute("SELECT gen, data FROM objects").fetchall() == [(2, b'{"a":2}')]
    finally:
        conn.close()


def test_unreadable_rows_keep_their_updates(tmp_path: Path) -> None:
    disk = _open(tmp_path / "s.db")
    try:
        disk.commit(
            Batch(
                rows=[("torn", "VM", 1, b'{"a": ', 1), ("ok", "VM", 2, b'{"a": 2}', 2)],
                deltas=[],
                generation=2,
            )
        )
        disk.commit(
            Batch(
                deltas=[(3, "torn", b'{"a": 3}'), (4, "ok", b"[1]"), (5, "ok", b'{"a": 5}')],
                generation=5,
            )
        )
        assert sorted(disk.compact()) == ["ok", "torn"]
        assert _count(disk, "changes") == 3
        assert disk.conn.execute("SELECT data FROM objects WHERE ref = 'ok'").fetchone() == (
            b'{"a": 2}',
        )
    finally:
        disk.close(None)


def test_apply_deltas_refuses_what_is_not_an_object() -> None:
    with pytest.raises(TypeError):
        apply_deltas([1], [], 0)
    with pytest.raises(TypeError):
        apply_deltas({}, [(1, b"[1]")], 0)
    with pytest.raises(ValueError):
        apply_deltas({}, [(1, b"{")], 0)
    stored: dict[str, Any] = {"a": 1}
    assert apply_deltas(stored, [(1, b'{"a": 9}'), (2, b'{"b": 2}')], 1) == 2
    assert stored == {"a": 1, "b": 2}


def test_a_batch_of_many_updates_is_written_whole(tmp_path: Path) -> None:
    disk = _open(tmp_path / "s.db")
    try:
        disk.commit(Batch(rows=[("r", "VM", 1, b'{"n": 0}', 1)], generation=1))
        deltas = [(g, "r", orjson.dumps({"n": g})) for g in range(2, 102)]
        disk.commit(Batch(deltas=deltas, generation=101))
        assert _count(disk, "changes") == 100
        assert _objects(disk) == {"r": {"n": 101, "gen": 101}}
    finally:
        disk.close(None)


def test_a_batch_larger_than_one_statement_is_still_one_transaction(tmp_path: Path) -> None:
    disk = _open(tmp_path / "s.db")
    try:
        disk.commit(Batch(rows=[("r", "VM", 1, b'{"n": 0}', 1)], generation=1))
        deltas = [(g, "r", orjson.dumps({"n": g})) for g in range(2, 1002)]
        disk.conn.execute("PRAGMA max_page_count = 1")  # the file cannot grow: SQLITE_FULL
        with pytest.raises(sqlite3.Error):
            disk.commit(Batch(deltas=deltas))
        assert _count(disk, "changes") == 0  # no chunk of it stayed
        disk.conn.execute("PRAGMA max_page_count = 1073741823")
        disk.commit(Batch(deltas=deltas))
        assert _objects(disk) == {"r": {"n": 1001, "gen": 1001}}
    finally:
        disk.close(None)


def test_counters_are_written_only_with_a_batch_that_carries_them(tmp_path: Path) -> None:
    disk = _open(tmp_path / "s.db")
    disk.commit(Batch(rows=[("r", "VM", 1, b"{}", 1)], generation=1, reserved=500))
    disk.commit(Batch(deltas=[(2, "r", b"{}")]))
    disk.close(None)
    disk = Disk(tmp_path / "s.db")
    meta = disk.open()
    try:
        assert (meta.generation, meta.reserved, meta.deltas) == (1, 500, 1)
    finally:
        disk.close(None)
