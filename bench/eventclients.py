"""Event-watching client processes for the event benchmarks, and the floor server they are
compared with.

``Waiters`` forks client processes, each holding many connections with one ``event.from``
blocked on every connection; when a reply arrives the process records the time
(CLOCK_MONOTONIC, comparable across processes) and blocks again with the new token. The
floor (``python bench/eventclients.py --port P --ack FILE --event FILE``) is a trivial
server that parks every ``event.from`` and, when any other request (a write) arrives,
answers it and then every parked waiter with canned bytes captured from openxapi.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import re
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any, cast

from harness import BENCH_DIR, connect, spawn, stop, xml_call

_CTX = mp.get_context("fork")
TOKEN_RE = re.compile(rb"<name>token</name><value>([0-9,]*)</value>")


def raise_fd_limit(want: int = 20_000) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def event_from(session: str, token: str, timeout: float, classes: tuple[str, ...]) -> bytes:
    return xml_call("event.from", session, list(classes), token, float(timeout))


def _complete(buf: bytearray) -> int:
    """Length of the first complete response in ``buf`` (0 if none yet)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return 0
    i = buf.find(b"Content-Length:", 0, end)
    if i < 0:
        i = buf.lower().find(b"content-length:", 0, end)
    total = end + 4 + int(buf[i + 15 : buf.find(b"\r\n", i)])
    return total if len(buf) >= total else 0


@dataclass
class _Conn:
    sock: socket.socket
    token: str
    buf: bytearray = field(default_factory=bytearray)
    times: list[int] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)


def _waiter_process(
    port: int,
    session: str,
    token: str,
    count: int,
    rounds: int,
    timeout: float,
    classes: tuple[str, ...],
    armed: mp.SimpleQueue[Any],
    go: Event,
    out: mp.SimpleQueue[Any],
) -> None:
    try:
        raise_fd_limit()
        conns = [_Conn(connect(port), token) for _ in range(count)]
        go.wait(120)
        for c in conns:
            c.sock.sendall(event_from(session, c.token, timeout, classes))
            c.sent.append(time.perf_counter_ns())
        armed.put(0)
        sel = selectors.DefaultSelector()
        for c in conns:
            sel.register(c.sock, selectors.EVENT_READ, c)
        rearmed = [0] * (rounds + 1)
        chunk = bytearray(1 << 18)
        view = memoryview(chunk)
        done = 0
        clock = time.perf_counter_ns
        while done < count:
            ready = sel.select(timeout + 60)
            # First read and stamp every reply that is in, then do the slower parsing and
            # re-sending, so one connection's bookkeeping does not delay another's stamp.
            finished: list[tuple[_Conn, int]] = []
            for key, _ in ready:
                c = cast(_Conn, key.data)
                got_bytes = c.sock.recv_into(view)
                if not got_bytes:
                    raise ConnectionError("server closed a waiting connection")
                c.buf += view[:got_bytes]
                n = _complete(c.buf)
                if n:
                    c.times.append(clock())
                    finished.append((c, n))
            for c, n in finished:
                m = TOKEN_RE.search(c.buf, max(0, n - 400), n)
                if m is None:
                    raise RuntimeError(f"no token in reply: {bytes(c.buf[:300])!r}")
                c.token = m.group(1).decode()
                del c.buf[:n]
                got = len(c.times)
                if got >= rounds:
                    sel.unregister(c.sock)
                    done += 1
                    continue
                c.sock.sendall(event_from(session, c.token, timeout, classes))
                c.sent.append(clock())
                rearmed[got] += 1
                if rearmed[got] == count:
                    armed.put(got)
        for c in conns:
            c.sock.close()
        out.put([(c.sent, c.times) for c in conns])
    except BaseException as exc:
        armed.put(exc)
        out.put(exc)


class Waiters:
    """``total`` blocked event.from calls spread over ``procs`` client processes."""

    def __init__(
        self,
        port: int,
        session: str,
        token: str,
        total: int,
        procs: int,
        rounds: int,
        timeout: float = 60.0,
        classes: tuple[str, ...] = ("vm",),
    ) -> None:
        procs = max(1, min(procs, total))
        counts = [total // procs + (1 if i < total % procs else 0) for i in range(procs)]
        self.armed: mp.SimpleQueue[Any] = _CTX.SimpleQueue()
        self.out: mp.SimpleQueue[Any] = _CTX.SimpleQueue()
        self.go = _CTX.Event()
        self.procs = [
            _CTX.Process(
                target=_waiter_process,
                args=(
                    port,
                    session,
                    token,
                    n,
                    rounds,
                    timeout,
                    classes,
                    self.armed,
                    self.go,
                    self.out,
                ),
            )
            for n in counts
        ]
        for p in self.procs:
            p.start()
        self.go.set()

    def wait_armed(self, round_no: int) -> None:
        """Until every process has (re)sent its requests for round ``round_no``."""
        seen = 0
        while seen < len(self.procs):
            got = self.armed.get()
            if isinstance(got, BaseException):
                raise RuntimeError(f"a waiter process failed: {got!r}")
            if got != round_no:
                raise RuntimeError(f"waiter out of step: round {got}, expected {round_no}")
            seen += 1

    def results(self) -> list[tuple[list[int], list[int]]]:
        """Per connection, when each request was sent and each reply arrived (ns)."""
        times: list[tuple[list[int], list[int]]] = []
        for _ in self.procs:
            got = self.out.get()
            if isinstance(got, BaseException):
                raise RuntimeError(f"a waiter process failed: {got!r}")
            times += got
        for p in self.procs:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()
        return times

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join()


# ---------------------------------------------------------------------------- the floor


class _Floor(asyncio.Protocol):
    ack = b""
    event = b""
    parked: list[asyncio.Transport] = []

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport in self.parked:
            self.parked.remove(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            n = _complete(self.buf)
            if not n:
                return
            request = bytes(self.buf[:n])
            del self.buf[:n]
            assert self.transport is not None
            if b"<methodName>event.from</methodName>" in request:
                self.parked.append(self.transport)
                continue
            self.transport.write(self.ack)
            waiting, _Floor.parked = _Floor.parked, []
            for t in waiting:
                t.write(self.event)


async def _serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Floor, "127.0.0.1", port, backlog=4096)
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    print("floor ready", flush=True)
    await done.wait()
    server.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ack", type=Path, required=True)
    ap.add_argument("--event", type=Path, required=True)
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    ns = ap.parse_args()
    raise_fd_limit()
    _Floor.ack = ns.ack.read_bytes()
    _Floor.event = ns.event.read_bytes()
    if ns.loop == "uvloop":
        import uvloop

        uvloop.run(_serve(ns.port))
    else:
        asyncio.run(_serve(ns.port))


class FloorServer:
    """The floor as a process, stopped by PID."""

    def __init__(self, ack: Path, event: Path, port: int, log: Path) -> None:
        from canned import uses_uvloop

        self.port = port
        cmd = [
            sys.executable,
            str(BENCH_DIR / "eventclients.py"),
            "--port",
            str(port),
            "--ack",
            str(ack),
            "--event",
            str(event),
            "--loop",
            "uvloop" if uses_uvloop() else "asyncio",
        ]
        self.proc: subprocess.Popen[bytes] | None = spawn(cmd, log)
        t0 = time.perf_counter()
        while b"floor ready" not in log.read_bytes():
            if self.proc.poll() is not None or time.perf_counter() - t0 > 60:
                self.stop()
                raise RuntimeError(f"floor server did not start; see {log}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def __enter__(self) -> FloorServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
