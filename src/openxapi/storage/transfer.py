"""Moving disk contents in and out: raw streams, VHD and qcow2 images, disk-to-disk copy.

Everything streams with bounded memory whatever the disk size: raw data flows between a
byte source and a driver's reader or writer in blocks of a few MiB, zero blocks are never
written (new contents start all-zero) and zero runs are produced without reading. File
I/O runs in executors, pipelined one block ahead so disk and network overlap. VHD and
qcow2 go through ``qemu-img`` with a temporary file in the SR's scratch directory, since
neither format can be produced or consumed as a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid as uuidlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from openxapi.storage import qemu_img
from openxapi.storage.driver import DiskReader, DiskWriter
from openxapi.storage.errors import BackendFailure, BadImage, ImageTooLarge
from openxapi.storage.files import raw_file_reader

CHUNK = 4 << 20
BLOCK = 1 << 16
ZERO_BLOCK = bytes(BLOCK)
ZERO_CHUNK = bytes(CHUNK)

#: Export/import formats: the name clients pass → qemu-img's name for it.
QEMU_FORMATS = {"raw": "raw", "vhd": "vpc", "qcow2": "qcow2"}
CONTENT_TYPES = {
    "raw": "application/octet-stream",
    "vhd": "application/vhd",
    "qcow2": "application/x-qemu-disk",
}
#: The largest disk a VHD can describe (the reference's limit, 2040 GiB).
VHD_MAX_SIZE = 2040 << 30

Progress = Callable[[int], None]


class ByteSource(Protocol):
    """Anything with ``async read(n) -> bytes`` returning b"" at the end (a BodyStream)."""

    async def read(self, n: int = ...) -> bytes: ...


def _slices(reader: DiskReader, chunk: int) -> Iterator[tuple[int, int, bool]]:
    for ext in reader.extents():
        pos, end = ext.start, ext.start + ext.length
        while pos < end:
            n = min(chunk, end - pos)
            yield pos, n, ext.data
            pos += n


def _start_read(reader: DiskReader, offset: int, n: int, data: bool) -> asyncio.Future[bytes]:
    loop = asyncio.get_running_loop()
    if data and reader.blocking:
        return loop.run_in_executor(None, reader.read, offset, n)
    fut: asyncio.Future[bytes] = loop.create_future()
    fut.set_result(reader.read(offset, n) if data else ZERO_CHUNK[:n])
    return fut


async def export_raw(
    reader: DiskReader, progress: Progress | None = None, chunk: int = CHUNK
) -> AsyncIterator[bytes]:
    """The disk's bytes, exactly ``reader.size`` of them, reading one chunk ahead."""
    jobs = _slices(reader, chunk)
    first = next(jobs, None)
    if first is None:
        return
    current = _start_read(reader, *first)
    sent = 0
    try:
        for job in jobs:
            ahead = _start_read(reader, *job)
            data = await current
            current = ahead
            yield data
            sent += len(data)
            if progress is not None:
                progress(sent)
        data = await current
        yield data
        sent += len(data)
        if progress is not None:
            progress(sent)
    finally:
        if not current.done():
            with contextlib.suppress(Exception):
                await current


ZERO_PREFIX = bytes(16)


def nonzero_runs(data: bytes | bytearray, n: int | None = None) -> Iterator[tuple[int, int]]:
    """(offset, length) of the runs of ``data[:n]`` that are not all-zero 64 KiB blocks.

    A block whose first bytes are not zero (most blocks of real data) is decided without
    copying it; only the others are compared in full.
    """
    n = len(data) if n is None else n
    start = -1
    for i in range(0, n, BLOCK):
        end = min(i + BLOCK, n)
        zero = data.startswith(ZERO_PREFIX[: end - i], i, end) and (
            data[i:end] == ZERO_BLOCK[: end - i]
        )
        if zero:
            if start >= 0:
                yield start, i - start
                start = -1
        elif start < 0:
            start = i
    if start >= 0:
        yield start, n - start


class _BlockSink:
    """Writes blocks to a DiskWriter skipping zeros, with at most one write in flight.

    ``put`` hands over a buffer the caller must not touch again until the next ``put`` or
    ``drain`` has returned (double buffering: fill one while the other is written).
    """

    def __init__(self, writer: DiskWriter) -> None:
        self.writer = writer
        self._pending: asyncio.Future[None] | None = None

    def _write_runs(self, offset: int, data: bytes | bytearray, n: int) -> None:
        view = memoryview(data)
        for start, length in nonzero_runs(data, n):
            self.writer.write(offset + start, view[start : start + length])

    async def put(self, offset: int, data: bytes | bytearray, n: int | None = None) -> None:
        await self.drain()
        size = len(data) if n is None else n
        if self.writer.blocking:
            loop = asyncio.get_running_loop()
            self._pending = loop.run_in_executor(None, self._write_runs, offset, data, size)
        else:
            self._write_runs(offset, data, size)

    async def drain(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            await pending

    async def flush(self) -> None:
        await self.drain()
        if self.writer.blocking:
            await asyncio.get_running_loop().run_in_executor(None, self.writer.flush)
        else:
            self.writer.flush()


async def import_raw(
    source: ByteSource, writer: DiskWriter, progress: Progress | None = None
) -> int:
    """Read raw bytes until the source ends and write them from offset 0; returns how many
    arrived. More bytes than the disk holds: ImageTooLarge. The writer is flushed, not
    committed: the caller decides.

    Two buffers of :data:`CHUNK` bytes alternate: one fills from the source while the
    other is being written, so the network and the disk work at the same time and each
    byte is copied once in this process.
    """
    sink = _BlockSink(writer)
    buffers = (bytearray(CHUNK), bytearray(CHUNK))
    current = 0
    filled = 0
    offset = 0
    total = 0
    try:
        while True:
            data = await source.read(CHUNK - filled)
            if not data:
                break
            total += len(data)
            if total > writer.size:
                raise ImageTooLarge(total)
            buf = buffers[current]
            buf[filled : filled + len(data)] = data
            filled += len(data)
            if filled == CHUNK:
                await sink.put(offset, buf)
                offset += CHUNK
                current ^= 1
                filled = 0
                if progress is not None:
                    progress(total)
        if filled:
            await sink.put(offset, buffers[current], filled)
        await sink.flush()
    finally:
        with contextlib.suppress(Exception):
            await sink.drain()
    if progress is not None:
        progress(total)
    return total


async def copy_disk(
    reader: DiskReader,
    writer: DiskWriter,
    *,
    base: DiskReader | None = None,
    into: DiskReader | None = None,
    progress: Progress | None = None,
) -> None:
    """Write ``reader``'s contents to ``writer`` (flushed, not committed).

    With ``into`` (VDI.copy onto an existing disk, read through ``into``) the disk keeps
    ``into``'s bytes beyond the source's end; with ``base`` too, also wherever ``reader``
    equals ``base`` — only the blocks that changed since ``base`` are taken from ``reader``.
    """
    if reader.size > writer.size:
        raise ImageTooLarge(reader.size)
    loop = asyncio.get_running_loop()

    async def read(r: DiskReader, offset: int, n: int) -> bytes:
        if offset >= r.size:
            return bytes(n)
        m = min(n, r.size - offset)
        data = await _read_range(loop, r, offset, m)
        return data + bytes(n - m) if m < n else data

    sink = _BlockSink(writer)
    done = 0
    try:
        if into is None:
            for offset, n, data in _slices(reader, CHUNK):
                if data:
                    await sink.put(offset, await _start_read(reader, offset, n, True))
                done += n
                if progress is not None:
                    progress(done)
        else:
            for offset in range(0, writer.size, CHUNK):
                n = min(CHUNK, writer.size - offset)
                out = bytearray(await read(into, offset, n))
                src_end = max(0, min(n, reader.size - offset))
                if src_end:
                    src = await read(reader, offset, src_end)
                    old = await read(base, offset, src_end) if base is not None else None
                    for i in range(0, src_end, BLOCK):
                        j = min(i + BLOCK, src_end)
                        if old is None or src[i:j] != old[i:j]:
                            out[i:j] = src[i:j]
                await sink.put(offset, bytes(out))
                done += n
                if progress is not None:
                    progress(done * reader.size // max(writer.size, 1))
        await sink.flush()
    finally:
        with contextlib.suppress(Exception):
            await sink.drain()


async def _read_range(loop: asyncio.AbstractEventLoop, r: DiskReader, offset: int, n: int) -> bytes:
    """Bytes of any range, across extents."""
    out: list[bytes] = []
    end = offset + n
    for ext in r.extents():
        s, e = max(ext.start, offset), min(ext.start + ext.length, end)
        if s >= e:
            continue
        if not ext.data:
            out.append(bytes(e - s))
        elif r.blocking:
            out.append(await loop.run_in_executor(None, r.read, s, e - s))
        else:
            out.append(r.read(s, e - s))
    return b"".join(out)


# ---- images through qemu-img -------------------------------------------------------------


def _scratch_file(scratch: Path, suffix: str) -> Path:
    return scratch / f".tmp-{uuidlib.uuid4()}{suffix}"


async def _unlink(*paths: Path) -> None:
    def drop() -> None:
        for p in paths:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    await asyncio.get_running_loop().run_in_executor(None, drop)


async def _raw_to_file(reader: DiskReader, path: Path) -> None:
    """Write the disk to a sparse raw file (holes where it reads zero)."""
    loop = asyncio.get_running_loop()
    fd = await loop.run_in_executor(
        None, os.open, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
    )
    try:
        await loop.run_in_executor(None, os.ftruncate, fd, reader.size)
        for offset, n, data in _slices(reader, CHUNK):
            if data:
                block = await _start_read(reader, offset, n, True)
                for start, length in nonzero_runs(block):
                    chunk = block[start : start + length]
                    await loop.run_in_executor(None, os.pwrite, fd, chunk, offset + start)
    finally:
        await loop.run_in_executor(None, os.close, fd)


async def _file_stream(path: Path, chunk: int = CHUNK) -> AsyncIterator[bytes]:
    """A file's bytes, read one chunk ahead; the file is removed once open."""
    loop = asyncio.get_running_loop()
    fd = await loop.run_in_executor(None, os.open, path, os.O_RDONLY | os.O_CLOEXEC)
    await _unlink(path)
    try:
        offset = 0
        current = loop.run_in_executor(None, os.pread, fd, chunk, offset)
        while True:
            data = await current
            if not data:
                break
            offset += len(data)
            current = loop.run_in_executor(None, os.pread, fd, chunk, offset)
            yield data
    finally:
        await loop.run_in_executor(None, os.close, fd)


async def export_image(
    reader: DiskReader, fmt: str, scratch: Path
) -> tuple[AsyncIterator[bytes], int]:
    """The disk as a VHD or qcow2 image: (stream of its bytes, its length). The image is
    built in a temporary file that is gone once the stream ends."""
    if fmt == "vhd" and reader.size > VHD_MAX_SIZE:
        raise ImageTooLarge(VHD_MAX_SIZE)
    raw = _scratch_file(scratch, ".raw")
    image = _scratch_file(scratch, "." + fmt)
    options = "subformat=dynamic,force_size=on" if fmt == "vhd" else "cluster_size=65536"
    try:
        await _raw_to_file(reader, raw)
        await qemu_img.convert(raw, "raw", image, QEMU_FORMATS[fmt], options)
        size = (await asyncio.get_running_loop().run_in_executor(None, os.stat, image)).st_size
    except BaseException:
        await _unlink(raw, image)
        raise
    await _unlink(raw)
    return _file_stream(image), size


async def receive_file(source: ByteSource, path: Path, progress: Progress | None = None) -> int:
    """Store everything the source sends in a new file; returns the byte count."""
    loop = asyncio.get_running_loop()
    fd = await loop.run_in_executor(
        None, os.open, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
    )
    total = 0
    pending: asyncio.Future[Any] | None = None
    try:
        parts: list[bytes] = []
        buffered = 0
        while True:
            data = await source.read(CHUNK)
            if data:
                parts.append(data)
                buffered += len(data)
                total += len(data)
            if buffered >= CHUNK or (not data and parts):
                if pending is not None:
                    await pending
                pending = loop.run_in_executor(None, os.write, fd, b"".join(parts))
                parts, buffered = [], 0
                if progress is not None:
                    progress(total)
            if not data:
                break
        if pending is not None:
            await pending
            pending = None
    finally:
        if pending is not None:
            with contextlib.suppress(Exception):
                await pending
        await loop.run_in_executor(None, os.close, fd)
    return total


async def check_image(path: Path, fmt: str) -> int:
    """The virtual size of an uploaded image; BadImage if it is not a self-contained
    image of that format (a backing file or an external data file could name any file
    on the host)."""
    try:
        info = await qemu_img.info(path, QEMU_FORMATS[fmt])
    except BackendFailure as e:
        raise BadImage(f"not a valid {fmt} image: {e.stderr.strip()}") from None
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise BadImage("the image refers to a backing file")
    data = info.get("format-specific", {}).get("data", {})
    if isinstance(data, dict) and data.get("data-file"):
        raise BadImage("the image refers to an external data file")
    return int(info.get("virtual-size", 0))


async def import_image(
    source: ByteSource,
    fmt: str,
    writer: DiskWriter,
    scratch: Path,
    progress: Progress | None = None,
) -> int:
    """Receive a VHD or qcow2 image and write its contents (flushed, not committed);
    returns the bytes received. An image larger than the disk: ImageTooLarge."""
    upload = _scratch_file(scratch, "." + fmt)
    raw = _scratch_file(scratch, ".raw")
    try:
        total = await receive_file(source, upload, progress)
        size = await check_image(upload, fmt)
        if size > writer.size:
            raise ImageTooLarge(size)
        try:
            await qemu_img.convert(upload, QEMU_FORMATS[fmt], raw, "raw")
        except BackendFailure as e:
            raise BadImage(f"the {fmt} image cannot be read: {e.stderr.strip()}") from None
        await _unlink(upload)
        loop = asyncio.get_running_loop()
        reader = await loop.run_in_executor(None, raw_file_reader, str(raw), size)
        try:
            await copy_disk(reader, writer)
        finally:
            await reader.close()
        return total
    finally:
        await _unlink(upload, raw)
