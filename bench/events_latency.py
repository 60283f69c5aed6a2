"""Event latency: from a write being acknowledged to a waiting ``event.from`` returning, with
1, 100 and 1,000 waiters held by client processes (4 at most, each multiplexing its
connections), against openxapi and against the floor: a trivial server that answers every
parked waiter when a write arrives (``eventclients.FloorServer``), fed the same clients.
Targets at 100 waiters on loopback: p50 < 2 ms, p99 < 10 ms, p50 within 2x the floor.
"""

from __future__ import annotations

import os
import statistics
import time

import vmrecords
from eventclients import FloorServer, Waiters, event_from, raise_fd_limit
from fixtures import Fixtures
from harness import Rpc, Server, connect, exchange, free_port, read_response, xml_call
from report import Row, Section

PROCS = 4
P50_TARGET_MS = 2.0
P99_TARGET_MS = 10.0
RATIO_TARGET = 2.0


def _percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _measure(
    port: int, session: str, vm: str, token: str, waiters: int, rounds: int
) -> list[float]:
    """Latencies (ms) of every (waiter, write) pair."""
    settle = 0.02 + waiters * 400e-6
    group = Waiters(port, session, token, waiters, PROCS, rounds)
    acks: list[int] = []
    try:
        writer = connect(port)
        view = memoryview(bytearray(1 << 16))
        for r in range(rounds):
            group.wait_armed(r)
            time.sleep(settle)  # the server parks the re-sent calls
            writer.sendall(xml_call("VM.set_name_label", session, vm, f"latency-{r}"))
            read_response(writer, view)
            acks.append(time.perf_counter_ns())
        writer.close()
        times = group.results()
    finally:
        group.kill()
    return [(t[r] - acks[r]) / 1e6 for _, t in times for r in range(rounds)]


def run(fx: Fixtures, quick: bool) -> Section:
    t_start = time.perf_counter()
    load_before = os.getloadavg()[0]
    raise_fd_limit()
    plan = [(1, 40 if quick else 200), (100, 20 if quick else 60), (1000, 6 if quick else 20)]
    data = fx.copy(fx.world(), "events-latency")
    server = Server(data)
    server.start()
    ours: dict[int, list[float]] = {}
    floor: dict[int, list[float]] = {}
    try:
        rpc = Rpc(server.port)
        session = rpc.login()
        vm = rpc("VM.create", vmrecords.create_args("latency", "latency-seed"))
        token = rpc("event.from", ["vm"], "", 0.0)["token"]
        # Canned replies for the floor: a write's ack and a one-event event.from reply.
        ack = exchange(server.port, xml_call("VM.set_name_label", session, vm, "canned"))
        event = exchange(server.port, event_from(session, token, 5.0, ("vm",)))
        ack_file, event_file = fx.root / "latency-ack.reply", fx.root / "latency-event.reply"
        ack_file.write_bytes(ack)
        event_file.write_bytes(event)
        token = rpc("event.from", ["vm"], "", 0.0)["token"]
        for waiters, rounds in plan:
            ours[waiters] = _measure(server.port, session, vm, token, waiters, rounds)
            token = rpc("event.from", ["vm"], token, 0.0)["token"]
        with FloorServer(ack_file, event_file, free_port(), fx.root / "latency-floor.log") as fl:
            for waiters, rounds in plan:
                floor[waiters] = _measure(fl.port, session, vm, token, waiters, rounds)
    finally:
        server.stop()
    section = Section(
        "Event latency: write acknowledged → waiting event.from returns (client processes)"
    )
    for waiters, _ in plan:
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            figure, base = _percentile(ours[waiters], q), _percentile(floor[waiters], q)
            ratio = figure / base if base > 0 else float("inf")
            target, passed = "-", None
            if waiters == 100:
                limit = P50_TARGET_MS if q == 0.5 else P99_TARGET_MS
                target = f"< {limit:g} ms" + (f", <= {RATIO_TARGET:g}x floor" if q == 0.5 else "")
                passed = figure < limit and (q != 0.5 or ratio <= RATIO_TARGET)
            section.rows.append(
                Row(
                    f"{waiters} waiter{'s' if waiters > 1 else ''}, {name}",
                    f"{figure:.2f} ms",
                    f"{base:.2f} ms",
                    f"{ratio:.1f}x",
                    target,
                    passed,
                )
            )
    section.notes += [
        f"{', '.join(f'{w} waiters x {r} writes' for w, r in plan)}; waiters spread over up to "
        f"{PROCS} client processes; each write is VM.set_name_label (durable), the waiters "
        "watch class vm; latency = reply arrival at a waiter minus ack arrival at the writer "
        "(CLOCK_MONOTONIC in both processes)",
        "mean, openxapi: "
        + ", ".join(f"{w}: {statistics.fmean(ours[w]):.2f} ms" for w, _ in plan)
        + "; floor: "
        + ", ".join(f"{w}: {statistics.fmean(floor[w]):.2f} ms" for w, _ in plan),
        "clients, server and floor share the machine's CPUs",
    ]
    section.data = {
        "ours_ms": {str(k): v for k, v in ours.items()},
        "floor_ms": {str(k): v for k, v in floor.items()},
    }
    section.notes.append(
        f"load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
        "(other work on the machine competes with these timings)"
    )
    section.seconds = time.perf_counter() - t_start
    return section
