"""The SQLite side of the object store: every method here runs on the store's writer thread.

One batch of writes is one SQLite transaction, so a crash leaves either all of a batch or
none of it; the batch's generation high-water mark is written in the same transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from openxapi.db import schema

# A row to write: (ref, cls, gen, data). A row to delete: (ref,).
Row = tuple[str, str, int, bytes]
Tombstone = tuple[int, str, str, float]  # (gen, cls, ref, unix time)


@dataclass(slots=True)
class Batch:
    """Everything one transaction writes."""

    rows: list[Row] = field(default_factory=list)
    deletes: list[tuple[str]] = field(default_factory=list)
    tombstones: list[Tombstone] = field(default_factory=list)
    prune_tombstones_upto: int | None = None
    generation: int = 0
    reserved: int = 0


@dataclass(slots=True)
class Meta:
    """What the file says about itself when opened."""

    schema_version_found: int
    generation: int
    reserved: int
    tombstone_floor: int


class Disk:
    """One SQLite connection, owned by the writer thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

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
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        gen = generation if isinstance(generation, int) else 0
        res = reserved if isinstance(reserved, int) else 0
        return Meta(found, gen, max(gen, res), floor if isinstance(floor, int) else 0)

    def rows(self) -> Iterator[tuple[str, str, int, bytes]]:
        """Every stored object, streamed so loading never holds all the blobs at once."""
        yield from self.conn.execute("SELECT ref, cls, gen, data FROM objects")

    def tombstones(self) -> list[Tombstone]:
        return list(self.conn.execute("SELECT gen, cls, ref, ts FROM tombstones ORDER BY gen"))

    def set_counters(self, generation: int, reserved: int) -> None:
        """Record the generation high-water mark and the reservation, durably."""
        _set_counters(self.conn, generation, reserved)

    def commit(self, batch: Batch) -> None:
        """Write one batch as one transaction (one fsync of the WAL)."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if batch.rows:
                conn.executemany(
                    "INSERT INTO objects (ref, cls, gen, data) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT(ref) DO UPDATE SET"
                    " cls = excluded.cls, gen = excluded.gen, data = excluded.data",
                    batch.rows,
                )
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
            schema.write_meta(conn, "generation", batch.generation)
            schema.write_meta(conn, "reserved", batch.reserved)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self, generation: int | None) -> None:
        """Close the file; with a generation, first mark a clean shutdown (no reservation
        gap on the next open) and fold the WAL back into the main file."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        try:
            if generation is not None:
                _set_counters(conn, generation, generation)
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()


def _set_counters(conn: sqlite3.Connection, generation: int, reserved: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        schema.write_meta(conn, "generation", generation)
        schema.write_meta(conn, "reserved", reserved)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
