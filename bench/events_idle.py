"""Idle waiters: 1,000 concurrent ``event.from`` calls with a 60 s timeout (10 s in quick
mode), held by 4 client processes, while nothing changes. Targets: the server spends
< 2% of one core meanwhile, and every call returns within its timeout. The floor is the
same server's CPU over an equally long window with no waiter at all.
"""

from __future__ import annotations

import os
import time

from eventclients import Waiters, raise_fd_limit
from fixtures import Fixtures
from harness import Rpc, Server, cpu_seconds
from report import Row, Section

WAITERS = 1000
PROCS = 4
CPU_TARGET = 0.02
LATE_LIMIT = 1.0  # seconds a call may come back after its timeout


def run(fx: Fixtures, quick: bool) -> Section:
    t_start = time.perf_counter()
    load_before = os.getloadavg()[0]
    raise_fd_limit()
    timeout = 10.0 if quick else 60.0
    margin = 2.0 if quick else 5.0
    window = timeout - 2 * margin
    data = fx.copy(fx.world(), "events-idle")
    server = Server(data)
    server.start()
    try:
        assert server.proc is not None
        pid = server.proc.pid
        rpc = Rpc(server.port)
        session = rpc.login()
        token = rpc("event.from", ["*"], "", 0.0)["token"]
        time.sleep(margin)
        c0 = cpu_seconds(pid)
        time.sleep(window)
        baseline = (cpu_seconds(pid) - c0) / window
        group = Waiters(server.port, session, token, WAITERS, PROCS, 1, timeout, ("*",))
        try:
            group.wait_armed(0)
            time.sleep(margin)
            c0, w0 = cpu_seconds(pid), time.perf_counter()
            time.sleep(window)
            idle = (cpu_seconds(pid) - c0) / (time.perf_counter() - w0)
            results = group.results()
        finally:
            group.kill()
        rss = server.rss_mib()[0]
    finally:
        server.stop()
    waited = [(t[0] - s[0]) / 1e9 for s, t in results]
    early = [w for w in waited if w < timeout - 0.05]
    late = max(waited) - timeout
    section = Section(f"Idle waiters: {WAITERS:,} event.from calls blocked, nothing changing")
    section.rows.append(
        Row(
            "server CPU while they wait",
            f"{idle:.2%} of a core",
            f"{baseline:.2%}",
            f"+{(idle - baseline):.2%}",
            f"< {CPU_TARGET:.0%} of a core",
            idle < CPU_TARGET,
        )
    )
    section.rows.append(
        Row(
            "each returns within its timeout",
            f"{min(waited):.2f}-{max(waited):.2f} s for {timeout:g} s",
            "-",
            "-",
            f"all returned, none early, <= {LATE_LIMIT:g} s late",
            len(waited) == WAITERS and not early and late <= LATE_LIMIT,
        )
    )
    section.notes += [
        f"{WAITERS:,} connections over {PROCS} client processes, subscription '*', timeout "
        f"{timeout:g} s; CPU measured over {window:g} s starting {margin:g} s after the last "
        "call was sent; the floor is the same server with no waiter over the same length",
        f"server RSS with the waiters parked: {rss:.0f} MiB",
    ]
    section.data = {"idle_cpu": idle, "baseline_cpu": baseline, "waited_s": waited}
    section.notes.append(
        f"load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
        "(other work on the machine competes with these timings)"
    )
    section.seconds = time.perf_counter() - t_start
    return section
