"""The on-disk layout of the object store and the steps that upgrade older layouts.

The layout is versioned in the ``meta`` table so a newer daemon migrates an older file in
place (after taking a backup copy) and an older daemon refuses a newer file instead of
misreading it.

Version 2 adds ``changes``: an update is stored as the fields it changed, keyed by its
generation, and folded into the object's ``objects`` row later (see ``disk.Disk.compact``).
Version 3 adds ``objects.created``, the generation that created the object (0: from before
version 3), so events after a restart still tell an added object from a modified one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

SCHEMA_VERSION = 3

_TABLES_V1 = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value)",
    "CREATE TABLE objects ("
    " ref TEXT PRIMARY KEY, cls TEXT NOT NULL, gen INTEGER NOT NULL, data BLOB NOT NULL)",
    "CREATE TABLE tombstones ("
    " gen INTEGER PRIMARY KEY, cls TEXT NOT NULL, ref TEXT NOT NULL, ts REAL NOT NULL)",
)

Migration = Callable[[sqlite3.Connection], None]


def _add_changes(conn: sqlite3.Connection) -> None:
    """Version 2: field-level updates, applied over ``objects`` rows in generation order."""
    conn.execute(
        "CREATE TABLE changes (gen INTEGER PRIMARY KEY, ref TEXT NOT NULL, data BLOB NOT NULL)"
    )


def _add_created(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE objects ADD COLUMN created INTEGER NOT NULL DEFAULT 0")


# MIGRATIONS[v] upgrades a file at schema version v to v + 1, inside one transaction.
MIGRATIONS: dict[int, Migration] = {1: _add_changes, 2: _add_created}


class SchemaError(Exception):
    """The store file cannot be used by this version of the daemon."""


def connect(path: Path) -> sqlite3.Connection:
    """Open the store file with the durability settings the store relies on.

    WAL with ``synchronous=FULL`` makes each commit one fsync of the log; exclusive locking
    keeps a second daemon from writing the same file.
    """
    conn = sqlite3.connect(path, timeout=0.5, isolation_level=None, cached_statements=512)
    conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        conn.close()
        raise SchemaError(f"{path}: cannot switch to WAL journal mode (got {mode})")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def read_meta(conn: sqlite3.Connection, key: str) -> object:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def write_meta(conn: sqlite3.Connection, key: str, value: object) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def stored_version(conn: sqlite3.Connection) -> int | None:
    """The schema version of an existing file, or None for a new (empty) one."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if exists is None:
        return None
    value = read_meta(conn, "schema_version")
    if not isinstance(value, int):
        raise SchemaError(f"store file has no usable schema_version (found {value!r})")
    return value


def prepare(conn: sqlite3.Connection, path: Path) -> int:
    """Create the tables of a new file or migrate an older one; returns the version found.

    A file from a newer daemon is refused rather than read with the wrong layout.
    """
    found = stored_version(conn)
    if found is None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for ddl in _TABLES_V1:
                conn.execute(ddl)
            write_meta(conn, "schema_version", 1)
            for version in range(1, SCHEMA_VERSION):
                MIGRATIONS[version](conn)
            write_meta(conn, "schema_version", SCHEMA_VERSION)
            write_meta(conn, "generation", 0)
            write_meta(conn, "reserved", 0)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return SCHEMA_VERSION
    if found > SCHEMA_VERSION:
        raise SchemaError(
            f"{path} has schema version {found}, newer than this daemon's {SCHEMA_VERSION}"
        )
    if found < SCHEMA_VERSION:
        backup(conn, path.with_name(f"{path.name}.v{found}.bak"))
        for version in range(found, SCHEMA_VERSION):
            conn.execute("BEGIN IMMEDIATE")
            try:
                MIGRATIONS[version](conn)
                write_meta(conn, "schema_version", version + 1)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
    return found


def backup(conn: sqlite3.Connection, target: Path) -> None:
    """Copy the whole database (a consistent snapshot) before changing its layout."""
    dest = sqlite3.connect(target)
    try:
        conn.backup(dest)
    finally:
        dest.close()
