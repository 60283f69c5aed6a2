"""Storage benchmark "Raw transfer": a disk holding 2 GiB of random data exported, then
imported, with ``/export_raw_vdi`` and ``/import_raw_vdi`` over plain HTTP and HTTPS on
loopback (targets: 60% and 40% of the floor).

The floor is ``dd bs=1M conv=fsync`` between the same kinds of files, in the same run:
for the export, from the disk's qcow2 image to a new file; for the import, from the
random-data file to a new file. Every source has its cached pages dropped first, and every
timed copy ends with its data fsynced (the import's task ends only once the new image is
durable), so the server's copy and dd's copy pay for the same disk work.
"""

from __future__ import annotations

import shutil
import time

from fixtures import Fixtures
from harness import median
from report import Row, Section
from storage_bench import (
    MiB,
    StorageServer,
    dd,
    download,
    mbps,
    new_vdi,
    random_file,
    upload,
    vdi_file,
)

TARGETS = {"HTTP": 0.60, "HTTPS": 0.40}


def run(fx: Fixtures, quick: bool) -> Section:
    t_start = time.perf_counter()
    size = (256 if quick else 2048) * MiB
    work = fx.fresh("raw-transfer")
    work.mkdir(parents=True)
    server = StorageServer(work / "data")
    section = Section("Raw disk transfer (/export_raw_vdi, /import_raw_vdi)")
    try:
        src = work / "random.bin"
        random_file(src, size)
        server.start()
        rpc = server.rpc()
        sr = rpc("pool.get_default_SR", rpc("pool.get_all")[0])
        vdi = new_vdi(rpc, sr, size, "bench source")
        seed_s = upload(server, rpc, vdi, src, tls=False)
        image = vdi_file(server, rpc, sr, vdi)
        rounds = 1 if quick else 3
        results: dict[str, list[float]] = {}
        floors: dict[str, list[float]] = {}
        for label, tls in (("HTTP", False), ("HTTPS", True)):
            exp, imp = f"export {label}", f"import {label}"
            for name in (exp, imp):
                results[name], floors[name] = [], []
            for i in range(rounds):
                # Alternate which copy goes first, so neither always finds the host's own
                # cache (below the guest's) warmer than the other does.
                order = ("floor", "server") if i % 2 == 0 else ("server", "floor")
                for who in order:
                    if who == "floor":
                        floors[exp].append(dd(image, work / "dd-export.bin"))
                    else:
                        results[exp].append(
                            download(server, rpc, vdi, work / "exported.bin", tls, cached=image)
                        )
                target = new_vdi(rpc, sr, size, f"bench target {label}")
                for who in order:
                    if who == "floor":
                        floors[imp].append(dd(src, work / "dd-import.bin"))
                    else:
                        results[imp].append(upload(server, rpc, target, src, tls))
                rpc("VDI.destroy", target)
        if not filecmp_equal(src, work / "exported.bin"):
            raise RuntimeError("the exported disk differs from the data imported")
        for what, all_seconds in results.items():
            seconds = median(all_seconds)
            floor = median(floors[what])
            ratio = floor / seconds
            target = TARGETS[what.split()[1]]
            section.rows.append(
                Row(
                    f"{what} of {size // MiB} MiB, median of {rounds}",
                    f"{mbps(size, seconds):,.0f} MB/s ({seconds:.2f} s)",
                    f"{mbps(size, floor):,.0f} MB/s ({floor:.2f} s)",
                    f"{ratio:.0%}",
                    f">= {target:.0%} of floor",
                    None if quick else ratio >= target,
                )
            )
        section.notes.append(
            f"disk of {size // MiB} MiB of random data in the local qcow2 SR; seeding it "
            f"took {seed_s:.1f} s; floor = dd bs=1M conv=fsync between the same kinds of "
            "files, source pages dropped before every copy (server and floor alike), the "
            "two copies taken in alternating order; each transfer is timed until the data is "
            "fsynced (export: by the client; import: the task ends once the image is durable)"
        )
        section.data = {"size": size, "seconds": results, "floor_seconds": floors}
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    section.seconds = time.perf_counter() - t_start
    return section


def filecmp_equal(a: object, b: object) -> bool:
    """Byte-for-byte comparison of two files."""
    import filecmp

    return filecmp.cmp(str(a), str(b), shallow=False)
