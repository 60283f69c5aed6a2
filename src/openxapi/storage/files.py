"""Disk readers and writers over plain files: the pieces the file-based drivers share.

A :class:`FileReader` serves a disk from one or more open files through a table of
extents (guest offset → file and offset), so a qcow2 chain mapped by ``qemu-img map`` is
read with ``pread`` and no qemu process; a sparse raw file is mapped with
``SEEK_DATA``/``SEEK_HOLE``. A :class:`SegmentWriter` writes guest bytes to file offsets
the same way.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from openxapi.storage.driver import Buffer, DiskReader, DiskWriter, Extent, VdiInfo


@dataclass(frozen=True, slots=True)
class Piece:
    """``length`` guest bytes from ``start``: zeros when ``fd`` is -1, else the bytes of
    file ``fd`` from ``offset``."""

    start: int
    length: int
    fd: int
    offset: int


def merge(pieces: list[Piece]) -> list[Piece]:
    """Adjacent pieces that continue each other become one (fewer, larger reads)."""
    out: list[Piece] = []
    for p in pieces:
        if p.length <= 0:
            continue
        if out:
            q = out[-1]
            contiguous = q.start + q.length == p.start and q.fd == p.fd
            if contiguous and (p.fd < 0 or q.offset + q.length == p.offset):
                out[-1] = Piece(q.start, q.length + p.length, q.fd, q.offset)
                continue
        out.append(p)
    return out


class FileReader(DiskReader):
    """A disk read from open files through a piece table; closes the files it owns."""

    def __init__(self, size: int, pieces: list[Piece], fds: list[int]) -> None:
        self.size = size
        self.pieces = merge(pieces)
        self._starts = [p.start for p in self.pieces]
        self._fds = fds

    def extents(self) -> list[Extent]:
        return [Extent(p.start, p.length, p.fd >= 0) for p in self.pieces]

    def read(self, offset: int, length: int) -> bytes:
        i = bisect.bisect_right(self._starts, offset) - 1
        p = self.pieces[i]
        if p.fd < 0:
            return bytes(length)
        data = os.pread(p.fd, length, p.offset + offset - p.start)
        if len(data) < length:  # a file shorter than its map: the rest reads as zeros
            data += bytes(length - len(data))
        return data

    async def close(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def sparse_pieces(fd: int, size: int) -> list[Piece]:
    """The data and hole runs of a raw file (``SEEK_DATA``/``SEEK_HOLE``), up to ``size``."""
    pieces: list[Piece] = []
    pos = 0
    end = min(size, os.fstat(fd).st_size)
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
            data = end
        data = min(data, end)
        if data > pos:
            pieces.append(Piece(pos, data - pos, -1, 0))
        if data >= end:
            break
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        pieces.append(Piece(data, hole - data, fd, data))
        pos = hole
    if end < size:
        pieces.append(Piece(end, size - end, -1, 0))
    return pieces


def raw_file_reader(path: str, size: int | None = None) -> FileReader:
    """A reader of a raw (possibly sparse) file; blocking, so call it in an executor."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        total = os.fstat(fd).st_size if size is None else size
        return FileReader(total, sparse_pieces(fd, total), [fd])
    except BaseException:
        os.close(fd)
        raise


class SegmentWriter(DiskWriter):
    """Writes guest bytes into one file through a table of (guest start, length, file
    offset) segments covering the disk; ``finish`` and ``discard`` do the rest."""

    def __init__(
        self,
        size: int,
        fd: int,
        segments: list[tuple[int, int, int]],
        finish: Callable[[], Awaitable[VdiInfo]],
        discard: Callable[[], Awaitable[None]],
    ) -> None:
        self.size = size
        self.fd = fd
        self._segments = sorted(segments)
        self._starts = [s[0] for s in self._segments]
        self._finish = finish
        self._discard = discard
        self._done = False

    def write(self, offset: int, data: Buffer) -> None:
        if offset < 0 or offset + len(data) > self.size:
            raise ValueError("write beyond the end of the disk")
        view = memoryview(data)
        while view:
            i = bisect.bisect_right(self._starts, offset) - 1
            start, length, host = self._segments[i]
            n = min(len(view), start + length - offset)
            written = os.pwrite(self.fd, view[:n], host + offset - start)
            view = view[written:]
            offset += written

    def flush(self) -> None:
        os.fsync(self.fd)

    async def commit(self) -> VdiInfo:
        if self._done:
            raise RuntimeError("writer already finished")
        self._done = True
        return await self._finish()

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        await self._discard()
