"""Benchmark 2, big reads: ``VM.get_all_records`` over 10,000 realistic VMs, over XML-RPC
(target < 300 ms) and JSON-RPC (target < 200 ms), timed from request sent to last byte
received by a client that parses nothing, with a ``VM.set_name_label`` on a random VM before
each timed call. The floor is the canned-reply server sending the same bytes.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field

from canned import CannedServer
from fixtures import Fixtures
from harness import (
    Rpc,
    Server,
    connect,
    exchange,
    free_port,
    json_call,
    median,
    p90,
    read_response,
    xml_call,
)
from report import Row, Section
from wireclient import timed_exchange

TARGETS = {"XML-RPC": 0.300, "JSON-RPC": 0.200}


@dataclass
class Codec:
    """One codec's measurements (seconds)."""

    request: bytes
    cold: float
    times: list[float]
    reply_bytes: int
    body_bytes: int
    floor: list[float] = field(default_factory=list)


def _ms(x: float) -> str:
    return f"{x * 1e3:,.0f} ms"


def run(fx: Fixtures, quick: bool) -> Section:
    t_start = time.perf_counter()
    iterations = 5 if quick else 20
    data = fx.reads()
    refs = list(fx.vm_refs)
    server = Server(data)
    start_s = server.start()
    results: dict[str, Codec] = {}
    try:
        rpc = Rpc(server.port)
        session = rpc.login()
        n_vms = len(rpc("VM.get_all"))
        rng = random.Random(5)
        writer = connect(server.port)
        view = memoryview(bytearray(1 << 16))
        count = 0

        def write() -> None:
            nonlocal count
            count += 1
            ref = rng.choice(refs)
            writer.sendall(xml_call("VM.set_name_label", session, ref, f"renamed-{count:05d}"))
            read_response(writer, view)

        write()
        for codec, request in (
            ("XML-RPC", xml_call("VM.get_all_records", session)),
            ("JSON-RPC", json_call("VM.get_all_records", session)),
        ):
            cold = timed_exchange(server.port, request, 1)[0]
            times = timed_exchange(server.port, request, iterations, between=write)
            reply = exchange(server.port, request)
            if b"Success" not in reply[:600] and b'"result"' not in reply[:600]:
                raise RuntimeError(f"{codec} get_all_records failed: {reply[:600]!r}")
            body = len(reply) - reply.index(b"\r\n\r\n") - 4
            (fx.root / f"reads-{codec}.reply").write_bytes(reply)
            results[codec] = Codec(request, cold, times, len(reply), body)
        writer.close()
        rss, hwm = server.rss_mib()
    finally:
        server.stop()
    for codec, r in results.items():
        reply_file = fx.root / f"reads-{codec}.reply"
        with CannedServer(reply_file, free_port(), fx.root / f"canned-reads-{codec}.log") as fl:
            timed_exchange(fl.port, r.request, 1)
            r.floor = timed_exchange(fl.port, r.request, iterations)
        reply_file.unlink()

    section = Section("2. Big reads: VM.get_all_records over 10,000 VMs, a write between calls")
    for codec, r in results.items():
        times, floor = r.times, r.floor
        fig, base = median(times), median(floor)
        target = TARGETS[codec]
        section.rows.append(
            Row(
                f"{codec} median",
                _ms(fig),
                _ms(base),
                f"{fig / base:.1f}x",
                f"< {target * 1e3:.0f} ms",
                fig < target,
            )
        )
        section.rows.append(
            Row(f"{codec} p90", _ms(p90(times)), _ms(p90(floor)), f"{p90(times) / p90(floor):.1f}x")
        )
    for codec, r in results.items():
        section.notes.append(
            f"{codec}: reply body {r.body_bytes / 2**20:,.1f} MiB for {n_vms:,} VMs = "
            f"{r.body_bytes / n_vms:,.0f} bytes per record; first call after start (fills the "
            f"encoded-record cache): {_ms(r.cold)}"
        )
    section.notes += [
        f"{iterations} timed calls per codec; before each, VM.set_name_label on a random VM "
        "(untimed, on its own connection); the floor gets no writes",
        f"store: {fx.info['reads']['objects_total']:,} objects, file "
        f"{fx.info['reads']['file_mib']:.0f} MiB; server start-up to first login {start_s:.2f} s",
        f"server RSS after these calls: {rss:.0f} MiB (peak {hwm:.0f} MiB)",
    ]
    section.data = {"n_vms": n_vms}
    for codec, r in results.items():
        section.data[codec] = {k: v for k, v in asdict(r).items() if k != "request"}
    section.seconds = time.perf_counter() - t_start
    return section
