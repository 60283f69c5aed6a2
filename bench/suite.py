"""The benchmark suite behind ``bench/run``: runs the chosen benchmarks, prints a Markdown
report (figures, floors measured in the same run, ratios, targets) and optionally saves it.

    bench/run [--quick] [--only small,reads,writes,scale,stages] [--dir DIR] [--json OUT] [--md OUT]

Sections outside the default set (real VMs, minutes each) run only when named in --only.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import async_overhead
import big_reads
import boot_storm
import durable_writes
import events_idle
import events_latency
import events_resync
import qemu_vms
import raw_transfer
import small_calls
import stages
import startup_scale
import vdi_clone
from fixtures import Fixtures
from harness import machine_facts
from report import Section, as_json, markdown, section_markdown

BENCHMARKS: dict[str, Callable[[Fixtures, bool], Section]] = {
    "small": small_calls.run,
    "reads": big_reads.run,
    "writes": durable_writes.run,
    "scale": startup_scale.run,
    "stages": stages.run,
    "events-latency": events_latency.run,
    "events-idle": events_idle.run,
    "events-resync": events_resync.run,
    "async": async_overhead.run,
    "transfer": raw_transfer.run,
    "clone": vdi_clone.run,
    "boot": boot_storm.run,
    "qemu": qemu_vms.run,
}
#: Run only when asked for by name: real QEMU guests under TCG take several minutes.
OPT_IN = frozenset({"qemu"})
DEFAULT = [name for name in BENCHMARKS if name not in OPT_IN]


def _interrupted(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer rounds and shorter runs")
    ap.add_argument(
        "--only",
        default=",".join(DEFAULT),
        help="comma-separated subset of: "
        + ", ".join(BENCHMARKS)
        + " (default: all but "
        + ", ".join(sorted(OPT_IN))
        + ")",
    )
    ap.add_argument("--dir", type=Path, default=None, help="where data directories go")
    ap.add_argument("--keep", action="store_true", help="keep the data directories")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    ap.add_argument("--md", type=Path, default=None, help="also write the report here")
    ns = ap.parse_args(argv)
    chosen = [n.strip() for n in ns.only.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(unknown)}")
    signal.signal(signal.SIGTERM, _interrupted)
    command = "bench/run " + shlex.join(sys.argv[1:] if argv is None else argv)
    root = Path(tempfile.mkdtemp(prefix="openxapi-bench-", dir=ns.dir))
    facts = machine_facts()
    facts["mode"] = "quick" if ns.quick else "full"
    sections: list[Section] = []
    t0 = time.perf_counter()
    try:
        fx = Fixtures(root)
        for name in chosen:
            print(f"== {name} ...", file=sys.stderr, flush=True)
            section = BENCHMARKS[name](fx, ns.quick)
            sections.append(section)
            print("\n".join(section_markdown(section)), file=sys.stderr, flush=True)
        if ns.keep:
            facts["data directory"] = str(root)
        facts["first start of an empty data dir"] = f"{fx.first_start_s:.2f} s"
        for key, info in fx.info.items():
            facts[f"fixture {key}"] = ", ".join(
                f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v:,}" for k, v in info.items()
            )
        facts["suite wall time"] = f"{time.perf_counter() - t0:.0f} s"
    finally:
        if not ns.keep:
            shutil.rmtree(root, ignore_errors=True)
    text = markdown(sections, facts, command)
    print(text)
    if ns.md is not None:
        ns.md.write_text(text + "\n")
    if ns.json is not None:
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps(as_json(sections, facts, command), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
