"""Field values rendered as the reference database stores them, as strings.

``get_all_records_where`` compares strings, so a filter such as
``field "tags" = "('a' 'b')"`` only matches when our rendering of a value is the one
xapi's database would hold: ints in decimal, bools as ``true``/``false``, floats as
C's ``%.18g``, datetimes as ``YYYYMMDDTHH:MM:SSZ``, enums, refs and strings as they
are, and sets and maps as quoted s-expressions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from functools import cache
from typing import Any

from openxapi.spec import types as T
from openxapi.spec.values import DateTime, from_datetime, parse_datetime

Converter = Callable[[Any], str]

# The reference keeps, inside sets and maps, only the longest prefix of each string
# that is legal in XML: it stops at the first control character other than tab,
# newline and carriage return (and at anything that is not valid UTF-8).
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


def _string(value: Any) -> str:
    if type(value) is str:
        return value
    if value is None:
        return ""
    return str(value)


def _int(value: Any) -> str:
    if type(value) is int:
        return str(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return str(int(value))


def _float(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return str(value)
    if value is None:
        return ""
    text = format(value, ".18g")
    if text == "nan" and math.copysign(1.0, value) < 0:
        return "-nan"  # glibc's spelling, which xapi's printf uses
    return text


def _bool(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    return "true" if value else "false"


def _datetime(value: Any) -> str:
    if isinstance(value, DateTime):
        return str(value)
    if isinstance(value, datetime):
        return str(from_datetime(value))
    if value is None:
        return ""
    text = str(value)
    try:
        return str(parse_datetime(text))
    except ValueError:
        return text


_PRIMS: dict[str, Converter] = {
    "string": _string,
    "int": _int,
    "float": _float,
    "bool": _bool,
    "datetime": _datetime,
}


def sexpr_string(text: str) -> str:
    """One quoted atom of the DB's s-expression form (``'it\\'s'``), XML-truncated."""
    bad = _XML_ILLEGAL.search(text)
    if bad is not None:
        text = text[: bad.start()]
    if "\\" in text or "'" in text:
        text = text.replace("\\", "\\\\").replace("'", "\\'")
    return "'" + text + "'"


def _set_converter(elem: Converter) -> Converter:
    def convert(value: Any) -> str:
        if not value:
            return "()"
        items: Iterable[Any] = value
        return "(" + " ".join([sexpr_string(elem(x)) for x in items]) + ")"

    return convert


def _map_converter(key: Converter, val: Converter) -> Converter:
    def convert(value: Any) -> str:
        if not value:
            return "()"
        pairs: Mapping[Any, Any] = value
        return (
            "("
            + " ".join(
                [
                    "(" + sexpr_string(key(k)) + " " + sexpr_string(val(v)) + ")"
                    for k, v in pairs.items()
                ]
            )
            + ")"
        )

    return convert


def _option_converter(inner: Converter) -> Converter:
    def convert(value: Any) -> str:
        if value is None:
            return "()"
        return "(" + sexpr_string(inner(value)) + ")"

    return convert


@cache
def converter_for(t: T.Type) -> Converter:
    """The function rendering values of type ``t`` (built once per type, then reused)."""
    if isinstance(t, T.Prim):
        return _PRIMS[t.name]
    if isinstance(t, (T.Enum, T.Ref)):
        return _string
    if isinstance(t, T.Set):
        return _set_converter(converter_for(t.elem))
    if isinstance(t, T.Map):
        return _map_converter(converter_for(t.key), converter_for(t.value))
    if isinstance(t, T.Option):
        # The reference stores only optional refs, as a set of zero or one element.
        return _option_converter(converter_for(t.inner))
    raise TypeError(f"values of type {T.render(t)} are not stored in the database")


def db_string(value: Any, t: T.Type) -> str:
    """The string the reference database holds for ``value`` of type ``t``.

    Where-expressions compare these strings, so they must be byte-for-byte xapi's.
    """
    if isinstance(t, T.Prim):
        return _PRIMS[t.name](value)
    if isinstance(t, (T.Enum, T.Ref)):
        return value if type(value) is str else _string(value)
    return converter_for(t)(value)
