"""The object store: in-memory tables that answer every read, backed by a durable log.

Writes are applied to memory at once, stamped with a generation (the event stream is built
on it) and queued; one writer task hands everything queued to a dedicated SQLite thread as a
single transaction, so one fsync serves every request that wrote meanwhile (group commit).
``sync()`` returns once the caller's writes are on disk; the API layer answers only then.

``committed`` is the newest generation known to be durable; ``on_commit`` callbacks run each
time it advances, so watchers (the event hub) show a write only once it is on disk. Writes
that need no disk (an in-memory store, volatile classes) count as committed at the next turn
of the event loop, so a burst made in one go is announced once.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from openxapi.db import lockfile
from openxapi.db.disk import Batch, Disk, Tombstone, apply_deltas
from openxapi.db.disk_process import DiskProcess, DiskProcessError
from openxapi.db.disk_thread import DiskThread
from openxapi.db.records import Shape
from openxapi.db.schema import SchemaError
from openxapi.spec.model import Api

log = logging.getLogger(__name__)

# Generations a crashed daemon may have handed out beyond what reached disk; a restart after
# a crash starts above the reservation on disk so no generation (an event token a client may
# hold) is reused. A batch renews the reservation, to RESERVE above the newest generation,
# only once fewer than RESERVE // 2 of it are left, so most batches write no counters.
RESERVE = 1_000_000

_RETRY_DELAY = 0.5


class StoreError(OSError):
    """Writes could not be made durable (disk full, I/O error, unusable store file)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One write, as the event layer sees it."""

    generation: int
    cls: str
    ref: str
    op: str  # "add" | "mod" | "del"


_WHOLE, _FIELDS, _GONE = 0, 1, 2


@dataclass(slots=True)
class _Pending:
    """What the next batch writes for one object: the whole record (a new object), the
    fields set since the last batch (merged when set twice), or its deletion."""

    cls: str
    gen: int
    kind: int
    data: bytes | None  # the serialised record or fields; None: encode ``fields`` at commit
    fields: dict[str, Any] | None = None


@dataclass(slots=True)
class _InFlight:
    """A batch on its way to disk and the ``sync()`` calls waiting for it."""

    waiters: list[asyncio.Future[None]] = field(default_factory=list)


def _wake_all(waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for fut in waiters:
        if fut.done():
            continue  # its sync() was cancelled
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)
            fut.exception()  # a waiter cancelled meanwhile must not log it as unretrieved


class Store:
    """Tables of records keyed by ref, with uuid / name_label / class indexes."""

    def __init__(
        self,
        api: Api,
        path: Path | None,
        *,
        durable: bool = True,
        volatile: frozenset[str] = frozenset(),
        change_log_size: int = 100_000,
        tombstone_keep: int = 100_000,
        tombstone_age: float = 86_400.0,
        compact_after: int = 20_000,
    ) -> None:
        for name in volatile:
            if name not in api.classes:
                raise KeyError(f"unknown volatile class {name!r}")
        self._api = api
        self._path = path
        self._durable = durable and path is not None
        self._volatile = volatile
        names = [c.name for c in api.db_classes()]
        names += [n for n in sorted(volatile) if n not in names]
        self._shapes: dict[str, Shape] = {n: Shape(api.classes[n]) for n in names}
        self._tables: dict[str, dict[str, dict[str, Any]]] = {n: {} for n in names}
        self._by_uuid: dict[str, dict[str, str]] = {
            n: {} for n, s in self._shapes.items() if s.has_uuid
        }
        self._by_label: dict[str, dict[str, dict[str, None]]] = {
            n: {} for n, s in self._shapes.items() if s.has_label
        }
        self._class_of: dict[str, str] = {}
        self._versions: dict[str, int] = {}
        #: The generation that created each object, for add/mod after a restart.
        self._created: dict[str, int] = {}
        self._extras: dict[str, dict[str, Any]] = {}
        self._generation = 0
        self._log: list[Change] = []
        self._log_floor = 0
        self._log_size = change_log_size
        self._tombstones: list[Tombstone] = []
        self._tomb_floor = 0
        self._tomb_keep = tombstone_keep
        self._tomb_age = tombstone_age
        self._tomb_check_at = tombstone_keep
        self._subscribers: list[Callable[[Change], None]] = []
        self._committed = 0
        self._commit_callbacks: list[Callable[[int], None]] = []
        self._announce_scheduled = False
        # group commit state
        self._accepting = not self._durable
        self._opened = False
        self._closing = False
        self._pending: dict[str, _Pending] = {}
        self._pending_tombstones: list[Tombstone] = []
        self._pending_prune: int | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._inflight: _InFlight | None = None
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._thread: DiskThread | None = None
        self._disk: Disk | None = None
        self._writer_process: DiskProcess | None = None
        self._lock: int | None = None
        self._last_error: BaseException | None = None
        self._compact_after = compact_after
        self._stored_deltas = 0
        self._reserved = 0  # the reservation on disk
        self.batches_committed = 0
        self.rows_written = 0
        self.schema_version_found: int | None = None
        self.unreadable: list[str] = []

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Create or migrate the store file, load every object and start the writer."""
        if self._opened:
            raise RuntimeError("a store is opened once")
        self._opened = True
        if not self._durable:
            return
        assert self._path is not None
        loop = asyncio.get_running_loop()
        try:
            self._lock = await loop.run_in_executor(None, lockfile.acquire, self._path)
        except OSError as exc:
            raise StoreError(f"cannot open store {self._path}: {exc}") from exc
        try:
            await self._load_then_hand_over()
        except BaseException:
            lockfile.release(self._lock)
            self._lock = None
            raise
        self._wake = asyncio.Event()
        self._accepting = True
        self._writer = loop.create_task(self._run_writer(), name="openxapi-store-writer")

    async def _load_then_hand_over(self) -> None:
        assert self._path is not None and self._lock is not None
        thread = self._thread = DiskThread("openxapi-store")
        self._disk = Disk(self._path)
        try:
            await thread.call(self._load)
        except BaseException as exc:
            await thread.call(partial(self._disk.close, None))
            if isinstance(exc, sqlite3.Error | SchemaError):
                raise StoreError(f"cannot open store {self._path}: {exc}") from exc
            raise
        finally:
            # Loading done: the writer process takes the file (and its lock) over.
            if self._disk.is_open:
                await thread.call(partial(self._disk.close, None))
            thread.stop()
            self._thread = None
            self._disk = None
        writer = DiskProcess(self._path, self._lock)
        try:
            await writer.start()
        except OSError as exc:
            raise StoreError(f"cannot start the writer of store {self._path}: {exc}") from exc
        self._writer_process = writer

    def _load(self) -> None:
        """Runs on the writer thread, before any other use of the store."""
        disk = self._disk
        assert disk is not None
        meta = disk.open()
        self.schema_version_found = meta.schema_version_found
        self._stored_deltas = meta.deltas
        start = meta.reserved
        disk.set_counters(start, start + RESERVE)
        self._reserved = start + RESERVE
        skipped: dict[str, int] = {}
        # Loading allocates millions of long-lived containers; cyclic GC passes over the
        # growing heap would make it quadratic.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            self._load_rows(disk, skipped)
        finally:
            if gc_was_enabled:
                gc.enable()
        for cls, count in skipped.items():
            log.warning("store: %d stored %s objects left on disk (class not loaded)", count, cls)
        self._tombstones = disk.tombstones()
        self._tomb_floor = meta.tombstone_floor
        self._generation = start
        self._committed = start
        self._log_floor = start
        self._prune_tombstones()

    def _load_rows(self, disk: Disk, skipped: dict[str, int]) -> None:
        loads = orjson.loads
        shapes = self._shapes
        volatile = self._volatile
        versions = self._versions
        shared: dict[Any, Any] = {}
        deltas = disk.deltas()
        created = self._created
        for ref, cls, gen, data, made in disk.rows():
            shape = shapes.get(cls)
            if shape is None or cls in volatile:
                skipped[cls] = skipped.get(cls, 0) + 1
                continue
            try:
                stored = loads(data)
                if type(stored) is not dict:
                    raise TypeError(f"a {type(stored).__name__}, not an object")
                updates = deltas.get(ref)
                if updates is not None:
                    gen = apply_deltas(stored, updates, gen)
                record, extras = shape.restore(stored, shared)
            except (ValueError, TypeError) as exc:
                # Left on disk untouched for inspection; the rest of the store still loads.
                log.error("store: stored %s %s is unreadable: %s", cls, ref, exc)
                self.unreadable.append(ref)
                continue
            self._install(cls, shape, ref, record)
            versions[ref] = gen
            if made:
                created[ref] = made
            if extras:
                self._extras[ref] = extras

    async def close(self) -> None:
        """Flush what is pending, stop the writer thread and close the file.

        Raises StoreError when pending writes could not be written (they are then lost).
        """
        self._accepting = False
        writer = self._writer_process
        if writer is None:
            return
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._writer is not None:
            await self._writer
            self._writer = None
        unflushed = self._has_pending()
        try:
            await writer.stop(None if unflushed else self._generation)
        except DiskProcessError as exc:
            log.warning("store: closing %s: %s", self._path, exc)
        finally:
            self._writer_process = None
            if self._lock is not None:
                lockfile.release(self._lock)
                self._lock = None
        if unflushed:
            raise StoreError(f"store {self._path} closed with unwritten changes") from (
                self._last_error
            )

    # ------------------------------------------------------------------ reads

    def get(self, cls: str, ref: str) -> dict[str, Any] | None:
        """The live record (do not mutate it), or None."""
        return self._tables[cls].get(ref)

    def table(self, cls: str) -> dict[str, dict[str, Any]]:
        """The live table ref -> record (do not mutate it)."""
        return self._tables[cls]

    def classes(self) -> list[str]:
        """The names of every table."""
        return list(self._tables)

    def class_of(self, ref: str) -> str | None:
        return self._class_of.get(ref)

    def ref_of_uuid(self, cls: str, uuid: str) -> str | None:
        if cls not in self._tables:
            raise KeyError(cls)
        index = self._by_uuid.get(cls)
        return None if index is None else index.get(uuid)

    def refs_by_name_label(self, cls: str, label: str) -> list[str]:
        if cls not in self._tables:
            raise KeyError(cls)
        index = self._by_label.get(cls)
        if index is None:
            return []
        refs = index.get(label)
        return [] if refs is None else list(refs)

    def version(self, ref: str) -> int:
        """The generation of the last write to this object (0 if unknown)."""
        return self._versions.get(ref, 0)

    def created(self, ref: str) -> int:
        """The generation that created this object (0 if unknown: older than the record)."""
        return self._created.get(ref, 0)

    @property
    def generation(self) -> int:
        """The newest generation handed out."""
        return self._generation

    @property
    def committed(self) -> int:
        """The newest generation whose write (and every earlier one) is durable."""
        return self._committed

    @property
    def durable(self) -> bool:
        return self._durable

    @property
    def tombstone_floor(self) -> int:
        """Deletions at or below this generation may have been forgotten."""
        return self._tomb_floor

    def extras(self, ref: str) -> dict[str, Any] | None:
        """Stored fields of this object that the current description no longer has."""
        return self._extras.get(ref)

    # ------------------------------------------------------------------ writes

    def create(self, cls: str, ref: str, record: dict[str, Any]) -> int:
        """Add a record (holding every field, in field order); returns its generation."""
        shape = self._shapes[cls]
        self._check_accepting()
        if ref in self._class_of:
            raise ValueError(f"{ref} already exists (in {self._class_of[ref]})")
        data = self._encode(cls, record, None)
        gen = self._generation = self._generation + 1
        self._install(cls, shape, ref, record)
        self._versions[ref] = gen
        self._created[ref] = gen
        if data is not None:
            self._pending[ref] = _Pending(cls, gen, _WHOLE, data)
        self._after_write(cls, ref, gen, "add")
        return gen

    def update(self, cls: str, ref: str, changes: dict[str, Any]) -> int:
        """Replace whole field values; the record is replaced, never mutated in place."""
        table = self._tables[cls]
        self._check_accepting()
        old = table.get(ref)
        if old is None:
            raise KeyError(f"{cls} {ref} does not exist")
        for name in changes:
            if name not in old:
                raise KeyError(f"{cls} has no field {name!r}")
        new = {**old, **changes}
        entry = self._pending.get(ref)
        if entry is not None and entry.kind == _WHOLE:
            data = self._encode(cls, new, self._extras.get(ref))
        else:
            data = self._encode(cls, changes, None)
        gen = self._generation = self._generation + 1
        table[ref] = new
        if "uuid" in changes and cls in self._by_uuid and old["uuid"] != new["uuid"]:
            index = self._by_uuid[cls]
            if index.get(old["uuid"]) == ref:
                del index[old["uuid"]]
            index[new["uuid"]] = ref
        if (
            "name_label" in changes
            and cls in self._by_label
            and old["name_label"] != new["name_label"]
        ):
            self._unlabel(cls, ref, old["name_label"])
            self._by_label[cls].setdefault(new["name_label"], {})[ref] = None
        self._versions[ref] = gen
        if data is not None:
            if entry is None:
                self._pending[ref] = _Pending(cls, gen, _FIELDS, data, changes)
            elif entry.kind == _WHOLE:
                entry.gen, entry.data = gen, data
            else:
                assert entry.fields is not None
                entry.gen, entry.data, entry.fields = gen, None, {**entry.fields, **changes}
        self._after_write(cls, ref, gen, "mod")
        return gen

    def touch(self, cls: str, ref: str) -> int:
        """A 'mod' with no field change (so watchers re-read the object)."""
        record = self._tables[cls].get(ref)
        self._check_accepting()
        if record is None:
            raise KeyError(f"{cls} {ref} does not exist")
        gen = self._generation = self._generation + 1
        self._versions[ref] = gen
        if self._durable and cls not in self._volatile:
            # No field changes: an empty update still records the object's new generation.
            entry = self._pending.get(ref)
            if entry is None:
                self._pending[ref] = _Pending(cls, gen, _FIELDS, b"{}", {})
            else:
                entry.gen = gen
        self._after_write(cls, ref, gen, "mod")
        return gen

    def delete(self, cls: str, ref: str) -> int:
        """Remove a record, leaving a tombstone for event.from callers."""
        table = self._tables[cls]
        self._check_accepting()
        record = table.pop(ref, None)
        if record is None:
            raise KeyError(f"{cls} {ref} does not exist")
        gen = self._generation = self._generation + 1
        del self._class_of[ref]
        self._versions.pop(ref, None)
        self._created.pop(ref, None)
        self._extras.pop(ref, None)
        uuid_index = self._by_uuid.get(cls)
        if uuid_index is not None and uuid_index.get(record.get("uuid", "")) == ref:
            del uuid_index[record.get("uuid", "")]
        if cls in self._by_label:
            self._unlabel(cls, ref, record.get("name_label", ""))
        tomb = (gen, cls, ref, time.time())
        self._tombstones.append(tomb)
        if self._durable and cls not in self._volatile:
            self._pending_tombstones.append(tomb)
            self._pending[ref] = _Pending(cls, gen, _GONE, None)
        if len(self._tombstones) >= self._tomb_check_at:
            self._prune_tombstones()
        self._after_write(cls, ref, gen, "del")
        return gen

    async def sync(self) -> None:
        """Return once every write made before the call is on disk (fsync'd).

        Raises StoreError when the batch holding those writes failed.
        """
        if self._pending or self._pending_tombstones:
            wake = self._wake
            if wake is not None and not wake.is_set():
                wake.set()  # also cuts short the pause after a failed batch
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            await fut
        elif self._inflight is not None:
            fut = asyncio.get_running_loop().create_future()
            self._inflight.waiters.append(fut)
            await fut
        elif self._committed < self._generation:
            self._announce_idle()  # writes that need no disk: committed now

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``callback`` synchronously after each write; returns the unsubscribe."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def on_commit(self, callback: Callable[[int], None]) -> Callable[[], None]:
        """Call ``callback(committed)`` each time ``committed`` advances; returns the
        unsubscribe. Runs on the event loop, after the commit's ``sync()`` waiters are woken."""
        self._commit_callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._commit_callbacks:
                self._commit_callbacks.remove(callback)

        return unsubscribe

    def changes_since(self, generation: int) -> tuple[list[Change], bool]:
        """The writes after ``generation``, oldest first; False when the in-memory change
        log no longer reaches back that far (the caller must scan the tables instead)."""
        if generation >= self._generation:
            return [], True
        if generation < self._log_floor:
            return [], False
        start = bisect.bisect_right(self._log, generation, key=lambda c: c.generation)
        return self._log[start:], True

    def deleted_since(self, generation: int) -> list[tuple[str, str, int]]:
        """Every deletion after ``generation`` as (cls, ref, gen), oldest first."""
        start = bisect.bisect_right(self._tombstones, generation, key=lambda t: t[0])
        return [(cls, ref, gen) for gen, cls, ref, _ in self._tombstones[start:]]

    # ------------------------------------------------------------------ internals

    def _check_accepting(self) -> None:
        if not self._accepting:
            raise RuntimeError("store is not open")

    def _encode(
        self, cls: str, record: dict[str, Any], extras: dict[str, Any] | None
    ) -> bytes | None:
        """The stored form, made at write time so a value that cannot be stored is refused
        before anything changes; None when the class is not stored."""
        if not self._durable or cls in self._volatile:
            return None
        return orjson.dumps({**record, **extras} if extras else record)

    def _install(self, cls: str, shape: Shape, ref: str, record: dict[str, Any]) -> None:
        self._tables[cls][ref] = record
        self._class_of[ref] = cls
        if shape.has_uuid:
            self._by_uuid[cls][record.get("uuid", "")] = ref
        if shape.has_label:
            self._by_label[cls].setdefault(record.get("name_label", ""), {})[ref] = None

    def _unlabel(self, cls: str, ref: str, label: Any) -> None:
        refs = self._by_label[cls].get(label)
        if refs is not None:
            refs.pop(ref, None)
            if not refs:
                del self._by_label[cls][label]

    def _after_write(self, cls: str, ref: str, gen: int, op: str) -> None:
        if self._durable and cls not in self._volatile:
            wake = self._wake
            if wake is not None and not wake.is_set():
                wake.set()
        elif not self._announce_scheduled:
            self._announce_soon()
        change = Change(gen, cls, ref, op)
        entries = self._log
        entries.append(change)
        if len(entries) >= 2 * self._log_size:
            del entries[: len(entries) - self._log_size]
            self._log_floor = entries[0].generation - 1
        for callback in tuple(self._subscribers):
            try:
                callback(change)
            except Exception:
                log.exception("store: change subscriber %r failed", callback)

    def _announce_soon(self) -> None:
        """A write with nothing to put on disk: committed once the current burst ends."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._announce_idle()
            return
        self._announce_scheduled = True
        loop.call_soon(self._announce_idle)

    def _announce_idle(self) -> None:
        self._announce_scheduled = False
        if not self._has_pending() and self._inflight is None:
            self._announce(self._generation)

    def _announce(self, generation: int) -> None:
        if generation <= self._committed:
            return
        self._committed = generation
        for callback in tuple(self._commit_callbacks):
            try:
                callback(generation)
            except Exception:
                log.exception("store: commit callback %r failed", callback)

    def _prune_tombstones(self) -> None:
        """Forget tombstones beyond the newest ``tombstone_keep`` that are also older
        than ``tombstone_age`` seconds."""
        tombs = self._tombstones
        excess = len(tombs) - self._tomb_keep
        self._tomb_check_at = max(len(tombs), self._tomb_keep) + max(self._tomb_keep // 100, 1)
        if excess <= 0:
            return
        cutoff = time.time() - self._tomb_age
        drop = 0
        while drop < excess and tombs[drop][3] < cutoff:
            drop += 1
        if drop == 0:
            return
        upto = tombs[drop - 1][0]
        del tombs[:drop]
        self._tomb_floor = max(self._tomb_floor, upto)
        if self._durable:
            self._pending_prune = upto

    def _requeue(self, ref: str, old: _Pending) -> None:
        """Put back an entry of a failed batch, under whatever was written since."""
        new = self._pending.get(ref)
        if new is None:
            self._pending[ref] = old
        elif new.kind == _FIELDS and old.kind == _FIELDS:
            assert old.fields is not None and new.fields is not None
            new.fields, new.data = {**old.fields, **new.fields}, None
        elif new.kind == _FIELDS and old.kind == _WHOLE:
            record = self._tables[new.cls][ref]
            new.kind, new.fields = _WHOLE, None
            new.data = self._encode(new.cls, record, self._extras.get(ref))

    async def _compact(self) -> None:
        """Fold stored updates into their rows; a failure only leaves them for next time."""
        writer = self._writer_process
        assert writer is not None
        # Counted afresh either way: a failed fold is retried after another threshold.
        self._stored_deltas = 0
        try:
            await writer.ensure_running()
            await writer.call("compact")
        except Exception as exc:
            log.warning("store: compacting %s failed: %s", self._path, exc)

    def _has_pending(self) -> bool:
        return bool(self._pending or self._pending_tombstones or self._pending_prune is not None)

    async def _run_writer(self) -> None:
        wake = self._wake
        assert wake is not None
        while True:
            if not self._has_pending():
                if self._closing:
                    return
                await wake.wait()
                wake.clear()
                continue
            if await self._commit_pending():
                if self._stored_deltas >= self._compact_after:
                    await self._compact()
                continue
            if self._closing:
                return
            try:
                await asyncio.wait_for(wake.wait(), _RETRY_DELAY)
            except TimeoutError:
                pass
            wake.clear()

    async def _commit_pending(self) -> bool:
        """Write everything queued as one transaction; False when it failed."""
        pending, self._pending = self._pending, {}
        tombs, self._pending_tombstones = self._pending_tombstones, []
        prune, self._pending_prune = self._pending_prune, None
        inflight = self._inflight = _InFlight(self._waiters)
        self._waiters = []
        taken = self._generation
        batch = Batch(tombstones=tombs, prune_tombstones_upto=prune)
        if self._generation + RESERVE // 2 > self._reserved:
            batch.generation = self._generation
            batch.reserved = self._generation + RESERVE
        for ref, entry in pending.items():
            if entry.kind == _FIELDS:
                data = entry.data
                if data is None:
                    data = entry.data = orjson.dumps(entry.fields)
                batch.deltas.append((entry.gen, ref, data))
            elif entry.kind == _WHOLE:
                assert entry.data is not None
                made = self._created.get(ref, entry.gen)
                batch.rows.append((ref, entry.cls, entry.gen, entry.data, made))
            else:
                batch.deletes.append((ref,))
        writer = self._writer_process
        assert writer is not None
        try:
            if await writer.ensure_running():
                log.warning("store: the writer process of %s had gone; restarted", self._path)
            await writer.commit(batch)
        except Exception as exc:
            log.error("store: writing %d changes to %s failed: %s", len(pending), self._path, exc)
            self._last_error = exc
            # Put the batch back behind anything written since, so a retry carries it.
            for ref, entry in pending.items():
                self._requeue(ref, entry)
            self._pending_tombstones[:0] = tombs
            if prune is not None and self._pending_prune is None:
                self._pending_prune = prune
            self._inflight = None
            error = StoreError(f"cannot write to store {self._path}: {exc}")
            error.__cause__ = exc
            _wake_all(inflight.waiters, error)
            return False
        self._last_error = None
        self._reserved = max(self._reserved, batch.reserved)
        self._stored_deltas += len(batch.deltas)
        self.batches_committed += 1
        self.rows_written += len(pending)
        self._inflight = None
        _wake_all(inflight.waiters, None)
        # Writes since the batch was taken are either queued (the next batch covers them) or
        # need no disk; with nothing queued, everything handed out so far is durable.
        self._announce(taken if self._has_pending() else self._generation)
        return True
