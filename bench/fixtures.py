"""Data directories the benchmarks start servers on, built once per run.

``world``: what a first start creates (pool, host, dom0, roles, root account) — the empty
store. ``reads``: the world plus 10,000 realistic VMs (80,000 objects). ``scale``: a copy
of ``reads`` extended to 100,000 VM-related objects. Stores are filled offline with the Store
API while no server runs; the filling runs in a child process so the runner stays small.
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import vmrecords
from harness import Server

_CTX = mp.get_context("fork")


def _child(q: mp.SimpleQueue[Any], data_dir: Path, count: int, first: int) -> None:
    try:
        q.put(vmrecords.populate(data_dir, count, first))
    except BaseException as exc:
        q.put(exc)


def populate_in_child(data_dir: Path, count: int, first: int = 0) -> vmrecords.Populated:
    q: mp.SimpleQueue[Any] = _CTX.SimpleQueue()
    p = _CTX.Process(target=_child, args=(q, data_dir, count, first))
    p.start()
    result = q.get()
    p.join()
    if isinstance(result, BaseException):
        raise result
    assert isinstance(result, vmrecords.Populated)
    return result


@dataclass
class Fixtures:
    root: Path
    read_vms: int = 10_000
    scale_objects: int = 100_000
    first_start_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    _world: Path | None = None
    _reads: Path | None = None
    _scale: Path | None = None
    vm_refs: list[str] = field(default_factory=list)

    def fresh(self, name: str) -> Path:
        """A new, empty data directory."""
        path = self.root / name
        if path.exists():
            shutil.rmtree(path)
        return path

    def world(self) -> Path:
        if self._world is None:
            path = self.fresh("world")
            srv = Server(path)
            self.first_start_s = srv.start()
            srv.stop()
            self._world = path
        return self._world

    def copy(self, src: Path, name: str) -> Path:
        dst = self.fresh(name)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.sock", "*.log"))
        return dst

    def reads(self) -> Path:
        if self._reads is None:
            path = self.copy(self.world(), "reads")
            made = populate_in_child(path, self.read_vms)
            self.vm_refs = made.vms
            self.info["reads"] = {
                "vms": self.read_vms,
                "objects_added": made.objects,
                "objects_total": made.total_objects,
                "build_s": made.seconds,
                "file_mib": (path / "state.db").stat().st_size / 2**20,
            }
            self._reads = path
        return self._reads

    def scale(self) -> Path:
        """A copy of ``reads`` (servers may have run on it: a few sessions more) extended to
        ``scale_objects`` VM-related objects."""
        if self._scale is None:
            path = self.copy(self.reads(), "scale")
            per_vm = vmrecords.OBJECTS_PER_VM
            extra = self.scale_objects // per_vm - self.read_vms
            made = populate_in_child(path, extra, first=self.read_vms)
            self.info["scale"] = {
                "vms": self.read_vms + extra,
                "vm_objects": (self.read_vms + extra) * per_vm,
                "objects_total": made.total_objects,
                "build_s": made.seconds,
                "file_mib": (path / "state.db").stat().st_size / 2**20,
            }
            self._scale = path
        return self._scale
