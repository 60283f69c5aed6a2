"""Resync: ``event.from(["vm"], "", 0.0)`` — an ``add`` with the full record for every VM —
over 10,000 realistic VMs, timed at the client from request sent to last byte received,
over XML-RPC and JSON-RPC, with a ``VM.set_name_label`` on a random VM before each timed
call. Target: < 1 s. The floor is the canned-reply server sending the same bytes; the same
call over every class (``*``, 80,000 objects) is shown too.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field

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
    read_response,
    xml_call,
)
from report import Row, Section
from wireclient import timed_exchange

TARGET = 1.0


@dataclass
class _Case:
    request: bytes
    cold: float
    times: list[float]
    reply_bytes: int
    floor: list[float] = field(default_factory=list)


def _ms(x: float) -> str:
    return f"{x * 1e3:,.0f} ms"


def run(fx: Fixtures, quick: bool) -> Section:
    t_start = time.perf_counter()
    load_before = os.getloadavg()[0]
    iterations = 3 if quick else 10
    data = fx.reads()
    refs = list(fx.vm_refs)
    server = Server(data)
    server.start()
    cases: dict[str, _Case] = {}
    everything: dict[str, float] = {}
    try:
        rpc = Rpc(server.port)
        session = rpc.login()
        n_vms = len(rpc("VM.get_all"))
        rng = random.Random(11)
        writer = connect(server.port)
        view = memoryview(bytearray(1 << 16))
        count = 0

        def write() -> None:
            nonlocal count
            count += 1
            ref = rng.choice(refs)
            writer.sendall(xml_call("VM.set_name_label", session, ref, f"resync-{count:05d}"))
            read_response(writer, view)

        for codec, request in (
            ("XML-RPC", xml_call("event.from", session, ["vm"], "", 0.0)),
            ("JSON-RPC", json_call("event.from", session, ["vm"], "", 0.0)),
        ):
            write()
            cold = timed_exchange(server.port, request, 1)[0]
            times = timed_exchange(server.port, request, iterations, between=write)
            reply = exchange(server.port, request)
            if reply.count(b"OpaqueRef:") < n_vms:
                raise RuntimeError(f"{codec} resync failed: {reply[:600]!r}")
            (fx.root / f"resync-{codec}.reply").write_bytes(reply)
            cases[codec] = _Case(request, cold, times, len(reply))
        for codec, request in (
            ("XML-RPC", xml_call("event.from", session, ["*"], "", 0.0)),
            ("JSON-RPC", json_call("event.from", session, ["*"], "", 0.0)),
        ):
            write()
            everything[codec] = median(
                timed_exchange(server.port, request, max(2, iterations // 3))
            )
            if b"token" not in exchange(server.port, request)[-400:]:
                raise RuntimeError(f"{codec} resync of every class failed")
        writer.close()
        rss, hwm = server.rss_mib()
    finally:
        server.stop()
    for codec, case in cases.items():
        reply_file = fx.root / f"resync-{codec}.reply"
        with CannedServer(reply_file, free_port(), fx.root / f"canned-resync-{codec}.log") as fl:
            timed_exchange(fl.port, case.request, 1)
            case.floor = timed_exchange(fl.port, case.request, iterations)
        reply_file.unlink()

    section = Section(f"Resync: event.from with an empty token over {n_vms:,} VMs")
    for codec, case in cases.items():
        fig, base = median(case.times), median(case.floor)
        section.rows.append(
            Row(
                f"{codec}, class vm, median",
                _ms(fig),
                _ms(base),
                f"{fig / base:.1f}x",
                f"< {TARGET * 1e3:.0f} ms",
                fig < TARGET,
            )
        )
        section.rows.append(Row(f"{codec}, class vm, first call after start", _ms(case.cold)))
    for codec, t in everything.items():
        section.rows.append(Row(f"{codec}, every class (*), median", _ms(t)))
    for codec, case in cases.items():
        section.notes.append(
            f"{codec}: reply {case.reply_bytes / 2**20:,.1f} MiB for {n_vms:,} VMs = "
            f"{case.reply_bytes / n_vms:,.0f} bytes per event"
        )
    section.notes += [
        f"{iterations} timed calls per codec, each after a VM.set_name_label on a random VM "
        "(so the reply is never an old one); the floor sends the same bytes and gets no writes",
        f"store: {fx.info['reads']['objects_total']:,} objects; server RSS after these calls: "
        f"{rss:.0f} MiB (peak {hwm:.0f} MiB)",
    ]
    section.data = {
        "n_vms": n_vms,
        "cases": {
            c: {"cold": v.cold, "times": v.times, "floor": v.floor, "bytes": v.reply_bytes}
            for c, v in cases.items()
        },
        "everything": everything,
    }
    section.notes.append(
        f"load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
        "(other work on the machine competes with these timings)"
    )
    section.seconds = time.perf_counter() - t_start
    return section
