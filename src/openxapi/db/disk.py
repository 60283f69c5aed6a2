"""The SQLite side of the object store: every method here runs on the store's writer thread.

One batch of writes is one SQLite transaction, so a crash leaves either all of a batch or
none of it; a batch that raises the generation reservation writes it in the same
transaction.

A new object is written whole to ``objects``; an update is appended to ``changes`` as just
the fields it set (a few hundred bytes instead of a record spanning several overflow pages).
An object is its ``objects`` row with every newer ``changes`` entry applied in generation
order; ``compact`` folds the entries into the rows now and then, in one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from openxapi.db import schema

# A row to write: (ref, cls, gen, data). A row to delete: (ref,).
Row = tuple[str, str, int, bytes, int]  # ref, cls, gen, data, created
# An update: (gen, ref, JSON object of the fields it set).
Delta = tuple[int, str, bytes]
Tombstone = tuple[int, str, str, float]  # (gen, cls, ref, unix time)


@dataclass(slots=True)
class Batch:
    """Everything one transaction writes."""

    rows: list[Row] = field(default_factory=list)
    deltas: list[Delta] = field(default_factory=list)
    deletes: list[tuple[str]] = field(default_factory=list)
    tombstones: list[Tombstone] = field(default_factory=list)
    prune_tombstones_upto: int | None = None
    # The generation high-water mark and reservation, or None to leave them as they are.
    generation: int | None = None
    reserved: int = 0


@dataclass(slots=True)
class Meta:
    """What the file says about itself when opened."""

    schema_version_found: int
    generation: int
    reserved: int
    tombstone_floor: int
    deltas: int


# Rows rewritten per statement while compacting (their blobs are held until it runs).
_COMPACT_CHUNK = 512

# Updates per INSERT statement. A batch of updates alone, up to this many, is that one
# statement outside any explicit transaction: SQLite makes it a transaction of its own, so
# the commit, its fsync included, is one call that hands the GIL back once, not once per
# statement (each hand-back costs the event loop thread a wake-up while it is busy).
_CHUNK = 256
# OR REPLACE: a batch retried after its writer died may already be on disk (same rows).
_INSERT_DELTAS = [
    "INSERT OR REPLACE INTO changes (gen, ref, data) VALUES " + ", ".join(["(?, ?, ?)"] * n)
    for n in range(_CHUNK + 1)
]
_SET_COUNTERS = (
    "INSERT INTO meta (key, value) VALUES ('generation', ?), ('reserved', ?)"
    " ON CONFLICT(key) DO UPDATE SET value = excluded.value"
)


def apply_deltas(stored: Any, deltas: list[tuple[int, bytes]], base_gen: int) -> int:
    """Apply, in order, the updates newer than the row (older ones predate the row's own
    write); returns the newest generation applied, or ``base_gen``. Raises ValueError or
    TypeError for an unreadable entry."""
    if type(stored) is not dict:
        raise TypeError(f"a {type(stored).__name__}, not an object")
    gen = base_gen
    for delta_gen, data in deltas:
        if delta_gen <= base_gen:
            continue
        fields = orjson.loads(data)
        if type(fields) is not dict:
            raise TypeError(f"an update holding a {type(fields).__name__}, not an object")
        stored.update(fields)
        gen = delta_gen
    return gen


class Disk:
    """One SQLite connection, owned by the writer thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("store file is not open")
        return self._conn

    def open(self) -> Meta:
        """Open (creating or migrating) the file and read its generation counters."""
        conn = schema.connect(self.path)
        try:
            found = schema.prepare(conn, self.path)
            generation = schema.read_meta(conn, "generation")
            reserved = schema.read_meta(conn, "reserved")
            floor = schema.read_meta(conn, "tombstone_floor")
            (deltas,) = conn.execute("SELECT count(*) FROM changes").fetchone()
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        gen = generation if isinstance(generation, int) else 0
        res = reserved if isinstance(reserved, int) else 0
        return Meta(found, gen, max(gen, res), floor if isinstance(floor, int) else 0, deltas)

    def rows(self) -> Iterator[Row]:
        """Every stored object, streamed so loading never holds all the blobs at once."""
        yield from self.conn.execute("SELECT ref, cls, gen, data, created FROM objects")

    def deltas(self) -> dict[str, list[tuple[int, bytes]]]:
        """The updates not yet folded into ``objects``, by ref, oldest first."""
        by_ref: dict[str, list[tuple[int, bytes]]] = {}
        for gen, ref, data in self.conn.execute("SELECT gen, ref, data FROM changes ORDER BY gen"):
            entries = by_ref.get(ref)
            if entries is None:
                by_ref[ref] = [(gen, data)]
            else:
                entries.append((gen, data))
        return by_ref

    def tombstones(self) -> list[Tombstone]:
        return list(self.conn.execute("SELECT gen, cls, ref, ts FROM tombstones ORDER BY gen"))

    def set_counters(self, generation: int, reserved: int) -> None:
        """Record the generation high-water mark and the reservation, durably."""
        _set_counters(self.conn, generation, reserved)

    def stored_updates(self) -> int:
        """How many updates are stored apart from their rows (not yet compacted)."""
        (count,) = self.conn.execute("SELECT count(*) FROM changes").fetchone()
        return int(count)

    def set_max_pages(self, pages: int | None) -> None:
        """Cap the file at ``pages`` more pages than it has (None: lift the cap); a commit
        that needs more fails as on a full disk."""
        conn = self.conn
        if pages is None:
            conn.execute("PRAGMA max_page_count = 1073741823")
        else:
            (count,) = conn.execute("PRAGMA page_count").fetchone()
            conn.execute(f"PRAGMA max_page_count = {int(count) + int(pages)}")

    def commit(self, batch: Batch) -> None:
        """Write one batch as one transaction (one fsync of the WAL)."""
        conn = self.conn
        deltas = batch.deltas
        if (
            0 < len(deltas) <= _CHUNK
            and batch.generation is None
            and not (batch.rows or batch.deletes or batch.tombstones)
            and batch.prune_tombstones_upto is None
        ):
            conn.execute(_INSERT_DELTAS[len(deltas)], [x for d in deltas for x in d])
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            if batch.rows:
                conn.executemany(
                    "INSERT INTO objects (ref, cls, gen, data, created) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT(ref) DO UPDATE SET"
                    " cls = excluded.cls, gen = excluded.gen, data = excluded.data",
                    batch.rows,
                )
            for start in range(0, len(deltas), _CHUNK):
                chunk = deltas[start : start + _CHUNK]
                conn.execute(_INSERT_DELTAS[len(chunk)], [x for d in chunk for x in d])
            if batch.deletes:
                conn.executemany("DELETE FROM objects WHERE ref = ?", batch.deletes)
            if batch.tombstones:
                conn.executemany(
                    "INSERT OR REPLACE INTO tombstones (gen, cls, ref, ts) VALUES (?, ?, ?, ?)",
                    batch.tombstones,
                )
            if batch.prune_tombstones_upto is not None:
                conn.execute(
                    "DELETE FROM tombstones WHERE gen <= ?", (batch.prune_tombstones_upto,)
                )
                schema.write_meta(conn, "tombstone_floor", batch.prune_tombstones_upto)
            if batch.generation is not None:
                conn.execute(_SET_COUNTERS, (batch.generation, batch.reserved))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def compact(self) -> list[str]:
        """Fold every stored update into its object's row, in one transaction, and drop the
        updates; returns the refs left unfolded because a row or update is unreadable (their
        updates stay, for inspection). Updates of deleted objects are dropped."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            pending = self.deltas()
            rewrites: list[tuple[bytes, int, str]] = []
            unreadable: list[str] = []
            for ref, deltas in pending.items():
                row = conn.execute("SELECT gen, data FROM objects WHERE ref = ?", (ref,)).fetchone()
                if row is None or row[0] >= deltas[-1][0]:
                    continue
                try:
                    stored = orjson.loads(row[1])
                    gen = apply_deltas(stored, deltas, row[0])
                except (ValueError, TypeError):
                    unreadable.append(ref)
                    continue
                rewrites.append((orjson.dumps(stored), gen, ref))
                if len(rewrites) >= _COMPACT_CHUNK:  # never hold every rewritten row at once
                    conn.executemany("UPDATE objects SET data = ?, gen = ? WHERE ref = ?", rewrites)
                    rewrites.clear()
            conn.executemany("UPDATE objects SET data = ?, gen = ? WHERE ref = ?", rewrites)
            conn.execute(
                "DELETE FROM changes WHERE ref NOT IN (SELECT value FROM json_each(?))",
                (orjson.dumps(unreadable).decode(),),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return unreadable

    def close(self, generation: int | None) -> None:
        """Close the file; with a generation, first fold stored updates into their rows, mark
        a clean shutdown (no reservation gap on the next open) and fold the WAL back into the
        main file."""
        conn = self._conn
        if conn is None:
            return
        try:
            if generation is not None:
                try:
                    self.compact()
                except sqlite3.Error:
                    pass  # the updates stay stored as they are and load just the same
                _set_counters(conn, generation, generation)
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._conn = None
            conn.close()


def _set_counters(conn: sqlite3.Connection, generation: int, reserved: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_SET_COUNTERS, (generation, reserved))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
