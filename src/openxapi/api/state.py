"""The server's shared state as handlers see it: description, store, identity, caches."""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

from openxapi.config import Config
from openxapi.db.store import Store
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF, Api, Class
from openxapi.wire import Preencoded, encode_value_json, encode_value_xml
from openxapi.wire.xml_struct_delta import Offsets, encode_indexed, reencode

#: How many changed records keep what re-encoding only their changed members needs.
HOT_RECORDS = 1024


def new_ref() -> str:
    return f"OpaqueRef:{uuidlib.uuid4()}"


def new_uuid() -> str:
    return str(uuidlib.uuid4())


@dataclass(slots=True)
class RecordCache:
    """Encoded records keyed by ref, valid while the object's store version is unchanged.

    This is what makes a 10,000-record get_all_records a join of cached bytes.
    """

    store: Store
    xml: dict[str, tuple[int, Preencoded]] = field(default_factory=dict)
    json: dict[str, tuple[int, Preencoded]] = field(default_factory=dict)
    # Records re-encoded after a change (likely to change again), with their XML member
    # offsets: the next change re-encodes only the members it touched. Bounded, oldest out.
    hot: dict[str, tuple[dict[str, Any], Offsets]] = field(default_factory=dict)

    def encoded(self, ref: str, record: dict[str, Any], codec: str) -> Preencoded:
        version = self.store.version(ref)
        cache = self.xml if codec == "xml" else self.json
        hit = cache.get(ref)
        if hit is not None and hit[0] == version:
            return hit[1]
        if codec == "json":
            value = Preencoded(b"", encode_value_json(record))
        elif hit is None or type(record) is not dict:
            value = Preencoded(encode_value_xml(record), b"")
        else:
            value = Preencoded(self._reencode_xml(ref, hit[1].xml, record), b"")
        cache[ref] = (version, value)
        return value

    def _reencode_xml(self, ref: str, old: bytes, record: dict[str, Any]) -> bytes:
        hot = self.hot
        prev = hot.pop(ref, None)
        done = None if prev is None else reencode(old, prev[1], prev[0], record)
        data, offsets = encode_indexed(record) if done is None else done
        if len(hot) >= HOT_RECORDS:
            del hot[next(iter(hot))]
        hot[ref] = (record, offsets)
        return data

    def forget(self, ref: str) -> None:
        self.xml.pop(ref, None)
        self.json.pop(ref, None)
        self.hot.pop(ref, None)


@dataclass(slots=True)
class ServerState:
    """Everything a handler may use. One instance per running server."""

    api: Api
    store: Store
    config: Config
    host_ref: str = NULL_REF
    pool_ref: str = NULL_REF
    cache: RecordCache = field(init=False)
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cache = RecordCache(self.store)

    def cls(self, name: str) -> Class:
        return self.api.classes[name]

    def record(self, cls: str, ref: str) -> dict[str, Any]:
        """The live record of ``ref`` in table ``cls``, or HANDLE_INVALID [cls, ref]."""
        rec = self.store.get(cls, ref)
        if rec is None:
            raise ApiError("HANDLE_INVALID", cls, ref)
        return rec

    def new_record(self, cls: str, values: dict[str, Any]) -> dict[str, Any]:
        """A full record of ``cls`` in description field order: defaults, then ``values``."""
        out: dict[str, Any] = {}
        for f in self.api.classes[cls].fields:
            if f.name in values:
                out[f.name] = values[f.name]
            else:
                d = f.default
                out[f.name] = d.copy() if isinstance(d, (dict, list)) else d
        if "uuid" in out and not out["uuid"]:
            out["uuid"] = new_uuid()
        return out

    def create(self, cls: str, values: dict[str, Any], ref: str | None = None) -> str:
        """Create an object with defaults filled in; returns its ref (not yet durable)."""
        ref = ref or new_ref()
        self.store.create(cls, ref, self.new_record(cls, values))
        return ref
