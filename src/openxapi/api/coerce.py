"""Typed unmarshalling of call parameters, driven by the API description.

The wire gives plain values (XML-RPC ints may arrive as strings); each parameter is
checked and converted to its declared type, or FIELD_TYPE_ERROR names it (rulings §3).
"""

from __future__ import annotations

from typing import Any

from openxapi.errors import ApiError
from openxapi.spec import types as T
from openxapi.spec.values import DateTime, parse_datetime


class CoercionError(Exception):
    """A value does not fit its type; the caller names the parameter."""


INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _int(v: Any) -> int:
    if type(v) is int:
        result = v
    elif isinstance(v, str):
        s = v.strip()
        body = s[1:] if s[:1] in "+-" else s
        if not body.isdigit() or not body.isascii():
            raise CoercionError
        result = int(s)
    elif isinstance(v, int) and not isinstance(v, bool):
        result = int(v)
    else:
        raise CoercionError
    if not INT64_MIN <= result <= INT64_MAX:
        raise CoercionError
    return result


def _float(v: Any) -> float:
    if type(v) is float:
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            raise CoercionError from None
    raise CoercionError


def coerce(v: Any, t: T.Type, enums: dict[str, list[str]]) -> Any:
    """Convert ``v`` to type ``t`` or raise CoercionError."""
    if isinstance(t, T.Prim):
        name = t.name
        if name == "string":
            if type(v) is str or isinstance(v, str):
                return str(v) if type(v) is not str else v
            raise CoercionError
        if name == "int":
            return _int(v)
        if name == "bool":
            if type(v) is bool:
                return v
            raise CoercionError
        if name == "float":
            return _float(v)
        if name == "datetime":
            if isinstance(v, DateTime):
                return v
            if isinstance(v, str):
                try:
                    return parse_datetime(v)
                except ValueError:
                    raise CoercionError from None
            raise CoercionError
    if isinstance(t, T.Ref):
        if isinstance(v, str):
            return str(v)
        raise CoercionError
    if isinstance(t, T.Enum):
        if isinstance(v, str) and v in enums.get(t.name, ()):
            return str(v)
        raise CoercionError
    if isinstance(t, T.Set):
        if not isinstance(v, list):
            raise CoercionError
        return [coerce(x, t.elem, enums) for x in v]
    if isinstance(t, T.Map):
        if not isinstance(v, dict):
            raise CoercionError
        out: dict[str, Any] = {}
        for k, x in v.items():
            key = coerce(k, t.key, enums)
            out[str(key)] = coerce(x, t.value, enums)
        return out
    if isinstance(t, T.Record):
        if not isinstance(v, dict):
            raise CoercionError
        return v
    if isinstance(t, T.Option):
        return None if v is None else coerce(v, t.inner, enums)
    # Shapes the description only names in prose: pass through unchecked.
    return v


def coerce_param(v: Any, t: T.Type, name: str, enums: dict[str, list[str]]) -> Any:
    """Coerce one call parameter, naming it in FIELD_TYPE_ERROR on failure."""
    try:
        return coerce(v, t, enums)
    except (CoercionError, RecursionError):
        raise ApiError("FIELD_TYPE_ERROR", name) from None
