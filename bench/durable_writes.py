"""Benchmark 3, durable writes: ``VM.set_name_label`` from 8 concurrent client processes
(each its own connection and its own VMs) against the normal server and against a
``--no-durability`` server (the floor: same code, nothing written to disk). Target: at least
70% of the floor's rate. For scale, the same disk's rate of one fsync'd SQLite transaction
per write and its plain fsync latency are measured in the same run.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import vmrecords
from fixtures import Fixtures
from harness import (
    Rpc,
    Server,
    SyscallCounter,
    context_switches,
    cpu_seconds,
    median,
    xml_call,
)
from report import Row, Section
from store_scale import fsync_latency
from wireclient import run_clients

CLIENTS = 8
VMS_PER_CLIENT = 8
LABELS = 4
TARGET = 0.70


@dataclass
class Round:
    rate: float
    cpu_us: float
    switches: float
    per_commit: float | None


def _round(fx: Fixtures, durable: bool, seconds: float, r: int) -> Round:
    """One run on a fresh server: writes/s, server CPU and context switches per write, and
    writes per fdatasync (per commit) where perf can count them."""
    kind = "durable" if durable else "memory"
    server = Server(fx.fresh(f"writes-{kind}-{r}"), durable=durable)
    server.start()
    try:
        assert server.proc is not None
        rpc = Rpc(server.port)
        session = rpc.login()
        lists: list[list[bytes]] = []
        for c in range(CLIENTS):
            refs = [
                rpc("VM.create", vmrecords.create_args(f"writer-{c}-{v}", f"seed-{c}-{v}"))
                for v in range(VMS_PER_CLIENT)
            ]
            lists.append(
                [
                    xml_call("VM.set_name_label", session, ref, f"writer-{c}-{v}-label-{k}")
                    for k in range(LABELS)
                    for v, ref in enumerate(refs)
                ]
            )
        check = rpc("VM.get_name_label", refs[0])
        if check != f"writer-{CLIENTS - 1}-0":
            raise RuntimeError(f"unexpected VM state: {check!r}")
        pid = server.proc.pid
        warmup = LABELS * VMS_PER_CLIENT
        with SyscallCounter(pid, "fdatasync", fx.root / f"perf-{kind}-{r}.log") as syncs:
            time.sleep(0.3)  # perf attaches
            cpu0, cs0 = cpu_seconds(pid), context_switches(pid)
            load = run_clients(server.port, lists, seconds, warmup=warmup)
            cpu = (cpu_seconds(pid) - cpu0) * 1e6 / load.calls
            switches = (context_switches(pid) - cs0) / load.calls
        per_commit = None
        if durable and syncs.count:
            per_commit = (load.calls + warmup * CLIENTS) / syncs.count
        if rpc("VM.get_name_label", refs[0]).startswith(f"writer-{CLIENTS - 1}-0-label-"):
            return Round(load.rate, cpu, switches, per_commit)
        raise RuntimeError("the writes did not land")
    finally:
        server.stop()


def sqlite_rate(directory: Path, seconds: float) -> float:
    """Transactions/s of one 4 KiB row update per transaction, WAL with synchronous=FULL,
    as the store configures SQLite."""
    path = directory / "fsync-floor.db"
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA locking_mode=EXCLUSIVE")
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        blob = b"x" * 4096
        con.executemany("INSERT INTO t VALUES (?, ?)", [(i, blob) for i in range(64)])
        n = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        while time.perf_counter() < end:
            con.execute("BEGIN IMMEDIATE")
            # A changed value each time: SQLite skips writing pages whose bytes are unchanged.
            con.execute("UPDATE t SET v = ? WHERE id = ?", (n.to_bytes(8, "little") * 512, n % 64))
            con.execute("COMMIT")
            n += 1
        return n / (time.perf_counter() - t0)
    finally:
        con.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)


def run(fx: Fixtures, quick: bool) -> Section:
    t_start = time.perf_counter()
    rounds, seconds = (1, 3.0) if quick else (5, 5.0)
    durable: list[Round] = []
    memory: list[Round] = []
    tx_rates: list[float] = []
    fsyncs: list[dict[str, float]] = []
    for r in range(rounds):
        durable.append(_round(fx, True, seconds, r))
        memory.append(_round(fx, False, seconds, r))
        # The disk is shared and its speed drifts: measure it next to every round.
        tx_rates.append(sqlite_rate(fx.root, 1.0))
        fsyncs.append(fsync_latency(fx.root, 100))
    ours = [x.rate for x in durable]
    floor = [x.rate for x in memory]
    ours_cpu = [x.cpu_us for x in durable]
    floor_cpu = [x.cpu_us for x in memory]
    batches = [x.per_commit for x in durable if x.per_commit is not None]
    tx_rate = median(tx_rates)
    fsync = {k: median([f[k] for f in fsyncs]) for k in fsyncs[0]}
    figure, base = median(ours), median(floor)
    ratio = figure / base
    section = Section("3. Durable writes: VM.set_name_label, 8 concurrent clients")
    section.rows += [
        Row(
            "writes/s",
            f"{figure:,.0f}",
            f"{base:,.0f} (--no-durability)",
            f"{ratio:.0%}",
            f">= {TARGET:.0%} of floor",
            ratio >= TARGET,
        ),
        Row(
            "server CPU per write (daemon and its store writer process)",
            f"{median(ours_cpu):.0f} us",
            f"{median(floor_cpu):.0f} us",
            f"{median(ours_cpu) / median(floor_cpu):.1f}x",
        ),
        Row(
            "server context switches per write (all threads of both)",
            f"{median([x.switches for x in durable]):.1f}",
            f"{median([x.switches for x in memory]):.1f}",
        ),
        Row(
            "writes per commit (per fdatasync, counted with perf)",
            f"{median(batches):.1f}" if batches else "n/a (perf unavailable)",
        ),
        Row("one SQLite transaction (WAL, synchronous=FULL) per write", f"{tx_rate:,.0f} tx/s"),
        Row(
            "plain 4 KiB write + fsync on this disk",
            f"median {fsync['median_ms']:.3f} ms, p99 {fsync['p99_ms']:.3f} ms",
        ),
    ]
    section.notes += [
        f"{rounds} round(s) of {seconds:.0f} s per side, alternating, each on a fresh server "
        f"with {CLIENTS * VMS_PER_CLIENT} VMs made by VM.create; writes/s per round, durable: "
        + ", ".join(f"{x:,.0f}" for x in ours)
        + "; no durability: "
        + ", ".join(f"{x:,.0f}" for x in floor),
        "the SQLite loop (1 s) and the fsync probe (100 fsyncs) run after each round; medians "
        "shown; SQLite tx/s per round: " + ", ".join(f"{x:,.0f}" for x in tx_rates),
        "every write changes the name (each client cycles over its 8 VMs and 4 names); a reply "
        "comes only once the write is fsync'd; durable writes/s relative to one SQLite "
        f"transaction per write on the same disk: {figure / tx_rate:.1f}x",
    ]
    section.data = {
        "durable_rounds": [asdict(x) for x in durable],
        "memory_rounds": [asdict(x) for x in memory],
        "ours": ours,
        "floor": floor,
        "ours_cpu_us": ours_cpu,
        "floor_cpu_us": floor_cpu,
        "sqlite_tx_per_s": tx_rates,
        "fsync": fsyncs,
    }
    section.seconds = time.perf_counter() - t_start
    return section
