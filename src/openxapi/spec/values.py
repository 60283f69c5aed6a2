"""Value types shared by every layer beyond the plain Python ones.

API values are plain Python: str, int, float, bool, list, dict (string keys) — plus
:class:`DateTime` (a ``str`` in xapi's ``YYYYMMDDTHH:MM:SSZ`` form, so the XML-RPC codec
can tag it) and :class:`Int32` (the one place xapi emits ``<i4>``).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

_XAPI_RE = re.compile(
    r"^(\d{4})-?(\d{2})-?(\d{2})T(\d{2}):?(\d{2}):?(\d{2})(?:\.\d+)?(Z|[+-]\d{2}:?\d{2})?$"
)


class DateTime(str):
    """A UTC timestamp spelt ``YYYYMMDDTHH:MM:SSZ`` (xapi's wire form)."""

    __slots__ = ()

    def to_datetime(self) -> datetime:
        return datetime.strptime(self, "%Y%m%dT%H:%M:%SZ").replace(tzinfo=UTC)


class Int32(int):
    """An integer that XML-RPC must carry as ``<i4>`` (event.from's valid_ref_counts)."""

    __slots__ = ()


EPOCH = DateTime("19700101T00:00:00Z")


def from_datetime(dt: datetime) -> DateTime:
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC)
    return DateTime(
        f"{dt.year:04d}{dt.month:02d}{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}Z"
    )


def now() -> DateTime:
    return DateTime(time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime()))


def from_timestamp(ts: float) -> DateTime:
    return DateTime(time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime(ts)))


def parse_datetime(text: str) -> DateTime:
    """Accept xapi's form and RFC 3339; a missing zone means UTC. ValueError otherwise."""
    m = _XAPI_RE.match(text.strip())
    if not m:
        raise ValueError(f"not a datetime: {text!r}")
    y, mo, d, h, mi, s, zone = m.groups()
    dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=UTC)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        dt -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return from_datetime(dt)
