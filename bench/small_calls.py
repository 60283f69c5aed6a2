"""Benchmark 1, small calls: ``host.get_record`` over HTTP keep-alive from 4 client
processes, against openxapi and against the canned-reply floor serving the very bytes
openxapi answered. Target: openxapi at least 50% of the floor's calls/s.
"""

from __future__ import annotations

import time

from canned import CannedServer
from fixtures import Fixtures
from harness import Rpc, Server, cpu_seconds, exchange, free_port, median, xml_call
from report import Row, Section
from wireclient import Load, run_clients

CLIENTS = 4
TARGET = 0.50


def _measure(port: int, pid: int, request: bytes, seconds: float) -> tuple[Load, float]:
    """The clients' load and the server's CPU microseconds per call during it."""
    cpu0 = cpu_seconds(pid)
    load = run_clients(port, [[request]] * CLIENTS, seconds)
    return load, (cpu_seconds(pid) - cpu0) * 1e6 / load.calls


def run(fx: Fixtures, quick: bool) -> Section:
    t_start = time.perf_counter()
    rounds, seconds = (1, 3.0) if quick else (5, 5.0)
    data = fx.copy(fx.world(), "small-calls")
    server = Server(data)
    server.start()
    ours: list[float] = []
    floor: list[float] = []
    ours_cpu: list[float] = []
    floor_cpu: list[float] = []
    http: list[float] = []
    http_cpu: list[float] = []
    try:
        assert server.proc is not None
        rpc = Rpc(server.port)
        session = rpc.login()
        host = rpc("host.get_all")[0]
        request = xml_call("host.get_record", session, host)
        reply = exchange(server.port, request)
        if b"<value>Success</value>" not in reply:
            raise RuntimeError(f"host.get_record failed: {reply[:500]!r}")
        reply_file = fx.root / "small-calls.reply"
        reply_file.write_bytes(reply)
        server_rss = server.rss_mib()[0]
        for r in range(rounds):
            load, cpu = _measure(server.port, server.proc.pid, request, seconds)
            ours.append(load.rate)
            ours_cpu.append(cpu)
            with CannedServer(reply_file, free_port(), fx.root / f"canned-small-{r}.log") as fl:
                assert fl.proc is not None
                load, cpu = _measure(fl.port, fl.proc.pid, request, seconds)
                floor.append(load.rate)
                floor_cpu.append(cpu)
            log = fx.root / f"httponly-small-{r}.log"
            with CannedServer(reply_file, free_port(), log, "httponly.py") as hs:
                assert hs.proc is not None
                load, cpu = _measure(hs.port, hs.proc.pid, request, seconds)
                http.append(load.rate)
                http_cpu.append(cpu)
    finally:
        server.stop()
    figure, base = median(ours), median(floor)
    ratio = figure / base
    section = Section("1. Small calls: host.get_record over keep-alive, 4 client processes")
    section.rows.append(
        Row(
            "calls/s",
            f"{figure:,.0f}",
            f"{base:,.0f}",
            f"{ratio:.0%}",
            f">= {TARGET:.0%} of floor",
            ratio >= TARGET,
        )
    )
    section.rows.append(
        Row(
            "server CPU per call",
            f"{median(ours_cpu):.0f} us",
            f"{median(floor_cpu):.0f} us",
            f"{median(ours_cpu) / median(floor_cpu):.1f}x",
        )
    )
    section.rows.append(
        Row(
            "breakdown: openxapi's HTTP server alone (fixed reply, no RPC work)",
            f"{median(http):,.0f} calls/s, {median(http_cpu):.0f} us CPU/call",
            f"{base:,.0f} calls/s",
            f"{median(http) / base:.0%}",
        )
    )
    section.notes += [
        f"{rounds} round(s) of {seconds:.0f} s per side, alternating, median shown; calls/s "
        "per round, openxapi: "
        + ", ".join(f"{x:,.0f}" for x in ours)
        + "; floor: "
        + ", ".join(f"{x:,.0f}" for x in floor),
        f"request {len(request)} bytes, reply {len(reply)} bytes (head and body); the floor "
        "replies with these exact bytes; client and server share the 2 CPUs",
        f"server RSS: {server_rss:.0f} MiB; server CPU is user + system time of the server "
        "process over the run divided by the calls answered",
    ]
    section.data = {
        "ours": ours,
        "floor": floor,
        "ours_cpu_us": ours_cpu,
        "floor_cpu_us": floor_cpu,
        "http_only": http,
        "http_only_cpu_us": http_cpu,
        "reply_bytes": len(reply),
    }
    section.seconds = time.perf_counter() - t_start
    return section
