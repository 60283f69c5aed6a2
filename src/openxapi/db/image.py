"""A whole-store copy as one self-contained store file, and loading such a copy back.

Disaster recovery keeps a copy of the pool database on a metadata VDI and later opens it
beside the live store. The copy is a store file in the server's own layout (the SQLite
schema of :mod:`openxapi.db.schema`), so a copy written by this version is read with the
same code and an older copy is migrated as a store file would be. Loading gives a
separate in-memory :class:`Store` that refuses writes: it serves reads, nothing else.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from openxapi.db.disk import Batch, Disk, Row, apply_deltas
from openxapi.db.records import Shape
from openxapi.db.schema import SchemaError
from openxapi.db.store import Store
from openxapi.spec.model import Api

#: Classes a copy leaves out: logins and task rows belong to the running server only.
NOT_COPIED = frozenset({"session", "task"})


class ImageError(Exception):
    """The bytes are not a store copy this server can read."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The store's tables at one generation (records are never mutated in place)."""

    generation: int
    tables: dict[str, dict[str, dict[str, Any]]]
    created: dict[str, int]


def take(store: Store) -> Snapshot:
    """Every copied table as it is now; cheap (the record objects are shared)."""
    tables = {cls: dict(store.table(cls)) for cls in store.classes() if cls not in NOT_COPIED}
    created = {ref: store.created(ref) for table in tables.values() for ref in table}
    return Snapshot(store.generation, tables, created)


def _write(snapshot: Snapshot, path: Path) -> None:
    disk = Disk(path)
    disk.open()
    try:
        gen = snapshot.generation
        rows: list[Row] = [
            (ref, cls, gen, orjson.dumps(rec), snapshot.created.get(ref, 0))
            for cls, table in snapshot.tables.items()
            for ref, rec in table.items()
        ]
        disk.commit(Batch(rows=rows, generation=gen, reserved=gen))
    finally:
        disk.close(snapshot.generation)


def dump(snapshot: Snapshot) -> bytes:
    """The snapshot as the bytes of one store file (blocking: run it in a thread)."""
    with tempfile.TemporaryDirectory(prefix="openxapi-dbcopy-") as tmp:
        path = Path(tmp) / "copy.db"
        _write(snapshot, path)
        return path.read_bytes()


@dataclass(frozen=True, slots=True)
class Loaded:
    """The objects of a copy, rebuilt in the current description's field order."""

    generation: int
    objects: list[tuple[str, str, dict[str, Any]]]  # (cls, ref, record)


def _read(api: Api, path: Path) -> Loaded:
    disk = Disk(path)
    try:
        meta = disk.open()
        shapes = {c.name: Shape(c) for c in api.db_classes()}
        deltas = disk.deltas()
        shared: dict[Any, Any] = {}
        out: list[tuple[str, str, dict[str, Any]]] = []
        for ref, cls, gen, data, _made in disk.rows():
            shape = shapes.get(cls)
            if shape is None or cls in NOT_COPIED:
                continue
            stored = orjson.loads(data)
            updates = deltas.get(ref)
            if updates is not None:
                apply_deltas(stored, updates, gen)
            record, _extras = shape.restore(stored, shared)
            out.append((cls, ref, record))
        return Loaded(meta.generation, out)
    finally:
        disk.close(None)


def read_file(api: Api, path: Path) -> Loaded:
    """The objects of a store file (blocking); ImageError when it is not one."""
    try:
        return _read(api, path)
    except (sqlite3.Error, SchemaError, ValueError, TypeError, KeyError) as exc:
        raise ImageError(str(exc) or type(exc).__name__) from None


def read_bytes(api: Api, data: bytes) -> Loaded:
    """The objects of a store file held in memory (blocking)."""
    with tempfile.TemporaryDirectory(prefix="openxapi-dbcopy-") as tmp:
        path = Path(tmp) / "copy.db"
        path.write_bytes(data)
        return read_file(api, path)


async def read_only_store(api: Api, loaded: Loaded) -> Store:
    """A separate in-memory store holding the copy's objects; every write to it fails."""
    store = Store(api, None, durable=False)
    await store.open()
    for cls, ref, record in loaded.objects:
        store.create(cls, ref, record)
    await asyncio.sleep(0)  # let the in-memory commit announcement run before closing
    await store.close()
    return store
