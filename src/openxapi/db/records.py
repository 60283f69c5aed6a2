"""How one class's records are laid out in memory and rebuilt from their stored form.

Records go on the wire in description field order, so a record read back from disk is
rebuilt in the class's current field order: fields the stored row lacks (an upgrade added
them) take their default, and stored fields the description no longer has are set aside so
the next write of the object carries them back to disk unchanged.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Callable
from typing import Any

from openxapi.spec import types as T
from openxapi.spec.model import Class
from openxapi.spec.values import DateTime

Fixup = Callable[[Any], Any]


def _datetime(value: Any) -> Any:
    return DateTime(value) if isinstance(value, str) else value


def _float(value: Any) -> Any:
    # orjson writes NaN and infinities as null; a float position holding null was one of them.
    return math.nan if value is None else value


def fixup_for(t: T.Type) -> Fixup | None:
    """A function restoring the Python value of type ``t`` from its JSON form, or None
    when JSON already gives back the right value (most types)."""
    if t == T.DATETIME:
        return _datetime
    if t == T.FLOAT:
        return _float
    if isinstance(t, T.Option):
        inner = fixup_for(t.inner)
        if inner is None:
            return None
        return lambda v: None if v is None else inner(v)
    if isinstance(t, T.Set):
        elem = fixup_for(t.elem)
        if elem is None:
            return None
        return lambda v: [elem(x) for x in v] if isinstance(v, list) else v
    if isinstance(t, T.Map):
        key = fixup_for(t.key)
        value = fixup_for(t.value)
        if key is None and value is None:
            return None
        kf: Fixup = key or (lambda k: k)
        vf: Fixup = value or (lambda x: x)
        return lambda v: {kf(k): vf(x) for k, x in v.items()} if isinstance(v, dict) else v
    return None


def _is_mutable(value: Any) -> bool:
    return isinstance(value, (list, dict))


def _shared_scalar(t: T.Type) -> bool:
    """Fields whose values repeat across objects: enum values and references (most of
    them OpaqueRef:NULL or a handful of hosts and SRs)."""
    return isinstance(t, T.Enum | T.Ref)


def _shared_set(t: T.Type) -> bool:
    return isinstance(t, T.Set) and isinstance(t.elem, T.Enum)


class Shape:
    """The field layout of one class: order, defaults and value fix-ups for loading."""

    __slots__ = (
        "cls",
        "defaults",
        "fixups",
        "get_scalars",
        "has_label",
        "has_uuid",
        "known_keys",
        "names",
        "scalars",
        "sets",
    )

    def __init__(self, cls: Class) -> None:
        self.cls = cls.name
        self.names: tuple[str, ...] = tuple(f.name for f in cls.fields)
        # The key tuple of the last stored row that matched ``names``: orjson hands out the
        # same key objects row after row, so comparing against it is an identity check.
        self.known_keys: tuple[str, ...] = ()
        self.defaults: tuple[tuple[str, Any], ...] = tuple((f.name, f.default) for f in cls.fields)
        fixups = []
        for f in cls.fields:
            fix = fixup_for(f.type)
            if fix is not None:
                fixups.append((f.name, fix))
        self.fixups: tuple[tuple[str, Fixup], ...] = tuple(fixups)
        self.scalars: tuple[str, ...] = tuple(f.name for f in cls.fields if _shared_scalar(f.type))
        # itemgetter of one name returns the value itself, not a 1-tuple
        self.get_scalars = (
            operator.itemgetter(*self.scalars, *self.scalars[:1]) if self.scalars else None
        )
        self.sets: tuple[str, ...] = tuple(f.name for f in cls.fields if _shared_set(f.type))
        self.has_uuid = "uuid" in cls.field_map
        self.has_label = "name_label" in cls.field_map

    def _learn(self, keys: tuple[str, ...]) -> bool:
        self.known_keys = keys
        return True

    def restore(
        self, stored: dict[str, Any], shared: dict[Any, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The in-memory record for a stored one, plus the stored fields the class no
        longer describes (None when there are none).

        ``shared`` maps repeated values to one copy of each, across the records of a load;
        it keeps the memory of a large store down at little cost.
        """
        extras: dict[str, Any] | None = None
        keys = tuple(stored)
        if keys == self.known_keys or (keys == self.names and self._learn(keys)):
            record = stored
        else:
            record = {}
            for name, default in self.defaults:
                if name in stored:
                    record[name] = stored.pop(name)
                else:
                    record[name] = copy.deepcopy(default) if _is_mutable(default) else default
            extras = stored or None
        if shared is not None:
            _share(self, record, shared)
        for name, fix in self.fixups:
            record[name] = fix(record[name])
        return record, extras


def _share(shape: Shape, record: dict[str, Any], shared: dict[Any, Any]) -> None:
    setdefault = shared.setdefault
    try:
        if shape.get_scalars is not None:
            values = shape.get_scalars(record)
            record.update(zip(shape.scalars, map(setdefault, values, values), strict=False))
        for name in shape.sets:
            value = record[name]
            record[name] = list(map(setdefault, value, value))
    except TypeError:
        pass  # an unhashable value where a string belongs: left as it is
