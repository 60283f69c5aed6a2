"""The load generator: client processes, each a tight loop of pre-built requests on one
persistent connection, reading each reply by its Content-Length and parsing nothing else.

The same code drives the real server and the canned-reply floor, so whatever the client
costs is paid equally by both. Children are forked, wait on a shared start signal, run for
a fixed time and report (calls, seconds, bytes).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.synchronize import Event

from harness import connect, read_response

_CTX = mp.get_context("fork")


@dataclass
class Load:
    """What a set of clients achieved together."""

    calls: int
    rate: float
    bytes: int
    per_client: list[float]


def _client(
    port: int,
    requests: list[bytes],
    warmup: int,
    seconds: float,
    ready: mp.SimpleQueue[object],
    go: Event,
    out: mp.SimpleQueue[object],
) -> None:
    try:
        sock = connect(port)
        view = memoryview(bytearray(1 << 20))
        send = sock.sendall
        count = len(requests)
        for i in range(warmup):
            send(requests[i % count])
            read_response(sock, view)
        ready.put(None)
        go.wait(60)
        calls = total = 0
        clock = time.perf_counter
        t0 = clock()
        end = t0 + seconds
        while True:
            for req in requests:
                send(req)
                total += read_response(sock, view)
            calls += count
            if clock() >= end:
                break
        elapsed = clock() - t0
        sock.close()
        out.put((calls, elapsed, total))
    except BaseException as exc:
        ready.put(None)
        out.put(exc)


def run_clients(port: int, requests: list[list[bytes]], seconds: float, warmup: int = 50) -> Load:
    """Run one client process per request list against ``port`` for about ``seconds``.

    A client sends its list in order, over and over, one call at a time; it checks the clock
    after each pass, so keep a list short compared with what fits in ``seconds``.
    """
    ready: mp.SimpleQueue[object] = _CTX.SimpleQueue()
    out: mp.SimpleQueue[object] = _CTX.SimpleQueue()
    go = _CTX.Event()
    procs = [
        _CTX.Process(target=_client, args=(port, reqs, warmup, seconds, ready, go, out))
        for reqs in requests
    ]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get()
        go.set()
        results = [out.get() for _ in procs]
    finally:
        for p in procs:
            p.join(seconds + 60)
            if p.is_alive():
                p.kill()
                p.join()
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise RuntimeError(f"a client failed: {errors[0]!r}")
    rates: list[float] = []
    calls = nbytes = 0
    for r in results:
        assert isinstance(r, tuple)
        c, elapsed, b = r
        calls += c
        nbytes += b
        rates.append(c / elapsed)
    return Load(calls, sum(rates), nbytes, rates)


def timed_exchange(
    port: int, request: bytes, iterations: int, between: Callable[[], None] | None = None
) -> list[float]:
    """Seconds from request sent to last byte received, for each of ``iterations`` calls on
    one connection. ``between`` (a callable) runs before each timed call, untimed."""
    sock = connect(port)
    view = memoryview(bytearray(4 << 20))
    times: list[float] = []
    try:
        for _ in range(iterations):
            if between is not None:
                between()
            t0 = time.perf_counter()
            sock.sendall(request)
            read_response(sock, view)
            times.append(time.perf_counter() - t0)
    finally:
        sock.close()
    return times
