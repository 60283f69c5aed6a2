"""A small ISO 9660 image writer: a few files in the root directory, with Joliet names.

Enough for the answer-file CDs VM.sysprep inserts (the reference makes them with
``genisoimage -r -J``): a primary volume descriptor whose names are upper-case
``NAME.EXT;1`` (ISO 9660 level 1 style), a Joliet supplementary descriptor keeping the
names as given (Windows reads these), path tables and one root directory per descriptor.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

SECTOR = 2048
_SYSTEM_AREA = 16
_JOLIET_ESCAPE = b"%/E"  # UCS-2 level 3
_D_CHARS = re.compile(r"[^A-Z0-9_]")


def _both16(n: int) -> bytes:
    return struct.pack("<H", n) + struct.pack(">H", n)


def _both32(n: int) -> bytes:
    return struct.pack("<I", n) + struct.pack(">I", n)


def _pad(data: bytes, size: int = SECTOR) -> bytes:
    return data + b"\0" * (-len(data) % size)


def _sectors(length: int) -> int:
    return max(1, -(-length // SECTOR))


def iso_name(name: str) -> str:
    """A name as the primary descriptor holds it: ``STEM.EXT;1`` in d-characters."""
    stem, _, ext = name.upper().rpartition(".")
    if not stem:
        stem, ext = ext, ""
    stem, ext = _D_CHARS.sub("_", stem)[:8] or "_", _D_CHARS.sub("_", ext)[:3]
    return f"{stem}.{ext};1"


def _dir_date(when: datetime) -> bytes:
    return bytes([when.year - 1900, when.month, when.day, when.hour, when.minute, when.second, 0])


def _volume_date(when: datetime) -> bytes:
    return when.strftime("%Y%m%d%H%M%S00").encode() + b"\0"


def _record(extent: int, length: int, name: bytes, is_dir: bool, when: datetime) -> bytes:
    body = (
        bytes([0])
        + _both32(extent)
        + _both32(length)
        + _dir_date(when)
        + bytes([2 if is_dir else 0, 0, 0])
        + _both16(1)
        + bytes([len(name)])
        + name
    )
    body += b"\0" * ((len(body) + 1) % 2)  # a record's length (which counts the pad) is even
    return bytes([len(body) + 1]) + body


def _path_table(root: int, big_endian: bool) -> bytes:
    fmt = ">IH" if big_endian else "<IH"
    return bytes([1, 0]) + struct.pack(fmt, root, 1) + b"\0\0"


@dataclass(frozen=True, slots=True)
class _Layout:
    total: int
    path_tables: tuple[int, int, int, int]  # L, M (primary); L, M (Joliet)
    roots: tuple[int, int]  # primary, Joliet
    files: tuple[int, ...]


def _layout(files: list[tuple[str, bytes]]) -> _Layout:
    next_free = _SYSTEM_AREA + 3  # primary, Joliet, terminator
    tables = (next_free, next_free + 1, next_free + 2, next_free + 3)
    roots = (next_free + 4, next_free + 5)
    next_free += 6
    starts = []
    for _name, data in files:
        starts.append(next_free)
        next_free += _sectors(len(data))
    return _Layout(next_free, tables, roots, tuple(starts))


def _text(value: str, size: int, joliet: bool) -> bytes:
    raw = value.encode("utf-16-be") if joliet else value.upper().encode("ascii", "replace")
    return (raw + (b"\0 " * size if joliet else b" " * size))[:size]


def _descriptor(
    layout: _Layout, volume_id: str, root_record: bytes, joliet: bool, when: datetime
) -> bytes:
    tables = layout.path_tables[2:] if joliet else layout.path_tables[:2]
    stamp = _volume_date(when)
    d = bytearray(SECTOR)
    d[0:7] = bytes([2 if joliet else 1]) + b"CD001\x01"
    d[8:40] = _text("", 32, joliet)
    d[40:72] = _text(volume_id, 32, joliet)
    d[80:88] = _both32(layout.total)
    if joliet:
        d[88:91] = _JOLIET_ESCAPE
    d[120:124] = _both16(1)
    d[124:128] = _both16(1)
    d[128:132] = _both16(SECTOR)
    d[132:140] = _both32(10)
    d[140:144] = struct.pack("<I", tables[0])
    d[148:152] = struct.pack(">I", tables[1])
    d[156:190] = root_record
    for start, size in ((190, 128), (318, 128), (446, 128), (574, 128)):
        d[start : start + size] = _text("", size, joliet)
    d[702:813] = _text("", 111, joliet)
    d[813:830] = stamp
    d[830:847] = stamp
    d[847:864] = b"0" * 16 + b"\0"
    d[864:881] = b"0" * 16 + b"\0"
    d[881] = 1
    return bytes(d)


def _root_dir(
    layout: _Layout, files: list[tuple[str, bytes]], joliet: bool, when: datetime
) -> bytes:
    root = layout.roots[1 if joliet else 0]
    out = _record(root, SECTOR, b"\0", True, when) + _record(root, SECTOR, b"\1", True, when)
    entries = []
    for (name, data), start in zip(files, layout.files, strict=True):
        encoded = name.encode("utf-16-be") if joliet else iso_name(name).encode("ascii")
        entries.append((encoded, _record(start, len(data), encoded, False, when)))
    for _key, rec in sorted(entries):
        out += rec
    if len(out) > SECTOR:
        raise ValueError("too many files for one directory sector")
    return _pad(out)


def build(files: dict[str, bytes], volume_id: str = "CDROM") -> bytes:
    """An ISO 9660 image holding ``files`` (name → contents) in its root directory."""
    items = sorted(files.items())
    for name, _data in items:
        if not name or "/" in name or len(name) > 64:
            raise ValueError(f"unusable file name {name!r}")
    when = datetime.now(UTC).replace(microsecond=0)
    layout = _layout(items)
    primary_root = _record(layout.roots[0], SECTOR, b"\0", True, when)
    joliet_root = _record(layout.roots[1], SECTOR, b"\0", True, when)
    terminator = _pad(b"\xffCD001\x01")
    parts = [
        b"\0" * (SECTOR * _SYSTEM_AREA),
        _descriptor(layout, volume_id, primary_root, False, when),
        _descriptor(layout, volume_id, joliet_root, True, when),
        terminator,
        _pad(_path_table(layout.roots[0], False)),
        _pad(_path_table(layout.roots[0], True)),
        _pad(_path_table(layout.roots[1], False)),
        _pad(_path_table(layout.roots[1], True)),
        _root_dir(layout, items, False, when),
        _root_dir(layout, items, True, when),
    ]
    for _name, data in items:
        parts.append(_pad(data) if data else b"\0" * SECTOR)
    image = b"".join(parts)
    assert len(image) == layout.total * SECTOR
    return image
