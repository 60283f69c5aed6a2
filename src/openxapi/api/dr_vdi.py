"""The database copy inside a metadata VDI: a small header, then the store file's bytes.

Header (big-endian): magic ``OXAPIDB1``, the copy's store generation (u64) and the length
of the store file that follows (u64). A VDI whose first bytes are not the magic holds no
copy. The copy is written through the SR driver as a whole new disk image, so a reader
never sees half of one.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from openxapi.api.storage_access import Storage
from openxapi.storage.driver import DiskReader

MAGIC = b"OXAPIDB1"
_HEADER = struct.Struct(">8sQQ")
HEADER_SIZE = _HEADER.size


class NoCopy(Exception):
    """The VDI holds no readable database copy (the text says why)."""


@dataclass(frozen=True, slots=True)
class Header:
    generation: int
    length: int


def _read_range(reader: DiskReader, offset: int, length: int) -> bytes:
    """``length`` bytes from ``offset``; holes read as zeros (blocking)."""
    out = bytearray(length)
    end = offset + length
    for ext in reader.extents():
        lo, hi = max(ext.start, offset), min(ext.start + ext.length, end)
        if lo >= hi or not ext.data:
            continue
        out[lo - offset : hi - offset] = reader.read(lo, hi - lo)
    return bytes(out)


async def _read(reader: DiskReader, offset: int, length: int) -> bytes:
    if reader.blocking:
        return await asyncio.to_thread(_read_range, reader, offset, length)
    return _read_range(reader, offset, length)


async def read_copy(
    storage: Storage, vdi: str, *, header_only: bool = False
) -> tuple[Header, bytes]:
    """The header and store-file bytes of the copy in ``vdi``; NoCopy when there is none."""
    rec = storage.state.record("VDI", vdi)
    drv = await storage.driver(rec["SR"])
    with storage.errors(rec["SR"], vdi):
        reader = await drv.open_reader(rec["location"])
    try:
        if reader.size < HEADER_SIZE:
            raise NoCopy("the disk is too small to hold a database")
        magic, generation, length = _HEADER.unpack(await _read(reader, 0, HEADER_SIZE))
        if magic != MAGIC:
            raise NoCopy("the disk holds no database")
        if length > reader.size - HEADER_SIZE:
            raise NoCopy("the database on the disk is truncated")
        header = Header(generation, length)
        if header_only:
            return header, b""
        return header, await _read(reader, HEADER_SIZE, length)
    finally:
        await reader.close()


async def write_copy(storage: Storage, vdi: str, generation: int, data: bytes) -> None:
    """Replace the disk's contents with a copy; ValueError when it does not fit."""
    rec = storage.state.record("VDI", vdi)
    drv = await storage.driver(rec["SR"])
    with storage.errors(rec["SR"], vdi):
        writer = await drv.open_writer(rec["location"])
    try:
        if HEADER_SIZE + len(data) > writer.size:
            raise ValueError(
                f"the database ({len(data)} bytes) does not fit the disk ({writer.size} bytes)"
            )
        blob = _HEADER.pack(MAGIC, generation, len(data)) + data
        if writer.blocking:
            await asyncio.to_thread(writer.write, 0, blob)
            await asyncio.to_thread(writer.flush)
        else:
            writer.write(0, blob)
            writer.flush()
        with storage.errors(rec["SR"], vdi):
            await writer.commit()
    except BaseException:
        await writer.abort()
        raise
