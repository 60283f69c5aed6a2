"""API types as small immutable trees, parsed from the description's type strings.

The same tree drives argument checking, default values, persistence and the
where-expression serialisation, so every layer agrees on what a value is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True, slots=True)
class Type:
    """Base of all API types."""


@dataclass(frozen=True, slots=True)
class Prim(Type):
    """string, int, float, bool or datetime."""

    name: str


@dataclass(frozen=True, slots=True)
class Void(Type):
    """The result type of messages that return nothing."""


@dataclass(frozen=True, slots=True)
class Ref(Type):
    """A reference to an object of class ``cls``."""

    cls: str


@dataclass(frozen=True, slots=True)
class Enum(Type):
    name: str


@dataclass(frozen=True, slots=True)
class Set(Type):
    elem: Type


@dataclass(frozen=True, slots=True)
class Map(Type):
    key: Type
    value: Type


@dataclass(frozen=True, slots=True)
class Record(Type):
    """A whole object record of class ``cls`` (``"<class>"`` for event snapshots)."""

    cls: str


@dataclass(frozen=True, slots=True)
class Option(Type):
    inner: Type


@dataclass(frozen=True, slots=True)
class Opaque(Type):
    """A shape the description names in prose only (e.g. ``an event batch``)."""

    text: str


STRING = Prim("string")
INT = Prim("int")
FLOAT = Prim("float")
BOOL = Prim("bool")
DATETIME = Prim("datetime")
VOID = Void()

_PRIMS = {"string": STRING, "int": INT, "float": FLOAT, "bool": BOOL, "datetime": DATETIME}
_MAP_RE = re.compile(r"^\((.*)\) map$")


def _split_arrow(inner: str) -> tuple[str, str]:
    """Split ``K -> V`` at the top-level arrow (V may itself be a parenthesised map)."""
    depth = 0
    for i in range(len(inner) - 1):
        ch = inner[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and inner.startswith(" -> ", i):
            return inner[:i], inner[i + 4 :]
    raise ValueError(f"not a map type: ({inner}) map")


@cache
def parse(text: str) -> Type:
    """Parse a type string such as ``(string -> enum vm_operations) map``."""
    s = text.strip()
    if s == "void":
        return VOID
    if s in _PRIMS:
        return _PRIMS[s]
    m = _MAP_RE.match(s)
    if m:
        k, v = _split_arrow(m.group(1))
        return Map(parse(k), parse(v))
    if s.endswith(" set"):
        return Set(parse(s[: -len(" set")]))
    if s.endswith(" option"):
        return Option(parse(s[: -len(" option")]))
    if s.endswith(" ref"):
        return Ref(s[: -len(" ref")])
    if s.endswith(" record"):
        return Record(s[: -len(" record")])
    if s.startswith("enum "):
        return Enum(s[len("enum ") :])
    return Opaque(s)


def render(t: Type) -> str:
    """The inverse of :func:`parse` (used by the generator and for messages)."""
    if isinstance(t, Prim):
        return t.name
    if isinstance(t, Void):
        return "void"
    if isinstance(t, Ref):
        return f"{t.cls} ref"
    if isinstance(t, Enum):
        return f"enum {t.name}"
    if isinstance(t, Set):
        return f"{render(t.elem)} set"
    if isinstance(t, Map):
        return f"({render(t.key)} -> {render(t.value)}) map"
    if isinstance(t, Record):
        return f"{t.cls} record"
    if isinstance(t, Option):
        return f"{render(t.inner)} option"
    if isinstance(t, Opaque):
        return t.text
    raise TypeError(t)
