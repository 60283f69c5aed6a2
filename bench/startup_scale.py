"""Benchmark 4, scale: start-up (process start to a successful login) with 100,000 objects in
the store, target < 5 s, next to the start-up of an empty store (world only) in the same run;
and the server's resident memory with 10,000 realistic VMs loaded, after get_all_records,
target < 600 MB.
"""

from __future__ import annotations

import time
from pathlib import Path

from fixtures import Fixtures
from harness import Rpc, Server, json_call, median, xml_call
from report import Row, Section
from store_scale import measure_open
from wireclient import timed_exchange

STARTUP_TARGET = 5.0
RSS_TARGET_MB = 600.0
MB = 1e6 / 2**20  # MiB per MB
SETTLE = 1.0


def _startup(data: Path) -> float:
    server = Server(data)
    try:
        return server.start()
    finally:
        server.stop()


def _settled_rss(server: Server) -> float:
    """VmRSS once the reply buffers of the last call have been let go."""
    time.sleep(SETTLE)
    return server.rss_mib()[0]


def _rss_after_reads(data: Path) -> tuple[float, float, float, int]:
    """(start-up s, RSS after XML get_all_records, RSS after JSON too, VMs) in MiB."""
    server = Server(data)
    try:
        start_s = server.start()
        rpc = Rpc(server.port)
        session = rpc.login()
        vms = len(rpc("VM.get_all"))
        timed_exchange(server.port, xml_call("VM.get_all_records", session), 1)
        after_xml = _settled_rss(server)
        timed_exchange(server.port, json_call("VM.get_all_records", session), 1)
        after_both = _settled_rss(server)
        return start_s, after_xml, after_both, vms
    finally:
        server.stop()


def run(fx: Fixtures, quick: bool) -> Section:
    t_start = time.perf_counter()
    runs = 1 if quick else 5
    big = fx.scale()
    empty = fx.copy(fx.world(), "scale-empty")
    empty_times: list[float] = []
    big_times: list[float] = []
    for _ in range(runs):
        empty_times.append(_startup(empty))
        big_times.append(_startup(big))
    opened = measure_open(big / "state.db")
    # The first start after populating reconciles the synthetic records with what the
    # server computes (tens of thousands of rewrites); memory is measured on a server as it
    # runs from then on, and the first start is reported beside it.
    reads = fx.copy(fx.reads(), "scale-reads")
    _, first_xml, _, _ = _rss_after_reads(reads)
    reads_start, rss_xml, rss_both, vms = _rss_after_reads(reads)
    _, floor_xml, floor_both, _ = _rss_after_reads(empty)

    info = fx.info["scale"]
    fig, base = median(big_times), median(empty_times)
    rss_xml_mb, rss_both_mb = rss_xml / MB, rss_both / MB
    section = Section("4. Scale: start-up with 100,000 objects; memory with 10,000 VMs")
    section.rows += [
        Row(
            f"start-up to first login, {info['objects_total']:,} objects",
            f"{fig:.2f} s",
            f"{base:.2f} s (world only)",
            f"{fig / base:.1f}x",
            f"< {STARTUP_TARGET:.0f} s",
            fig < STARTUP_TARGET,
        ),
        Row(
            f"RSS, {vms:,} VMs, after XML-RPC get_all_records",
            f"{rss_xml_mb:,.0f} MB ({rss_xml:,.0f} MiB)",
            f"{floor_xml / MB:,.0f} MB (world only)",
            f"{rss_xml / floor_xml:.1f}x",
            f"< {RSS_TARGET_MB:.0f} MB",
            rss_xml_mb < RSS_TARGET_MB,
        ),
        Row(
            "RSS, same, after JSON-RPC get_all_records too",
            f"{rss_both_mb:,.0f} MB ({rss_both:,.0f} MiB)",
            f"{floor_both / MB:,.0f} MB (world only)",
            f"{rss_both / floor_both:.1f}x",
            f"< {RSS_TARGET_MB:.0f} MB",
            rss_both_mb < RSS_TARGET_MB,
        ),
    ]
    section.notes += [
        f"start-up runs (s), 100k store: {', '.join(f'{x:.2f}' for x in big_times)}; "
        f"world only: {', '.join(f'{x:.2f}' for x in empty_times)}; alternating, median shown",
        f"100k store: {info['vms']:,} VMs x 8 objects + the world; file {info['file_mib']:.0f} "
        f"MiB; Store.open() alone in a fresh interpreter: {opened['seconds']:.2f} s, RSS "
        f"{opened['rss_after_mib']:.0f} MiB",
        f"10k store start-up to first login: {reads_start:.2f} s",
        f"the 10k store's first start after it was populated (every VM, VDI and guest "
        f"metrics record rewritten to match the simulator): RSS after XML-RPC "
        f"get_all_records {first_xml / MB:,.0f} MB; the rows above are the next start",
        f"RSS is VmRSS of the server process {SETTLE:.0f} s after the call; 'world only' is a "
        "server on the empty store after the same calls; MB = 10^6 bytes, MiB = 2^20",
    ]
    section.data = {
        "startup_100k_s": big_times,
        "startup_empty_s": empty_times,
        "store_open": opened,
        "rss_mib": {"after_xml": rss_xml, "after_both": rss_both, "first_start_xml": first_xml},
        "rss_floor_mib": {"after_xml": floor_xml, "after_both": floor_both},
    }
    section.seconds = time.perf_counter() - t_start
    return section
