"""Async overhead: ``Async.VM.clone`` followed by waiting for its task through
``event.from`` (the way Xen Orchestra's client waits), against the synchronous ``VM.clone``
(the floor), one client on one connection, a halted VM without devices. Reported as a ratio;
no target is set for it.
"""

from __future__ import annotations

import os
import re
import time

import vmrecords
from fixtures import Fixtures
from harness import Rpc, Server, connect, median, p90, read_response, xml_call
from report import Row, Section

_VALUE = re.compile(rb"<name>Value</name><value>(OpaqueRef:[^<]*)</value>")
_TOKEN = re.compile(rb"<name>token</name><value>([0-9,]*)</value>")
_STATUS = re.compile(rb"<name>status</name><value>([a-z]*)</value>")


def _call(sock: object, request: bytes, view: memoryview, keep: bytearray) -> bytes:
    keep.clear()
    read_response_into(sock, request, view, keep)
    return bytes(keep)


def read_response_into(sock: object, request: bytes, view: memoryview, keep: bytearray) -> None:
    sock.sendall(request)  # type: ignore[attr-defined]
    read_response(sock, view, keep)  # type: ignore[arg-type]


def run(fx: Fixtures, quick: bool) -> Section:
    t_start = time.perf_counter()
    load_before = os.getloadavg()[0]
    iterations = 60 if quick else 300
    data = fx.copy(fx.world(), "async-overhead")
    server = Server(data)
    server.start()
    sync_t: list[float] = []
    async_t: list[float] = []
    destroy_t: list[float] = []
    polls: list[int] = []
    try:
        rpc = Rpc(server.port)
        session = rpc.login()
        vm = rpc("VM.create", vmrecords.create_args("async-source", "async-seed"))
        sock = connect(server.port)
        view = memoryview(bytearray(1 << 20))
        keep = bytearray()
        clock = time.perf_counter
        for i in range(iterations + 10):
            t0 = clock()
            reply = _call(sock, xml_call("VM.clone", session, vm, f"sync-{i}"), view, keep)
            t1 = clock()
            if _VALUE.search(reply) is None:
                raise RuntimeError(f"VM.clone failed: {reply[:500]!r}")
            if i >= 10:
                sync_t.append(t1 - t0)
        for i in range(iterations + 10):
            t0 = clock()
            reply = _call(sock, xml_call("Async.VM.clone", session, vm, f"async-{i}"), view, keep)
            m = _VALUE.search(reply)
            if m is None:
                raise RuntimeError(f"Async.VM.clone failed: {reply[:500]!r}")
            task = m.group(1).decode()
            token, status, n = "", b"pending", 0
            while status == b"pending":
                reply = _call(
                    sock, xml_call("event.from", session, [f"task/{task}"], token, 30.0), view, keep
                )
                token = _TOKEN.search(reply).group(1).decode()  # type: ignore[union-attr]
                found = _STATUS.findall(reply)
                status = found[-1] if found else status
                n += 1
            t1 = clock()
            if status != b"success":
                raise RuntimeError(f"task ended {status!r}")
            _call(sock, xml_call("task.destroy", session, task), view, keep)
            t2 = clock()
            if i >= 10:
                async_t.append(t1 - t0)
                destroy_t.append(t2 - t0)
                polls.append(n)
        sock.close()
    finally:
        server.stop()
    base = median(sync_t)
    section = Section("Async overhead: Async.VM.clone + waiting by events vs VM.clone")
    for what, xs in (
        ("Async + wait for the task by event.from", async_t),
        ("... + task.destroy (as xen-api's callAsync)", destroy_t),
    ):
        fig = median(xs)
        section.rows.append(
            Row(
                f"{what}, median",
                f"{fig * 1e3:.2f} ms",
                f"{base * 1e3:.2f} ms",
                f"{fig / base:.1f}x",
            )
        )
    section.rows.append(
        Row(
            "Async + wait, p90",
            f"{p90(async_t) * 1e3:.2f} ms",
            f"{p90(sync_t) * 1e3:.2f} ms",
            f"{p90(async_t) / p90(sync_t):.1f}x",
        )
    )
    section.notes += [
        f"{iterations} calls each after 10 untimed; the floor is the synchronous VM.clone "
        "(which itself runs under a transient task row, as in the reference); event.from calls "
        f"per Async call: median {median([float(p) for p in polls]):.0f}",
        "every call is durable before it is answered: Async.VM.clone returns once its task "
        "record is on disk, the clone's result once the task's end is",
    ]
    section.data = {"sync_s": sync_t, "async_s": async_t, "with_destroy_s": destroy_t}
    section.notes.append(
        f"load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
        "(other work on the machine competes with these timings)"
    )
    section.seconds = time.perf_counter() - t_start
    return section
