"""The store's writer process: the SQLite connection that commits batches, in a process of
its own.

A commit is SQLite work and an fsync wait. Done on a thread of the daemon, every batch
costs several hand-overs of the interpreter lock between that thread and the event loop,
each a pair of context switches (on a busy virtual machine, the largest cost of a durable
write). In a child process neither side waits for the other's lock: the event loop sends
the batch down a socket and is told, on the same socket, when it is on disk.

The child is a fresh interpreter (``python -m openxapi.db.disk_process FD PATH``) owning
the file's exclusive lock. It runs one request at a time, in order, and exits when the
daemon's end of the socket closes, after finishing what it was given; a daemon killed
mid-commit therefore never leaves a half-written batch, and the next daemon waits for the
lock until the child has let go.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import struct
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

from openxapi.db.disk import Batch, Disk

_HEADER = struct.Struct("!I")
#: How long the daemon waits for the child to finish and exit at close.
_EXIT_WAIT = 30.0


class DiskProcessError(OSError):
    """The writer process failed a request, or is gone."""


# ---------------------------------------------------------------------------- the child


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < n:
        got = sock.recv(n - len(chunks))
        if not got:
            return None
        chunks += got
    return bytes(chunks)


def _run(disk: Disk, op: str, args: tuple[Any, ...]) -> Any:
    """One request of the daemon; the result goes back to it."""
    if op == "commit":
        disk.commit(Batch(*args))
    elif op == "compact":
        return disk.compact()
    elif op == "close":
        disk.close(*args)
    elif op == "stored_updates":
        return disk.stored_updates()
    elif op == "set_max_pages":
        disk.set_max_pages(*args)
    else:
        raise ValueError(f"unknown request {op!r}")
    return None


def _serve(sock: socket.socket, path: Path) -> None:
    disk = Disk(path)
    disk.open()
    try:
        while True:
            head = _read_exactly(sock, _HEADER.size)
            if head is None:
                return  # the daemon is gone: everything it was told is on disk
            body = _read_exactly(sock, _HEADER.unpack(head)[0])
            if body is None:
                return
            op, args = pickle.loads(body)
            try:
                reply = pickle.dumps((True, _run(disk, op, args)))
            except Exception as exc:
                reply = pickle.dumps((False, f"{type(exc).__name__}: {exc}"))
            sock.sendall(_HEADER.pack(len(reply)) + reply)
            if op == "close":
                return
    finally:
        disk.close(None)


def main(argv: list[str]) -> int:
    fd, path = int(argv[0]), Path(argv[1])
    sock = socket.socket(fileno=fd)
    try:
        _serve(sock, path)
    finally:
        sock.close()
    return 0


# ---------------------------------------------------------------------------- the daemon


class _Replies(asyncio.Protocol):
    """Frames the child's replies and settles the oldest outstanding request with each."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while len(buf) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buf)
            end = _HEADER.size + size
            if len(buf) < end:
                return
            ok, value = pickle.loads(bytes(buf[_HEADER.size : end]))
            del buf[:end]
            fut = self.waiting.popleft()
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(DiskProcessError(value))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = DiskProcessError("the store's writer process has gone")
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(self.lost)


class DiskProcess:
    """The daemon's handle on the writer process: requests out, replies back, in order."""

    def __init__(self, path: Path, lock: int) -> None:
        self.path = path
        self._lock = lock
        self._proc: subprocess.Popen[bytes] | None = None
        self._replies: _Replies | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    async def start(self) -> None:
        """Start the child (it opens the file; the caller must have closed its own handle)."""
        ours, theirs = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "openxapi.db.disk_process",
                    str(theirs.fileno()),
                    str(self.path),
                ],
                # The owner lock goes along: it is held until the child has exited too.
                pass_fds=(theirs.fileno(), self._lock),
                stdin=subprocess.DEVNULL,
                close_fds=True,
                env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        loop = asyncio.get_running_loop()
        _transport, self._replies = await loop.create_unix_connection(_Replies, sock=ours)

    async def ensure_running(self) -> bool:
        """Start a new child if the last one has gone (killed, crashed); True if it did.
        The request it was running failed and its caller retries it: requests are
        idempotent, so one that reached the disk before the child died is harmless again."""
        replies = self._replies
        if replies is not None and replies.lost is None:
            return False
        if replies is not None and replies.transport is not None:
            replies.transport.close()
        self._replies = None
        proc, self._proc = self._proc, None
        if proc is not None:
            # The old child must have let go of the file before the new one opens it.
            await asyncio.get_running_loop().run_in_executor(None, _reap, proc, 2.0)
        await self.start()
        return True

    async def call(self, op: str, *args: Any) -> Any:
        """Run one request in the child; raises DiskProcessError when it fails."""
        replies = self._replies
        if replies is None or replies.transport is None:
            raise DiskProcessError("the store's writer process is not running")
        if replies.lost is not None:
            raise replies.lost
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        body = pickle.dumps((op, args), protocol=pickle.HIGHEST_PROTOCOL)
        replies.waiting.append(fut)
        replies.transport.write(_HEADER.pack(len(body)) + body)
        return await fut

    async def commit(self, batch: Batch) -> None:
        await self.call(
            "commit",
            batch.rows,
            batch.deltas,
            batch.deletes,
            batch.tombstones,
            batch.prune_tombstones_upto,
            batch.generation,
            batch.reserved,
        )

    async def stop(self, generation: int | None) -> None:
        """Close the file (with a generation: a clean shutdown, see ``Disk.close``) and wait
        for the child to exit."""
        try:
            if self._replies is not None and self._replies.lost is None:
                await self.call("close", generation)
        finally:
            if self._replies is not None and self._replies.transport is not None:
                self._replies.transport.close()
            self._replies = None
            proc, self._proc = self._proc, None
            if proc is not None:
                await asyncio.get_running_loop().run_in_executor(None, _reap, proc)


def _reap(proc: subprocess.Popen[bytes], wait: float = _EXIT_WAIT) -> None:
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
