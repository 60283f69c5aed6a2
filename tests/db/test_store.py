"""The object store: reads, writes, indexes, generations, events and reloading from disk."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from openxapi.db.records import fixup_for
from openxapi.db.store import Change, Store
from openxapi.spec import types as T
from openxapi.spec.model import Api, load
from openxapi.spec.values import DateTime

API = load()


def sample(t: T.Type, api: Api, tag: str) -> Any:
    """A value of type ``t`` that differs from every default."""
    if t == T.STRING:
        return f"s-{tag}"
    if t == T.INT:
        return (1 << 40) + len(tag)
    if t == T.FLOAT:
        return 1.25 + len(tag)
    if t == T.BOOL:
        return True
    if t == T.DATETIME:
        return DateTime("20240229T23:59:58Z")
    if isinstance(t, T.Ref):
        return f"OpaqueRef:{t.cls}-{tag}"
    if isinstance(t, T.Enum):
        return api.enums[t.name][-1]
    if isinstance(t, T.Set):
        return [sample(t.elem, api, tag + "a"), sample(t.elem, api, tag + "b")]
    if isinstance(t, T.Map):
        key = sample(t.key, api, tag)
        if not isinstance(key, str):
            key = str(key)  # int-keyed maps travel with string keys
        return {key: sample(t.value, api, tag), "nested": sample(t.value, api, tag + "n")}
    if isinstance(t, T.Option):
        return sample(t.inner, api, tag)
    raise AssertionError(f"no sample for {t}")


def full_record(cls: str, n: int) -> tuple[str, dict[str, Any]]:
    """A (ref, record) pair with every field of ``cls`` set, in description order."""
    record = {f.name: sample(f.type, API, f"{f.name}{n}") for f in API.classes[cls].fields}
    if "uuid" in record:
        record["uuid"] = f"uuid-{cls}-{n}"
    return f"OpaqueRef:{cls}-{n:08d}", record


def vm(n: int, **values: Any) -> tuple[str, dict[str, Any]]:
    """A VM (ref, record) holding defaults plus ``values``."""
    record: dict[str, Any] = {}
    for f in API.classes["VM"].fields:
        d = f.default
        record[f.name] = list(d) if isinstance(d, list) else dict(d) if isinstance(d, dict) else d
    record["uuid"] = f"uuid-VM-{n}"
    record.update(values)
    return f"OpaqueRef:VM-{n:08d}", record


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    s = Store(API, db_path)
    await s.open()
    yield s
    await s.close()


async def reopen(s: Store, path: Path) -> Store:
    await s.close()
    fresh = Store(API, path)
    await fresh.open()
    return fresh


# ---------------------------------------------------------------- persistence


async def test_every_field_of_every_class_survives_close_and_open(
    store: Store, db_path: Path
) -> None:
    expected = {}
    for c in API.db_classes():
        ref, record = full_record(c.name, 1)
        store.create(c.name, ref, record)
        expected[(c.name, ref)] = record
    await store.sync()
    store = await reopen(store, db_path)
    try:
        for (cls, ref), record in expected.items():
            got = store.get(cls, ref)
            assert got == record
            assert list(got) == [f.name for f in API.classes[cls].fields]
            for f in API.classes[cls].fields:
                if f.type == T.DATETIME:
                    assert type(got[f.name]) is DateTime
                if f.type == T.FLOAT:
                    assert type(got[f.name]) is float
    finally:
        await store.close()


async def test_datetime_int_keyed_maps_nested_maps_and_odd_floats_round_trip(
    store: Store, db_path: Path
) -> None:
    metrics_ref, metrics = full_record("VM_metrics", 3)
    metrics["VCPUs_utilisation"] = {"0": 0.5, "1": 1e-300, "2": -0.0, "3": math.nan}
    metrics["VCPUs_CPU"] = {"0": 3, "12": 7}
    metrics["start_time"] = DateTime("19991231T23:59:59Z")
    store.create("VM_metrics", metrics_ref, metrics)
    ref, rec = vm(1, platform={"a": "1"}, HVM_shadow_multiplier=math.inf)
    store.create("VM", ref, rec)
    await store.sync()
    store = await reopen(store, db_path)
    try:
        got = store.get("VM_metrics", metrics_ref)
        assert got is not None
        util = got["VCPUs_utilisation"]
        assert util["0"] == 0.5 and util["1"] == 1e-300
        assert math.copysign(1.0, util["2"]) == -1.0
        assert math.isnan(util["3"])
        assert got["VCPUs_CPU"] == {"0": 3, "12": 7}
        assert got["start_time"] == "19991231T23:59:59Z"
        assert type(got["start_time"]) is DateTime
        vm_rec = store.get("VM", ref)
        assert vm_rec is not None and vm_rec["platform"] == {"a": "1"}
        # orjson has no spelling for infinities; a non-finite float comes back as NaN
        assert math.isnan(vm_rec["HVM_shadow_multiplier"])
    finally:
        await store.close()


async def test_odd_values_in_enum_and_ref_fields_load_unchanged(
    store: Store, db_path: Path
) -> None:
    ref1, rec1 = vm(1, resident_on=None, power_state=7, allowed_operations=[["odd"], None])
    ref2, rec2 = vm(2, resident_on="OpaqueRef:host", allowed_operations=["start", "start"])
    store.create("VM", ref1, rec1)
    store.create("VM", ref2, rec2)
    store = await reopen(store, db_path)
    try:
        assert store.get("VM", ref1) == rec1
        assert store.get("VM", ref2) == rec2
    finally:
        await store.close()


def test_fixups_restore_datetimes_inside_sets_maps_and_options() -> None:
    fix = fixup_for(T.parse("(string -> datetime) map"))
    assert fix is not None
    out = fix({"a": "20200101T00:00:00Z"})
    assert type(out["a"]) is DateTime
    fix_set = fixup_for(T.parse("datetime set"))
    assert fix_set is not None
    assert all(type(x) is DateTime for x in fix_set(["20200101T00:00:00Z"]))
    fix_opt = fixup_for(T.parse("datetime option"))
    assert fix_opt is not None
    assert fix_opt(None) is None
    assert type(fix_opt("20200101T00:00:00Z")) is DateTime
    assert fixup_for(T.parse("(string -> string) map")) is None


async def test_generations_increase_and_continue_after_reopen(store: Store, db_path: Path) -> None:
    ref, rec = vm(1)
    g1 = store.create("VM", ref, rec)
    g2 = store.update("VM", ref, {"name_label": "x"})
    g3 = store.touch("VM", ref)
    assert 0 < g1 < g2 < g3 == store.generation
    assert store.version(ref) == g3
    await store.sync()
    store = await reopen(store, db_path)
    try:
        assert store.generation == g3
        assert store.version(ref) == g3
        g4 = store.update("VM", ref, {"name_label": "y"})
        assert g4 == g3 + 1
    finally:
        await store.close()


async def test_writes_pending_at_close_are_flushed(store: Store, db_path: Path) -> None:
    ref, rec = vm(1, name_label="unsynced")
    store.create("VM", ref, rec)
    store = await reopen(store, db_path)
    try:
        got = store.get("VM", ref)
        assert got is not None and got["name_label"] == "unsynced"
    finally:
        await store.close()


async def test_store_refuses_writes_when_not_open(db_path: Path) -> None:
    s = Store(API, db_path)
    ref, rec = vm(1)
    with pytest.raises(RuntimeError):
        s.create("VM", ref, rec)
    await s.open()
    with pytest.raises(RuntimeError):
        await s.open()
    s.create("VM", ref, rec)
    await s.close()
    with pytest.raises(RuntimeError):
        s.update("VM", ref, {"name_label": "late"})


async def test_tombstones_survive_reopen(store: Store, db_path: Path) -> None:
    ref1, rec1 = vm(1)
    ref2, rec2 = vm(2)
    store.create("VM", ref1, rec1)
    store.create("VM", ref2, rec2)
    mark = store.generation
    d1 = store.delete("VM", ref1)
    assert store.deleted_since(mark) == [("VM", ref1, d1)]
    assert store.deleted_since(d1) == []
    await store.sync()
    store = await reopen(store, db_path)
    try:
        assert store.get("VM", ref1) is None
        assert store.class_of(ref1) is None
        assert store.version(ref1) == 0
        assert store.deleted_since(mark) == [("VM", ref1, d1)]
        assert store.get("VM", ref2) is not None
    finally:
        await store.close()


async def test_tombstones_beyond_the_kept_number_and_age_are_forgotten(db_path: Path) -> None:
    s = Store(API, db_path, tombstone_keep=10, tombstone_age=0.0)
    await s.open()
    gens = []
    for i in range(40):
        ref, rec = vm(i)
        s.create("VM", ref, rec)
        gens.append(s.delete("VM", ref))
    kept = s.deleted_since(0)
    assert 10 <= len(kept) < 40
    assert [g for _, _, g in kept] == gens[-len(kept) :]
    floor = s.tombstone_floor
    assert floor == gens[-len(kept) - 1]
    s = await reopen(s, db_path)
    try:
        assert s.tombstone_floor == floor
        assert len(s.deleted_since(0)) <= len(kept)
        assert s.deleted_since(0)[-1][2] == gens[-1]
    finally:
        await s.close()


async def test_recent_tombstones_are_kept_even_beyond_the_number(db_path: Path) -> None:
    s = Store(API, db_path, tombstone_keep=5, tombstone_age=3600.0)
    await s.open()
    for i in range(30):
        ref, rec = vm(i)
        s.create("VM", ref, rec)
        s.delete("VM", ref)
    assert len(s.deleted_since(0)) == 30
    await s.close()


# ---------------------------------------------------------------- indexes and reads


async def test_indexes_follow_updates_and_deletes(store: Store) -> None:
    ref1, rec1 = vm(1, name_label="web")
    ref2, rec2 = vm(2, name_label="web")
    store.create("VM", ref1, rec1)
    store.create("VM", ref2, rec2)
    assert store.class_of(ref1) == "VM"
    assert store.ref_of_uuid("VM", "uuid-VM-1") == ref1
    assert store.refs_by_name_label("VM", "web") == [ref1, ref2]
    store.update("VM", ref1, {"name_label": "db", "uuid": "uuid-new"})
    assert store.refs_by_name_label("VM", "web") == [ref2]
    assert store.refs_by_name_label("VM", "db") == [ref1]
    assert store.ref_of_uuid("VM", "uuid-VM-1") is None
    assert store.ref_of_uuid("VM", "uuid-new") == ref1
    store.delete("VM", ref2)
    assert store.refs_by_name_label("VM", "web") == []
    assert store.ref_of_uuid("VM", "uuid-VM-2") is None
    assert store.class_of(ref2) is None
    assert list(store.table("VM")) == [ref1]
    # a class with a uuid but no name_label
    ref, rec = full_record("VM_metrics", 1)
    store.create("VM_metrics", ref, rec)
    assert store.ref_of_uuid("VM_metrics", rec["uuid"]) == ref
    assert store.refs_by_name_label("VM_metrics", "anything") == []


async def test_indexes_are_rebuilt_on_load(store: Store, db_path: Path) -> None:
    ref, rec = vm(1, name_label="kept")
    store.create("VM", ref, rec)
    store = await reopen(store, db_path)
    try:
        assert store.ref_of_uuid("VM", "uuid-VM-1") == ref
        assert store.refs_by_name_label("VM", "kept") == [ref]
        assert store.class_of(ref) == "VM"
    finally:
        await store.close()


async def test_update_replaces_the_record_and_keeps_field_order(store: Store) -> None:
    ref, rec = vm(1)
    store.create("VM", ref, rec)
    before = store.get("VM", ref)
    store.update("VM", ref, {"other_config": {"k": "v"}, "name_label": "n"})
    after = store.get("VM", ref)
    assert after is not None and before is not None
    assert after is not before
    assert before["name_label"] == ""
    assert after["other_config"] == {"k": "v"} and after["name_label"] == "n"
    assert list(after) == list(before)


async def test_programming_errors_raise_and_change_nothing(store: Store) -> None:
    ref, rec = vm(1)
    store.create("VM", ref, rec)
    gen = store.generation
    with pytest.raises(ValueError):
        store.create("VM", ref, rec)
    with pytest.raises(ValueError):
        store.create("VM_metrics", ref, full_record("VM_metrics", 1)[1])
    with pytest.raises(KeyError):
        store.update("VM", "OpaqueRef:missing", {"name_label": "x"})
    with pytest.raises(KeyError):
        store.update("VM", ref, {"no_such_field": 1})
    with pytest.raises(KeyError):
        store.delete("VM", "OpaqueRef:missing")
    with pytest.raises(KeyError):
        store.touch("VM", "OpaqueRef:missing")
    with pytest.raises(KeyError):
        store.get("NoSuchClass", ref)
    with pytest.raises(KeyError):
        store.create("NoSuchClass", "OpaqueRef:z", {})
    with pytest.raises(TypeError):
        store.update("VM", ref, {"other_config": {"k": object()}})
    assert store.generation == gen
    got = store.get("VM", ref)
    assert got is not None and got["other_config"] == {}


# ---------------------------------------------------------------- change stream


async def test_changes_since_lists_writes_in_order(store: Store) -> None:
    ref1, rec1 = vm(1)
    ref2, rec2 = vm(2)
    start = store.generation
    g1 = store.create("VM", ref1, rec1)
    g2 = store.create("VM", ref2, rec2)
    g3 = store.update("VM", ref1, {"name_label": "a"})
    g4 = store.delete("VM", ref2)
    changes, complete = store.changes_since(start)
    assert complete
    assert changes == [
        Change(g1, "VM", ref1, "add"),
        Change(g2, "VM", ref2, "add"),
        Change(g3, "VM", ref1, "mod"),
        Change(g4, "VM", ref2, "del"),
    ]
    assert store.changes_since(g2) == ([changes[2], changes[3]], True)
    assert store.changes_since(g4) == ([], True)


async def test_changes_since_reports_when_the_log_is_too_short(db_path: Path) -> None:
    s = Store(API, db_path, change_log_size=10)
    await s.open()
    ref, rec = vm(1)
    s.create("VM", ref, rec)
    for i in range(50):
        s.update("VM", ref, {"name_label": str(i)})
    assert s.changes_since(1) == ([], False)
    recent, complete = s.changes_since(s.generation - 5)
    assert complete and len(recent) == 5
    s = await reopen(s, db_path)
    try:
        # before the reopen nothing is in the in-memory log any more
        assert s.changes_since(s.generation - 1) == ([], False)
        assert s.changes_since(s.generation) == ([], True)
    finally:
        await s.close()


async def test_subscribers_see_each_write_until_they_unsubscribe(store: Store) -> None:
    seen: list[Change] = []

    def broken(change: Change) -> None:
        raise RuntimeError("subscriber bug")

    unsubscribe = store.subscribe(seen.append)
    store.subscribe(broken)
    ref, rec = vm(1)
    g = store.create("VM", ref, rec)
    t = store.touch("VM", ref)
    unsubscribe()
    store.delete("VM", ref)
    assert seen == [Change(g, "VM", ref, "add"), Change(t, "VM", ref, "mod")]


# ---------------------------------------------------------------- modes


async def test_not_durable_never_touches_disk(tmp_path: Path) -> None:
    path = tmp_path / "never.db"
    for s in (Store(API, path, durable=False), Store(API, None)):
        await s.open()
        ref, rec = vm(1)
        s.create("VM", ref, rec)
        s.update("VM", ref, {"name_label": "x"})
        await s.sync()
        s.delete("VM", ref)
        await s.sync()
        assert s.generation == 3
        await s.close()
    assert list(tmp_path.iterdir()) == []


async def test_volatile_classes_stay_in_memory(db_path: Path) -> None:
    s = Store(API, db_path, volatile=frozenset({"message", "VM_metrics"}))
    await s.open()
    mref, mrec = full_record("message", 1)
    s.create("message", mref, mrec)
    vref, vrec = full_record("VM_metrics", 1)
    g = s.create("VM_metrics", vref, vrec)
    ref, rec = vm(1)
    s.create("VM", ref, rec)
    assert s.get("message", mref) == mrec
    assert s.changes_since(g - 1)[0][0] == Change(g, "VM_metrics", vref, "add")
    await s.close()
    s = Store(API, db_path, volatile=frozenset({"message", "VM_metrics"}))
    await s.open()
    try:
        assert s.table("message") == {}
        assert s.get("VM_metrics", vref) is None
        assert s.get("VM", ref) is not None
    finally:
        await s.close()
    with pytest.raises(KeyError):
        Store(API, db_path, volatile=frozenset({"no_such_class"}))


# ---------------------------------------------------------------- upgrades


def _rewrite_row(path: Path, ref: str, edit: Any) -> None:
    conn = sqlite3.connect(path)
    (data,) = conn.execute("SELECT data FROM objects WHERE ref = ?", (ref,)).fetchone()
    stored = orjson.loads(data)
    stored = edit(stored)
    conn.execute("UPDATE objects SET data = ? WHERE ref = ?", (orjson.dumps(stored), ref))
    conn.commit()
    conn.close()


def _stored(path: Path, ref: str) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    (data,) = conn.execute("SELECT data FROM objects WHERE ref = ?", (ref,)).fetchone()
    conn.close()
    result: dict[str, Any] = orjson.loads(data)
    return result


async def test_missing_fields_get_defaults_and_unknown_fields_stay_on_disk(
    store: Store, db_path: Path
) -> None:
    ref, rec = vm(1, name_label="old", tags=["t"])
    store.create("VM", ref, rec)
    await store.close()

    def downgrade(stored: dict[str, Any]) -> dict[str, Any]:
        # an older daemon: no 'groups' or 'NVRAM', an extra field, a different order
        del stored["groups"]
        del stored["NVRAM"]
        shuffled = dict(reversed(list(stored.items())))
        shuffled["legacy_field"] = {"keep": "me"}
        return shuffled

    _rewrite_row(db_path, ref, downgrade)
    store = Store(API, db_path)
    await store.open()
    try:
        got = store.get("VM", ref)
        assert got is not None
        assert list(got) == [f.name for f in API.classes["VM"].fields]
        assert got["groups"] == [] and got["NVRAM"] == {}
        assert got["groups"] is not API.classes["VM"].field_map["groups"].default
        assert got["name_label"] == "old" and got["tags"] == ["t"]
        assert "legacy_field" not in got
        assert store.extras(ref) == {"legacy_field": {"keep": "me"}}
        store.update("VM", ref, {"name_label": "new"})
    finally:
        await store.close()
    on_disk = _stored(db_path, ref)
    assert on_disk["legacy_field"] == {"keep": "me"}
    assert on_disk["name_label"] == "new"


async def test_rows_of_classes_no_longer_described_are_left_on_disk(
    store: Store, db_path: Path
) -> None:
    ref, rec = vm(1)
    store.create("VM", ref, rec)
    await store.close()
    conn = sqlite3.connect(db_path)
    conn.execute(
        "INSERT INTO objects (ref, cls, gen, data) VALUES (?, ?, ?, ?)",
        ("OpaqueRef:gone", "retired_class", 1, b'{"x": 1}'),
    )
    conn.commit()
    conn.close()
    store = Store(API, db_path)
    await store.open()
    try:
        assert store.class_of("OpaqueRef:gone") is None
        store.update("VM", ref, {"name_label": "still works"})
    finally:
        await store.close()
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT cls FROM objects WHERE ref = 'OpaqueRef:gone'").fetchone() == (
        "retired_class",
    )
    conn.close()


async def test_an_unreadable_row_is_reported_and_left_alone(store: Store, db_path: Path) -> None:
    ref, rec = vm(1)
    store.create("VM", ref, rec)
    await store.close()
    conn = sqlite3.connect(db_path)
    conn.executemany(
        "INSERT INTO objects (ref, cls, gen, data) VALUES (?, 'VM', 1, ?)",
        [("OpaqueRef:torn", b'{"uuid": "x", "name_'), ("OpaqueRef:list", b"[1, 2]")],
    )
    conn.commit()
    conn.close()
    store = Store(API, db_path)
    await store.open()
    try:
        assert sorted(store.unreadable) == ["OpaqueRef:list", "OpaqueRef:torn"]
        assert store.get("VM", ref) == rec
        assert store.class_of("OpaqueRef:torn") is None
    finally:
        await store.close()
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT count(*) FROM objects").fetchone() == (3,)
    conn.close()
