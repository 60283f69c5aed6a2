"""Scale and durability-cost measurements of the object store (openxapi.db.store).

Measures, on VM-shaped records: open() time of a file holding N objects, resident memory
with M VM records loaded, and group-commit throughput of concurrent update+sync loops next
to the plain fsync latency of the same disk.

    python bench/store_scale.py [--objects 100000] [--rss-objects 10000] [--dir DIR]
                                [--open-runs 3] [--workers 1,8,64] [--seconds 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from openxapi.db.store import Store
from openxapi.spec import model
from openxapi.spec.values import now


def vm_record(i: int, template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A VM record with the kind of content a real pool holds."""
    u = str(uuid.UUID(int=i + 1))
    rec = dict(template)
    rec.update(
        uuid=u,
        name_label=f"vm-{i:06d}",
        name_description=f"benchmark guest number {i}",
        power_state="Running" if i % 3 else "Halted",
        allowed_operations=[
            "changing_dynamic_range",
            "hard_reboot",
            "hard_shutdown",
            "pause",
            "clean_reboot",
            "clean_shutdown",
            "snapshot",
            "checkpoint",
            "suspend",
            "migrate_send",
            "pool_migrate",
            "export",
            "copy",
            "clone",
        ],
        current_operations={},
        resident_on="OpaqueRef:" + str(uuid.UUID(int=7)),
        memory_static_max=4 << 30,
        memory_dynamic_max=4 << 30,
        memory_dynamic_min=2 << 30,
        memory_static_min=1 << 30,
        memory_target=4 << 30,
        memory_overhead=35 << 20,
        VCPUs_max=4,
        VCPUs_at_startup=2,
        VCPUs_params={"weight": "256", "cap": "0"},
        VBDs=[f"OpaqueRef:{uuid.UUID(int=(i + 1) * 16 + k)}" for k in range(3)],
        VIFs=[f"OpaqueRef:{uuid.UUID(int=(i + 1) * 32 + k)}" for k in range(2)],
        consoles=[f"OpaqueRef:{uuid.UUID(int=(i + 1) * 64)}"],
        HVM_boot_policy="BIOS order",
        HVM_boot_params={"order": "cdn", "firmware": "bios"},
        platform={
            "acpi": "1",
            "apic": "true",
            "pae": "true",
            "viridian": "true",
            "nx": "true",
            "hpet": "true",
            "timeoffset": "0",
            "cores-per-socket": "2",
            "device_id": "0001",
            "secureboot": "false",
            "vga": "std",
            "videoram": "8",
        },
        other_config={
            "base_template_name": "Debian Bookworm 12",
            "install-methods": "cdrom,nfs,http,ftp",
            "linux_template": "true",
            "mac_seed": str(uuid.UUID(int=i + 100_000_000)),
            "import_task": "OpaqueRef:NULL",
            "folder": "/bench/group-" + str(i % 50),
            "xo:resource_set": "",
            "auto_poweron": "false",
            "owner": f"user{i % 17}",
            "created_by": "store_scale",
        },
        bios_strings={
            "bios-vendor": "Xen",
            "bios-version": "",
            "system-manufacturer": "Xen",
            "system-product-name": "HVM domU",
            "system-version": "",
            "system-serial-number": "",
            "baseboard-manufacturer": "",
            "hp-rombios": "",
            "oem-1": "Xen",
            "oem-2": "MS_VM_CERT/SHA1/bdbeb6e0a816d43fa6d3fe8aaef04c2bad9d3e3d",
        },
        metrics="OpaqueRef:" + str(uuid.UUID(int=i + 200_000_000)),
        guest_metrics="OpaqueRef:" + str(uuid.UUID(int=i + 300_000_000)),
        domid=i % 1000 + 1,
        domain_type="hvm",
        tags=["bench", f"rack-{i % 8}"],
        snapshot_time=now(),
        generation_id=f"{i}:{i * 7}",
    )
    return "OpaqueRef:" + u, rec


def vm_template() -> dict[str, Any]:
    api = model.load()
    return {f.name: f.default for f in api.classes["VM"].fields}


async def build(path: Path, n: int) -> float:
    api = model.load()
    store = Store(api, path)
    await store.open()
    template = vm_template()
    t0 = time.perf_counter()
    for i in range(n):
        ref, rec = vm_record(i, template)
        store.create("VM", ref, rec)
        if i % 5000 == 4999:
            await store.sync()
    await store.sync()
    elapsed = time.perf_counter() - t0
    await store.close()
    return elapsed


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_child(path: str) -> None:
    """Runs in a fresh interpreter, as a daemon start would: open() time and RSS."""
    api = model.load()
    before = rss_kib()

    async def go() -> dict[str, float]:
        store = Store(api, Path(path))
        t0 = time.perf_counter()
        await store.open()
        elapsed = time.perf_counter() - t0
        result = {
            "seconds": elapsed,
            "objects": sum(len(store.table(c)) for c in store.classes()),
            "rss_before_mib": before / 1024,
            "rss_after_mib": rss_kib() / 1024,
        }
        await store.close()
        return result

    print(json.dumps(asyncio.run(go())))


def measure_open(path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--open-child", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def fsync_latency(directory: Path, rounds: int = 200) -> dict[str, float]:
    """Plain write+fsync of 4 KiB, the floor under any durable commit."""
    path = directory / "fsync.probe"
    samples = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        block = b"x" * 4096
        for i in range(rounds):
            os.pwrite(fd, block, (i % 64) * 4096)
            t0 = time.perf_counter()
            os.fsync(fd)
            samples.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    samples.sort()
    return {
        "median_ms": statistics.median(samples) * 1e3,
        "p99_ms": samples[int(len(samples) * 0.99) - 1] * 1e3,
        "per_second": 1 / statistics.mean(samples),
    }


async def group_commit(path: Path, workers: int, seconds: float, durable: bool) -> dict[str, float]:
    api = model.load()
    store = Store(api, path, durable=durable)
    await store.open()
    template = vm_template()
    refs = []
    for i in range(workers * 4):
        ref, rec = vm_record(i, template)
        store.create("VM", ref, rec)
        refs.append(ref)
    await store.sync()
    batches0 = store.batches_committed
    writes = 0
    stop = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal writes
        k = 0
        while time.perf_counter() < stop:
            ref = refs[w * 4 + k % 4]
            other = dict(store.table("VM")[ref]["other_config"])
            other["counter"] = str(k)
            store.update("VM", ref, {"other_config": other})
            await store.sync()
            writes += 1
            k += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    elapsed = time.perf_counter() - t0
    batches = store.batches_committed - batches0
    await store.close()
    return {
        "writes_per_s": writes / elapsed,
        "commits_per_s": batches / elapsed,
        "writes_per_commit": writes / batches if batches else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--rss-objects", type=int, default=10_000)
    parser.add_argument("--open-runs", type=int, default=3)
    parser.add_argument("--workers", default="1,8,64", help="comma-separated writer counts")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--dir", type=Path, default=None, help="where the store files go")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--open-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.open_child:
        open_child(args.open_child)
        return
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        d = Path(tmp)
        results["fsync"] = fsync_latency(d)
        f = results["fsync"]
        print(
            f"plain 4 KiB write+fsync on this disk: median {f['median_ms']:.3f} ms, "
            f"p99 {f['p99_ms']:.3f} ms ({f['per_second']:.0f}/s)",
            flush=True,
        )

        big = d / "big.db"
        results["build_s"] = asyncio.run(build(big, args.objects))
        results["file_mb"] = big.stat().st_size / 2**20
        runs = [measure_open(big) for _ in range(args.open_runs)]
        results["open"] = runs
        r = runs[-1]
        print(
            f"open() of {r['objects']:.0f} VM objects: "
            + ", ".join(f"{x['seconds']:.2f}" for x in runs)
            + f" s over {len(runs)} fresh processes, RSS {r['rss_after_mib']:.0f} MiB "
            f"(file {results['file_mb']:.0f} MiB)"
        )

        small = d / "small.db"
        asyncio.run(build(small, args.rss_objects))
        results["rss"] = r = measure_open(small)
        print(
            f"RSS with {r['objects']:.0f} VM records loaded: {r['rss_after_mib']:.0f} MiB "
            f"(interpreter + API description alone: {r['rss_before_mib']:.0f} MiB); "
            f"open() {r['seconds']:.2f} s"
        )

        for workers in (int(w) for w in args.workers.split(",")):
            for durable in (True, False):
                gc_path = d / f"gc-{workers}-{durable}.db"
                r = asyncio.run(group_commit(gc_path, workers, args.seconds, durable))
                kind = "durable" if durable else "memory"
                results[f"group_commit_{kind}_{workers}"] = r
                print(
                    f"{workers:3d} writers ({kind}): {r['writes_per_s']:9.0f} writes/s, "
                    f"{r['commits_per_s']:6.0f} commits (WAL fsyncs)/s, "
                    f"{r['writes_per_commit']:5.1f} writes per commit"
                )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
