"""Storage benchmark "Clone": ``VDI.clone`` of a 10 GiB disk holding 2 GiB of written data,
timed from request sent to reply received by an XML-RPC client (target < 100 ms).

Each round clones the source again (its chain of hidden bases grows by one, as repeated
clones of one disk make it) and the clone is destroyed outside the timing. For context
the table also shows the floor of what a clone must do on disk: two ``qemu-img create``
overlays, one after the other.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from fixtures import Fixtures
from harness import median, p90
from report import Row, Section
from storage_bench import MiB, StorageServer, new_vdi, random_file, upload

TARGET_S = 0.100
GiB = 1 << 30


def _overlay_floor(work: Path, rounds: int) -> float:
    base = work / "floor-base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "10G"], check=True)
    times = []
    for i in range(rounds):
        t0 = time.perf_counter()
        for side in ("a", "b"):
            subprocess.run(
                [
                    "qemu-img",
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-u",
                    "-b",
                    base.name,
                    "-F",
                    "qcow2",
                    str(work / f"floor-{i}-{side}.qcow2"),
                    "10G",
                ],
                check=True,
            )
        times.append(time.perf_counter() - t0)
    return median(times)


def run(fx: Fixtures, quick: bool) -> Section:
    t_start = time.perf_counter()
    written = (256 if quick else 2048) * MiB
    rounds = 5 if quick else 20
    work = fx.fresh("vdi-clone")
    work.mkdir(parents=True)
    server = StorageServer(work / "data")
    section = Section("VDI.clone of a 10 GiB disk")
    try:
        data = work / "data.bin"
        random_file(data, written)
        server.start()
        rpc = server.rpc()
        sr = rpc("pool.get_default_SR", rpc("pool.get_all")[0])
        vdi = new_vdi(rpc, sr, 10 * GiB, "bench clone source")
        upload(server, rpc, vdi, data, tls=False)
        data.unlink()
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            clone = rpc("VDI.clone", vdi, {})
            times.append(time.perf_counter() - t0)
            rpc("VDI.destroy", clone)
        floor = _overlay_floor(work, rounds)
        med = median(times)
        section.rows.append(
            Row(
                f"VDI.clone, median of {rounds}",
                f"{med * 1e3:.1f} ms",
                f"{floor * 1e3:.1f} ms",
                f"{med / floor:.1f}x",
                "< 100 ms",
                None if quick else med < TARGET_S,
            )
        )
        section.rows.append(
            Row(
                f"VDI.clone, p90 / max of {rounds}",
                f"{p90(times) * 1e3:.1f} / {max(times) * 1e3:.1f} ms",
            )
        )
        section.notes.append(
            f"10 GiB qcow2 disk with {written // MiB} MiB of random data written through "
            "/import_raw_vdi; floor = two `qemu-img create -b` overlays in a row"
        )
        section.data = {"seconds": times, "floor_seconds": floor}
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    section.seconds = time.perf_counter() - t_start
    return section
