"""The QEMU domain backend: each running VM is one daemonised qemu-system-x86_64 process.

QEMU is started with ``-daemonize`` so it never is a child of the server: it outlives a
restart (or a crash) of the server and is re-adopted from the small ``domain.json`` kept
beside its control sockets. Everything about a domain lives in one directory under the
runtime root, so a domain that is gone leaves nothing behind once that directory goes.
Control is over QMP; guest facts come from the real guest agent; power-off by ACPI.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from openxapi.xenops.backend import (
    BackendError,
    BadDomainState,
    DiskSpec,
    DomainBackend,
    DomainExists,
    DomainInfo,
    DomainNotFound,
    DomainSpec,
    DomainState,
    GuestInfo,
    HostCapacity,
    InsufficientResources,
    ShutdownTimeout,
    SuspendImage,
)
from openxapi.xenops.qemu import accel as accel_probe
from openxapi.xenops.qemu import cmdline
from openxapi.xenops.qemu import migrate as remote_migration
from openxapi.xenops.qemu.agent import AgentUnavailable, query_guest, request_shutdown
from openxapi.xenops.qemu.firmware import EfiVarsImages
from openxapi.xenops.qemu.monitor import Monitor, MonitorGone

log = logging.getLogger("openxapi.qemu")

MIB = 1 << 20
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Where QEMU lists devices added with an id (hot-plugged vCPUs among them).
PLUGGED = "/machine/peripheral/"
#: How often an ACPI power-button press is repeated while a clean shutdown waits (a guest
#: still booting has no handler yet and loses the first press).
POWERDOWN_REPEAT = 2.0


@dataclass(frozen=True, slots=True)
class QemuSettings:
    """What the backend is configured with (the server derives these from its options)."""

    binary: str = "qemu-system-x86_64"
    #: "auto" (KVM once a probe boot proved it works, else TCG), "kvm" or "tcg".
    accel: str = "auto"
    #: A kernel and initrd the KVM probe boots (the tiny guest image).
    probe_kernel: str = ""
    probe_initrd: str = ""
    #: Host memory and CPUs offered to guests (0: what the machine has).
    host_memory: int = 0
    host_cpus: int = 0
    #: Memory kept back for the host itself and QEMU's own overhead.
    memory_reserve: int = 1024 * MIB
    #: Seconds between guest-agent polls once the agent has answered.
    agent_poll: float = 10.0
    #: The serial log of a domain is cut back to half this size when it grows past it.
    serial_log_limit: int = 1 * MIB
    #: Where sockets and runtime state live (empty: /run/openxapi or the temp dir).
    runtime_root: str = ""


@dataclass(slots=True)
class _Domain:
    uuid: str
    domid: int
    paths: cmdline.DomainPaths
    pid: int
    memory: int
    vcpus: int
    hvm: bool
    start_time: float
    macs: dict[str, str]
    monitor: Monitor
    state: DomainState = "running"
    memory_actual: int = 0
    guest: GuestInfo | None = None
    stopping: bool = False
    utilisation: float = -1.0
    #: Per VBD slot, the generation of the link QEMU opened its current top image by.
    links: dict[str, int] = field(default_factory=dict)
    #: Per VBD slot, the block node of a hot-plugged disk (removed on unplug).
    nodes: dict[str, str] = field(default_factory=dict)
    #: The network namespace QEMU runs in ("" for the host's own).
    netns: str = ""
    cpu_sample: tuple[float, float] = (0.0, 0.0)
    watcher: asyncio.Task[None] | None = None
    agent_kick: asyncio.Event = field(default_factory=asyncio.Event)

    def info(self) -> DomainInfo:
        return DomainInfo(
            uuid=self.uuid,
            domid=self.domid,
            state=self.state,
            memory_actual=self.memory_actual or self.memory,
            vcpus=self.vcpus,
            start_time=self.start_time,
            hvm=self.hvm,
            guest=self.guest,
            vcpus_utilisation=(self.utilisation,) * self.vcpus if self.utilisation >= 0 else (),
            vnc=f"unix:{self.paths.vnc}",
        )

    def record(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "domid": self.domid,
            "pid": self.pid,
            "memory": self.memory,
            "vcpus": self.vcpus,
            "hvm": self.hvm,
            "start_time": self.start_time,
            "macs": self.macs,
            "links": self.links,
            "nodes": self.nodes,
            "netns": self.netns,
        }


def _pid_alive(pid: int, uuid: str) -> bool:
    """True when ``pid`` is still the QEMU process of domain ``uuid``."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return uuid.encode() in cmd and b"qemu" in cmd


def _meminfo(key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _runtime_root(data_dir: Path | None, configured: str) -> Path:
    """A short directory for sockets (unix socket paths are limited to 107 bytes)."""
    if configured:
        return Path(configured)
    key = hashlib.sha256(str(data_dir.resolve() if data_dir else "").encode()).hexdigest()[:12]
    base = Path("/run/openxapi")
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not os.access(base, os.W_OK):
            raise PermissionError(str(base))
    except OSError:
        base = Path(tempfile.gettempdir()) / f"openxapi-{os.getuid()}"
        base.mkdir(mode=0o700, exist_ok=True)
    return base / key


class QemuBackend(DomainBackend):
    """Real VMs in QEMU (TCG, or KVM once proven), driven over QMP."""

    name = "qemu"

    def __init__(self, data_dir: Path | None, settings: QemuSettings | None = None) -> None:
        self.settings = settings or QemuSettings()
        self.data_dir = data_dir
        self.run_root = _runtime_root(data_dir, self.settings.runtime_root)
        self.images = (data_dir or self.run_root) / "images"
        self._domains: dict[str, _Domain] = {}
        self._busy: set[str] = set()
        self._exits: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self.accel = "tcg" if self.settings.accel == "auto" else self.settings.accel
        self._probe: asyncio.Task[None] | None = None
        self._efivars = EfiVarsImages(self.run_root, self._variables_changed)

    @property
    def capabilities(self) -> Mapping[str, bool]:
        return {
            "pause": True,
            "suspend": True,
            "clean_shutdown": True,
            "clean_reboot": True,
            "guest_agent": True,
            "crash_injection": False,
            "live_migrate": True,
            "survives_restart": True,
        }

    # ---- start-up and shutdown of the backend ----------------------------------------------
    async def open(self) -> list[DomainInfo]:
        self.run_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._start_probe()
        adopted: list[DomainInfo] = []
        for entry in sorted(self.run_root.iterdir()):
            if not (entry / "domain.json").exists():
                continue
            d = await self._adopt(cmdline.DomainPaths(entry))
            if d is not None:
                adopted.append(d.info())
        return adopted

    def _start_probe(self) -> None:
        if self.settings.accel != "auto" or self.data_dir is None:
            return
        cache = self.data_dir / "accel.json"
        hit = accel_probe.cached(cache, self.settings.binary)
        if hit is not None:
            self.accel = hit
            return

        async def run() -> None:
            try:
                self.accel = await accel_probe.probe(
                    cache,
                    self.settings.binary,
                    self.settings.probe_kernel,
                    self.settings.probe_initrd,
                )
            except Exception:
                log.exception("the KVM probe failed; using TCG")

        self._probe = asyncio.get_running_loop().create_task(run())

    async def _adopt(self, paths: cmdline.DomainPaths) -> _Domain | None:
        try:
            rec = json.loads(paths.record.read_text())
            uuid, pid = str(rec["uuid"]), int(rec["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            self._remove_dir(paths)
            return None
        if not _pid_alive(pid, uuid):
            log.warning("domain %s: its QEMU process %d is gone", uuid, pid)
            self._exits[uuid] = "vanished"
            self._remove_dir(paths)
            return None
        monitor = Monitor(f"qemu-{uuid[:8]}")
        try:
            await monitor.connect(paths.qmp, timeout=5.0)
            status = await monitor.execute("query-status")
        except (MonitorGone, RuntimeError):
            await monitor.close()
            log.warning("domain %s: QMP does not answer; destroying it", uuid)
            self._kill(pid, uuid)
            self._exits[uuid] = "vanished"
            self._remove_dir(paths)
            return None
        d = _Domain(
            uuid=uuid,
            domid=int(rec["domid"]),
            paths=paths,
            pid=pid,
            memory=int(rec["memory"]),
            vcpus=int(rec["vcpus"]),
            hvm=bool(rec.get("hvm", True)),
            start_time=float(rec["start_time"]),
            macs={str(k): str(v) for k, v in rec.get("macs", {}).items()},
            monitor=monitor,
            state=_state_of(status),
            links={str(k): int(v) for k, v in rec.get("links", {}).items()},
            nodes={str(k): str(v) for k, v in rec.get("nodes", {}).items()},
            netns=str(rec.get("netns", "")),
        )
        self._domains[uuid] = d
        self._watch(d)
        return d

    async def close(self) -> None:
        await super().close()
        if self._probe is not None:
            self._probe.cancel()
        for d in list(self._domains.values()):
            if d.watcher is not None:
                d.watcher.cancel()
                with contextlib.suppress(BaseException):
                    await d.watcher
            await d.monitor.close()
        self._domains.clear()

    # ---- helpers -----------------------------------------------------------------------------
    def _get(self, uuid: str) -> _Domain:
        d = self._domains.get(uuid)
        if d is None:
            raise DomainNotFound(uuid)
        return d

    def _next_domid(self) -> int:
        counter = self.run_root / "next-domid"
        try:
            domid = int(counter.read_text())
        except (OSError, ValueError):
            domid = 1
        used = {d.domid for d in self._domains.values()}
        while domid in used:
            domid += 1
        counter.write_text(str(domid + 1))
        return domid

    def _remove_dir(self, paths: cmdline.DomainPaths) -> None:
        shutil.rmtree(paths.root, ignore_errors=True)

    @staticmethod
    def _kill(pid: int, uuid: str) -> None:
        if _pid_alive(pid, uuid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    async def host_capacity(self) -> HostCapacity:
        total = self.settings.host_memory or _meminfo("MemTotal")
        usable = max(total - self.settings.memory_reserve, 0)
        used = sum(d.memory for d in self._domains.values())
        return HostCapacity(
            memory_total=total,
            memory_free=max(usable - used, 0),
            cpus=self.settings.host_cpus or os.cpu_count() or 1,
        )

    # ---- launching --------------------------------------------------------------------------
    async def _launch(
        self, spec: DomainSpec, *, incoming: str = "", paused: bool = False
    ) -> _Domain:
        """Start QEMU for ``spec``; on failure nothing of it is left."""
        if spec.uuid in self._domains or spec.uuid in self._busy:
            raise DomainExists(spec.uuid)
        cap = await self.host_capacity()
        if spec.memory > cap.memory_free:
            raise InsufficientResources(spec.uuid, f"{spec.memory} > {cap.memory_free}")
        self._busy.add(spec.uuid)
        paths = cmdline.DomainPaths(self.run_root / spec.uuid)
        try:
            shutil.rmtree(paths.root, ignore_errors=True)
            paths.root.mkdir(mode=0o700, parents=True)
            domid = self._next_domid()
            spec, links = _linked_disks(spec, paths)
            self._efivars.prepare(spec, paths.root)
            argv = cmdline.build(
                spec,
                paths,
                binary=self.settings.binary,
                accel=self.accel,
                incoming=incoming,
                paused=paused,
            )
            netns = {n.netns for n in spec.nics if n.netns}
            if len(netns) > 1:
                raise BackendError(spec.uuid, "NICs in more than one network namespace")
            if netns and spec.forwards:  # they would bind inside the namespace, not here
                raise BackendError(spec.uuid, "port forwards on a VM in a network namespace")
            namespace = netns.pop() if netns else ""
            pid = await _spawn(spec.uuid, argv, paths, namespace)
            monitor = Monitor(f"qemu-{spec.uuid[:8]}")
            try:
                await monitor.connect(paths.qmp)
            except MonitorGone as e:
                self._kill(pid, spec.uuid)
                raise BackendError(spec.uuid, str(e)) from None
            d = _Domain(
                uuid=spec.uuid,
                domid=domid,
                paths=paths,
                pid=pid,
                memory=spec.memory,
                vcpus=spec.vcpus,
                hvm=spec.hvm,
                start_time=time.time(),
                macs={n.mac.lower(): n.device for n in spec.nics},
                monitor=monitor,
                state="paused" if paused or incoming else "running",
                links=links,
                netns=namespace,
            )
            self._save(d)
        except BaseException:
            self._busy.discard(spec.uuid)
            with contextlib.suppress(OSError, ValueError):
                self._kill(int(paths.pidfile.read_text().strip()), spec.uuid)
            self._efivars.gone(spec.uuid, paths.root)
            self._remove_dir(paths)
            raise
        self._busy.discard(spec.uuid)
        self._domains[spec.uuid] = d
        self._watch(d)
        return d

    async def start(self, spec: DomainSpec, paused: bool = False) -> DomainInfo:
        d = await self._launch(spec, paused=paused)
        return d.info()

    # ---- watching a domain --------------------------------------------------------------------
    def _watch(self, d: _Domain) -> None:
        d.monitor.wake = d.agent_kick
        d.watcher = asyncio.get_running_loop().create_task(self._watch_loop(d))

    async def _watch_loop(self, d: _Domain) -> None:
        """Follow the domain until its process is gone: its events, its agent, its log."""
        seen = 0
        poll = 0.5
        next_agent = time.monotonic() + 0.5
        while not d.monitor.gone.is_set():
            timeout = max(min(next_agent - time.monotonic(), 1.0), 0.05)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(d.agent_kick.wait(), timeout)
            d.agent_kick.clear()
            events = d.monitor.events[seen:]
            seen += len(events)
            changed = False
            for _, name, data in events:
                if name == "STOP" and d.state == "running":
                    d.state = "paused"
                elif name == "RESUME":
                    d.state = "running"
                elif name == "RESET" and data.get("guest"):
                    d.start_time = time.time()
                    d.guest = None
                    poll = 0.5
                    changed = True
                elif name == "GUEST_PANICKED":
                    d.state = "crashed"
                    changed = True
                elif name == "BALLOON_CHANGE":
                    d.memory_actual = int(data.get("actual", 0))
            if changed:
                self._changed(d.uuid)
            if d.monitor.gone.is_set():
                break
            if time.monotonic() >= next_agent:
                self._efivars.poll(d.uuid)
                if d.state == "running":
                    poll = await self._poll_agent(d, poll)
                if self._sample_usage(d) or await self._sample_balloon(d):
                    self._changed(d.uuid)
                self._trim_serial(d)
                next_agent = time.monotonic() + poll
        await self._gone(d)

    async def _poll_agent(self, d: _Domain, poll: float) -> float:
        try:
            guest = await query_guest(d.paths.agent, d.macs, timeout=1.0)
        except (AgentUnavailable, OSError, ValueError):
            return min(poll * 1.5, 2.0) if d.guest is None else self.settings.agent_poll
        if d.guest is None or _differs(d.guest, guest):
            d.guest = guest
            self._changed(d.uuid)
        elif d.guest is not None:
            d.guest = replace(d.guest, last_updated=guest.last_updated)
        if not guest.networks and d.macs:
            return 1.0  # the agent answers before the guest has its address
        return self.settings.agent_poll

    def _sample_usage(self, d: _Domain) -> bool:
        """Update the vCPU utilisation from the process's CPU time; True when it moved
        noticeably (so VM_metrics are rewritten only then)."""
        try:
            fields = Path(f"/proc/{d.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return False
        cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        now = time.monotonic()
        last_cpu, last_at = d.cpu_sample
        d.cpu_sample = (cpu, now)
        if last_at == 0.0 or now - last_at < 0.5:
            return False
        value = min(max((cpu - last_cpu) / (now - last_at) / max(d.vcpus, 1), 0.0), 1.0)
        value = round(value, 3)
        moved = d.utilisation < 0 or abs(value - d.utilisation) >= 0.05
        d.utilisation = value
        return moved

    async def _sample_balloon(self, d: _Domain) -> bool:
        """The guest's current memory as the balloon driver reports it."""
        try:
            reply = await d.monitor.execute("query-balloon")
        except (MonitorGone, RuntimeError):
            return False
        actual = int(reply.get("actual", 0)) if isinstance(reply, dict) else 0
        if actual and actual != (d.memory_actual or d.memory):
            d.memory_actual = actual
            return True
        return False

    def _trim_serial(self, d: _Domain) -> None:
        """Keep the serial log bounded: QEMU appends (O_APPEND), so cutting it is safe."""
        limit = self.settings.serial_log_limit
        try:
            if d.paths.serial.stat().st_size <= limit:
                return
            with open(d.paths.serial, "r+b") as f:
                f.seek(-limit // 2, os.SEEK_END)
                tail = f.read()
                f.seek(0)
                f.truncate()
                f.write(tail)
        except OSError:
            pass

    async def _gone(self, d: _Domain) -> None:
        """The process exited: forget the domain, remove its files, say why it went."""
        if self._domains.get(d.uuid) is not d:
            return
        await d.monitor.close()
        deadline = time.monotonic() + 5.0
        while _pid_alive(d.pid, d.uuid) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self._kill(d.pid, d.uuid)
        del self._domains[d.uuid]
        self._efivars.gone(d.uuid, d.paths.root)
        self._remove_dir(d.paths)
        if d.stopping:
            return
        reason = d.monitor.last_shutdown_reason()
        if reason in ("guest-shutdown", "host-qmp-system-reset", "guest-reset"):
            self._exits[d.uuid] = "shutdown"
        elif reason == "guest-panic" or d.state == "crashed":
            self._exits[d.uuid] = "crash"
        else:
            self._exits[d.uuid] = "vanished"
        log.info("domain %s exited (%s)", d.uuid, self._exits[d.uuid])
        self._changed(d.uuid)

    def exit_reason(self, uuid: str) -> str | None:
        return self._exits.pop(uuid, None)

    async def _stop_process(self, d: _Domain, timeout: float = 5.0) -> None:
        """Quit QEMU (SIGKILL when it does not go) and wait until its files are gone."""
        d.stopping = True
        with contextlib.suppress(MonitorGone, RuntimeError):
            await d.monitor.execute("quit")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(d.monitor.gone.wait(), timeout)
        if not d.monitor.gone.is_set():
            self._kill(d.pid, d.uuid)
        if d.watcher is not None:
            with contextlib.suppress(BaseException):
                await d.watcher
        await self._gone(d)

    # ---- power operations ----------------------------------------------------------------------
    async def clean_shutdown(self, uuid: str, timeout: float) -> None:
        d = self._get(uuid)
        if d.state != "running":
            raise BadDomainState(uuid, d.state)
        d.stopping = True
        deadline = time.monotonic() + timeout
        try:
            while not d.monitor.gone.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ShutdownTimeout(uuid, f"{timeout}")
                with contextlib.suppress(MonitorGone, RuntimeError):
                    await d.monitor.execute("system_powerdown")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(d.monitor.gone.wait(), min(POWERDOWN_REPEAT, left))
        except BaseException:
            if not d.monitor.gone.is_set():
                d.stopping = False
            raise
        if d.watcher is not None:
            with contextlib.suppress(BaseException):
                await d.watcher
        await self._gone(d)

    async def hard_shutdown(self, uuid: str) -> None:
        d = self._domains.get(uuid)
        if d is None:
            return
        await self._stop_process(d)

    async def clean_reboot(self, uuid: str, timeout: float) -> DomainInfo:
        d = self._get(uuid)
        if d.state != "running":
            raise BadDomainState(uuid, d.state)
        since = time.monotonic()
        deadline = since + timeout
        asked = False
        while not asked:
            try:
                await request_shutdown(d.paths.agent, "reboot", timeout=1.0)
                asked = True
            except (AgentUnavailable, OSError):
                if time.monotonic() + 0.5 >= deadline:
                    raise ShutdownTimeout(uuid, f"{timeout}") from None
                await asyncio.sleep(0.5)
        got = await d.monitor.wait_event(("RESET",), since, max(deadline - time.monotonic(), 0))
        if got is None:
            raise ShutdownTimeout(uuid, f"{timeout}")
        if got == "GONE":
            raise DomainNotFound(uuid, "the domain exited while rebooting")
        d.start_time = time.time()
        d.guest = None
        d.state = "running"
        return d.info()

    async def hard_reboot(self, uuid: str) -> DomainInfo:
        d = self._get(uuid)
        try:
            await d.monitor.execute("system_reset")
            if d.state == "paused":
                await d.monitor.execute("cont")
        except MonitorGone:
            raise DomainNotFound(uuid) from None
        d.state = "running"
        d.start_time = time.time()
        d.guest = None
        return d.info()

    async def pause(self, uuid: str) -> DomainInfo:
        d = self._get(uuid)
        if d.state != "paused":
            await self._qmp(d, "stop")
            d.state = "paused"
        return d.info()

    async def unpause(self, uuid: str) -> DomainInfo:
        d = self._get(uuid)
        if d.state != "running":
            await self._qmp(d, "cont")
            d.state = "running"
            d.agent_kick.set()
        return d.info()

    async def _qmp(self, d: _Domain, cmd: str, args: Mapping[str, object] | None = None) -> Any:
        try:
            return await d.monitor.execute(cmd, args)
        except MonitorGone:
            raise DomainNotFound(d.uuid, "the QEMU process is gone") from None
        except RuntimeError as e:
            raise BackendError(d.uuid, str(e)) from None

    async def info(self, uuid: str) -> DomainInfo | None:
        d = self._domains.get(uuid)
        return None if d is None else d.info()

    async def list_domains(self) -> list[DomainInfo]:
        return [d.info() for d in self._domains.values()]

    # ---- vCPU hot-plug --------------------------------------------------------------------------
    async def set_vcpus(self, uuid: str, count: int) -> DomainInfo:
        """Plug vCPUs into free slots up to ``count`` (the machine was built with maxcpus =
        VCPUs_max), or unplug hot-plugged ones down to it (the guest releases them through
        ACPI). The vCPUs the domain was started with stay."""
        d = self._get(uuid)
        slots = await self._qmp(d, "query-hotpluggable-cpus")
        present = [c for c in slots if "qom-path" in c]
        if count > len(present):
            free = [c for c in slots if "qom-path" not in c]
            if count - len(present) > len(free):
                raise BackendError(uuid, f"only {len(slots)} vCPUs fit this domain")
            for c in free[: count - len(present)]:
                props = c["props"]
                ident = "vcpu-" + "-".join(str(props[k]) for k in sorted(props))
                await self._qmp(d, "device_add", {"driver": c["type"], "id": ident, **props})
        elif count < len(present):
            plugged = [c for c in present if str(c["qom-path"]).startswith(PLUGGED)]
            if len(present) - count > len(plugged):
                raise BackendError(uuid, "vCPUs the domain was started with cannot be unplugged")
            for c in plugged[: len(present) - count]:
                since = time.monotonic()
                await self._qmp(d, "device_del", {"id": str(c["qom-path"])[len(PLUGGED) :]})
                if await d.monitor.wait_event(("DEVICE_DELETED",), since, 30.0) is None:
                    raise BackendError(uuid, "the guest did not release a vCPU")
        d.vcpus = count
        self._save(d)
        return d.info()

    # ---- live migration (to this host) ----------------------------------------------------------
    async def migrate_local(self, uuid: str) -> DomainInfo:
        """A new QEMU, started from the running one's own command line in a directory of its
        own, receives the guest over a unix socket; the old one then quits and the new one's
        directory takes the domain's place."""
        d = self._get(uuid)
        if d.state != "running":
            raise BadDomainState(uuid, d.state)
        if d.nodes:
            raise BackendError(uuid, "disks were hot-plugged: restart the VM to migrate it")
        slots = await self._qmp(d, "query-hotpluggable-cpus")
        if any(str(c.get("qom-path", "")).startswith(PLUGGED) for c in slots):
            raise BackendError(uuid, "vCPUs were hot-plugged: restart the VM to migrate it")
        try:
            argv = Path(f"/proc/{d.pid}/cmdline").read_bytes().decode().split("\0")[:-1]
        except OSError:
            raise DomainNotFound(uuid, "the QEMU process is gone") from None
        staging = cmdline.DomainPaths(self.run_root / f"{uuid}.incoming")
        shutil.rmtree(staging.root, ignore_errors=True)
        staging.root.mkdir(mode=0o700)
        for entry in d.paths.root.iterdir():  # the disk links, and the bases they need
            if entry.is_symlink():
                os.symlink(os.readlink(entry), staging.root / entry.name)
        old, new = str(d.paths.root), str(staging.root)
        argv = [a.replace(old, new) for a in argv if a != "-S"]
        argv, forwards = _without_forwards(argv)  # the old instance holds those ports
        channel = staging.root / "migrate.sock"
        argv += ["-incoming", f"unix:{channel}"]
        monitor = Monitor(f"qemu-{uuid[:8]}")
        pid = 0
        try:
            pid = await _spawn(uuid, argv, staging, d.netns)
            await monitor.connect(staging.qmp)
            await self._qmp(d, "migrate-set-parameters", {"max-bandwidth": 1 << 40})
            await self._qmp(d, "migrate", {"uri": f"unix:{channel}"})
            await self._wait_migration(d)
            status = await monitor.execute("query-status")
            if status.get("status") != "running":
                await monitor.execute("cont")
        except BaseException:
            await monitor.close()
            if pid:
                self._kill(pid, uuid)
            shutil.rmtree(staging.root, ignore_errors=True)
            if uuid in self._domains and d.state == "running":
                with contextlib.suppress(BackendError, DomainNotFound):
                    status = await self._qmp(d, "query-status")
                    if status.get("status") != "running":
                        await self._qmp(d, "cont")
            raise
        await self._stop_process(d)  # the old instance: its directory goes with it
        os.rename(staging.root, d.paths.root)
        for netdev, rule in forwards:  # the ports are free now
            with contextlib.suppress(MonitorGone, RuntimeError):
                await monitor.execute(
                    "human-monitor-command", {"command-line": f"hostfwd_add {netdev} {rule}"}
                )
        channel_now = d.paths.root / "migrate.sock"
        channel_now.unlink(missing_ok=True)
        moved = _Domain(
            uuid=uuid,
            domid=self._next_domid(),
            paths=d.paths,
            pid=pid,
            memory=d.memory,
            vcpus=d.vcpus,
            hvm=d.hvm,
            start_time=d.start_time,
            macs=d.macs,
            monitor=monitor,
            state="running",
            guest=d.guest,
            links=dict(d.links),
            nodes=dict(d.nodes),
            netns=d.netns,
        )
        self._save(moved)
        self._domains[uuid] = moved
        self._watch(moved)
        return moved.info()

    # ---- live migration to another host (see qemu/migrate.py) ------------------------------------
    #: Port forwards of received domains, taken over once the sender's QEMU is gone.
    _migration_forwards: dict[str, dict[str, tuple[str, ...]]] | None = None

    def _pending_forwards(self) -> dict[str, dict[str, tuple[str, ...]]]:
        if self._migration_forwards is None:
            self._migration_forwards = {}
        return self._migration_forwards

    def migration_copies_disks(self) -> bool:
        return True

    async def migrate_receive(self, spec: DomainSpec) -> str:
        target = await remote_migration.receive(self, spec)
        self._pending_forwards()[spec.uuid] = dict(spec.forwards)
        return target

    async def migrate_send(self, uuid: str, target: str) -> None:
        await remote_migration.send(self, uuid, target)

    async def migrate_finish(self, uuid: str) -> DomainInfo:
        try:
            return await remote_migration.finish(self, uuid)
        except BaseException:
            self._pending_forwards().pop(uuid, None)
            raise

    async def migrate_complete(self, uuid: str) -> None:
        forwards = self._pending_forwards().pop(uuid, {})
        await remote_migration.add_forwards(self, uuid, forwards)

    async def migrate_abort(self, uuid: str) -> None:
        self._pending_forwards().pop(uuid, None)
        await self.hard_shutdown(uuid)

    # ---- suspend and resume ---------------------------------------------------------------------
    def _kept_image(self, image: SuspendImage) -> Path:
        return self.images / f"{image.vdi_uuid}.state"

    async def suspend(self, uuid: str, image: SuspendImage) -> None:
        d = self._get(uuid)
        was_running = d.state == "running"
        direct = image.path and image.format == "raw"
        target = Path(image.path) if direct else self._kept_image(image)
        if image.path and not direct:
            target = d.paths.root / "suspend.state"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            await self._qmp(d, "stop")
            d.state = "paused"
            await self._qmp(d, "migrate-set-parameters", {"max-bandwidth": 1 << 40})
            sink = (
                f"dd of={_q(target)} bs=1M conv=notrunc status=none"
                if direct
                else (f"cat > {_q(target)}")
            )
            await self._qmp(d, "migrate", {"uri": f"exec:{sink}"})
            await self._wait_migration(d)
            if image.path and not direct:
                await _run(
                    "qemu-img",
                    "convert",
                    "-n",
                    "-f",
                    "raw",
                    "-O",
                    image.format,
                    str(target),
                    image.path,
                )
        except BaseException:
            if not direct:
                target.unlink(missing_ok=True)
            if was_running and uuid in self._domains:
                with contextlib.suppress(BackendError):
                    await self._qmp(d, "cont")
                d.state = "running"
            raise
        await self._stop_process(d)

    async def _wait_migration(self, d: _Domain) -> None:
        while True:
            status = await self._qmp(d, "query-migrate")
            state = status.get("status", "")
            if state == "completed":
                return
            if state in ("failed", "cancelled"):
                raise BackendError(d.uuid, f"saving the domain failed: {status}")
            await asyncio.sleep(0.01)

    async def resume(
        self, spec: DomainSpec, image: SuspendImage, paused: bool = False
    ) -> DomainInfo:
        if spec.uuid in self._domains:
            raise DomainExists(spec.uuid)
        kept = self._kept_image(image)
        tmp: Path | None = None
        if image.path and image.format != "raw":
            if not Path(image.path).exists():
                raise DomainNotFound(spec.uuid, "no suspend image")
            self.images.mkdir(parents=True, exist_ok=True)
            tmp = self.images / f"{image.vdi_uuid}.resume"
            await _run("qemu-img", "convert", "-f", image.format, "-O", "raw", image.path, str(tmp))
            source = tmp
        elif image.path:
            source = Path(image.path)
        else:
            source = kept
        if not source.exists():
            raise DomainNotFound(spec.uuid, "no suspend image")
        try:
            d = await self._launch(spec, incoming=f"exec:cat {_q(source)}")
            try:
                await self._wait_incoming(d)
                if not paused:
                    await self._qmp(d, "cont")
                    d.state = "running"
            except BaseException:
                await self._stop_process(d)
                raise
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        if source == kept:
            kept.unlink(missing_ok=True)
        d.agent_kick.set()
        return d.info()

    async def _wait_incoming(self, d: _Domain, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            status = await self._qmp(d, "query-status")
            if status.get("status") != "inmigrate":
                if status.get("status") not in ("paused", "running", "postmigrate"):
                    raise BackendError(d.uuid, f"restoring the domain failed: {status}")
                return
            if time.monotonic() > deadline:
                raise BackendError(d.uuid, "restoring the domain timed out")
            await asyncio.sleep(0.01)

    async def copy_image(self, src: SuspendImage, dst: SuspendImage) -> None:
        if src.path or dst.path:
            return None  # the storage layer copied the VDI, and the image with it
        source = self._kept_image(src)
        if source.exists():
            await asyncio.to_thread(shutil.copyfile, source, self._kept_image(dst))
        return None

    # ---- storage hooks --------------------------------------------------------------------------
    def has_domain(self, uuid: str) -> bool:
        """Whether a domain of ``uuid`` runs now (its disks are open in QEMU)."""
        return uuid in self._domains

    async def live_snapshot(self, uuid: str, userdevice: str, new_top: str, fmt: str) -> None:
        """From now on the domain writes to ``new_top``, an overlay whose backing file is the
        image the domain wrote to until now (which the storage layer renamed to that base).

        QEMU reopens the old image by the name it opened it with while it switches, so that
        name (a link in the domain's directory) is first pointed at the base: it must never
        resolve to the new overlay, which now has the old image's path.
        """
        d = self._get(uuid)
        gen = d.links.get(userdevice)
        if gen is None:
            raise BackendError(uuid, f"no disk image open in slot {userdevice}")
        backing = await _backing_file(new_top)
        old_link = _disk_link(d.paths, userdevice, gen)
        new_link = _disk_link(d.paths, userdevice, gen + 1)
        base = str(Path(new_top).parent / backing)
        _point(old_link, base)
        if "/" not in backing:
            _point(d.paths.root / backing, base)
        _point(new_link, new_top)
        try:
            await self._qmp(
                d,
                "blockdev-snapshot-sync",
                {
                    "device": cmdline.drive_id(userdevice),
                    "snapshot-file": str(new_link),
                    "format": fmt,
                    "mode": "existing",
                },
            )
        except BaseException:
            _point(old_link, new_top)  # the storage layer renames the base back
            new_link.unlink(missing_ok=True)
            raise
        d.links[userdevice] = gen + 1
        self._save(d)

    # ---- devices of a running domain ----------------------------------------------------------
    async def disk_plug(self, uuid: str, disk: DiskSpec) -> None:
        """Hot-plug a disk (a virtio disk; CD drives exist from the start, see cd_insert)."""
        d = self._get(uuid)
        if not disk.path or disk.cdrom:
            raise BackendError(uuid, "only disks with an image file can be hot-plugged")
        gen = d.links.get(disk.userdevice, -1) + 1
        path = disk.path
        if not disk.read_only:
            link = _disk_link(d.paths, disk.userdevice, gen)
            _point(link, disk.path)
            _link_backing_chain(d.paths, disk.path)
            path = str(link)
        node = f"{cmdline.drive_id(disk.userdevice)}.{gen}"
        await self._qmp(
            d,
            "blockdev-add",
            {
                "driver": disk.format or "raw",
                "node-name": node,
                "read-only": disk.read_only,
                "file": {"driver": "file", "filename": path},
            },
        )
        try:
            await self._qmp(
                d,
                "device_add",
                {"driver": "virtio-blk-pci", "drive": node, "id": f"vbd{disk.userdevice}"},
            )
        except BaseException:
            with contextlib.suppress(BackendError, DomainNotFound):
                await self._qmp(d, "blockdev-del", {"node-name": node})
            raise
        if not disk.read_only:
            d.links[disk.userdevice] = gen
        d.nodes[disk.userdevice] = node
        self._save(d)

    async def disk_unplug(self, uuid: str, userdevice: str, timeout: float = 30.0) -> None:
        """Hot-unplug a disk; the guest must release it (ACPI hot-plug) within ``timeout``."""
        d = self._get(uuid)
        since = time.monotonic()
        await self._qmp(d, "device_del", {"id": f"vbd{userdevice}"})
        got = await d.monitor.wait_event(("DEVICE_DELETED",), since, timeout)
        if got != "DEVICE_DELETED":
            raise BackendError(uuid, f"the guest did not release disk {userdevice}")
        node = d.nodes.pop(userdevice, None)
        if node is not None:  # a hot-plugged image stays open until its node goes
            await self._qmp(d, "blockdev-del", {"node-name": node})
        d.links.pop(userdevice, None)
        self._save(d)

    async def cd_insert(self, uuid: str, userdevice: str, path: str, fmt: str) -> None:
        """Put a medium into the CD drive in slot ``userdevice``."""
        d = self._get(uuid)
        await self._qmp(
            d,
            "blockdev-change-medium",
            {
                "id": f"vbd{userdevice}",
                "filename": path,
                "format": fmt or "raw",
                "read-only-mode": "read-only",
            },
        )

    async def cd_eject(self, uuid: str, userdevice: str) -> None:
        """Take the medium out of the CD drive in slot ``userdevice``."""
        d = self._get(uuid)
        await self._qmp(d, "eject", {"id": f"vbd{userdevice}", "force": True})

    @staticmethod
    def _save(d: _Domain) -> None:
        tmp = d.paths.record.with_suffix(".tmp")
        tmp.write_text(json.dumps(d.record()))
        os.replace(tmp, d.paths.record)


async def _spawn(uuid: str, argv: list[str], paths: cmdline.DomainPaths, netns: str) -> int:
    """Run a daemonising QEMU (inside ``netns`` when set); the pid of the daemon."""
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    # QEMU's error output goes to a file: a pipe would be inherited by the daemon.
    errors = paths.root / "launch.err"
    with open(errors, "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    if await proc.wait() != 0:
        detail = errors.read_text(errors="replace").strip()[-400:]
        raise BackendError(uuid, detail or f"QEMU exited with {proc.returncode}")
    return int(paths.pidfile.read_text().strip())


def _without_forwards(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """``argv`` with the host port forwards taken out of its user-mode netdevs, and those
    forwards as (netdev id, rule)."""
    out: list[str] = []
    forwards: list[tuple[str, str]] = []
    for i, arg in enumerate(argv):
        if i > 0 and argv[i - 1] == "-netdev" and "hostfwd=" in arg:
            parts = arg.split(",")
            netdev = next((p[3:] for p in parts if p.startswith("id=")), "")
            forwards += [(netdev, p[len("hostfwd=") :]) for p in parts if p.startswith("hostfwd=")]
            arg = ",".join(p for p in parts if not p.startswith("hostfwd="))
        out.append(arg)
    return out, forwards


def _disk_link(paths: cmdline.DomainPaths, userdevice: str, gen: int) -> Path:
    return paths.root / f"disk{userdevice}.{gen}"


def _point(link: Path, target: str) -> None:
    """Make ``link`` a symlink to ``target``, replacing what it was atomically."""
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _linked_disks(
    spec: DomainSpec, paths: cmdline.DomainPaths
) -> tuple[DomainSpec, dict[str, int]]:
    """Writable disk images are opened through links in the domain's directory, so a live
    snapshot can re-point the name QEMU knows an image by (see ``live_snapshot``)."""
    links: dict[str, int] = {}
    disks = []
    for disk in spec.disks:
        if disk.path and not disk.cdrom and not disk.read_only:
            link = _disk_link(paths, disk.userdevice, 0)
            _point(link, disk.path)
            _link_backing_chain(paths, disk.path)
            links[disk.userdevice] = 0
            disk = replace(disk, path=str(link))
        disks.append(disk)
    return replace(spec, disks=tuple(disks)), links


def _qcow2_backing(path: str) -> str:
    """The backing file name recorded in a qcow2 header ("" for none or not qcow2)."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
            if len(head) < 20 or head[:4] != b"QFI\xfb":
                return ""
            offset = int.from_bytes(head[8:16], "big")
            size = int.from_bytes(head[16:20], "big")
            if not offset or not size or size > 1023:
                return ""
            f.seek(offset)
            return f.read(size).decode(errors="replace")
    except OSError:
        return ""


def _link_backing_chain(paths: cmdline.DomainPaths, image: str) -> None:
    """QEMU resolves a relative backing file name beside the name it opened the image by;
    the images opened through links in the domain's directory need their bases linked
    there too."""
    current = image
    for _ in range(256):
        backing = _qcow2_backing(current)
        if not backing or "/" in backing:
            return
        real = str(Path(current).parent / backing)
        _point(paths.root / backing, real)
        current = real


async def _backing_file(image: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "qemu-img",
        "info",
        "-U",
        "--output=json",
        image,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    try:
        backing = json.loads(out).get("backing-filename", "")
    except ValueError:
        backing = ""
    if not backing:
        raise BackendError("", f"{image} has no backing file to pivot onto")
    return str(backing)


def _differs(a: GuestInfo, b: GuestInfo) -> bool:
    return replace(a, last_updated=0.0) != replace(b, last_updated=0.0)


def _state_of(status: Mapping[str, Any]) -> DomainState:
    s = str(status.get("status", ""))
    if s == "running":
        return "running"
    if s in ("guest-panicked", "internal-error"):
        return "crashed"
    return "paused"


def _q(path: Path) -> str:
    """A path quoted for the shell QEMU runs ``exec:`` migrations with."""
    return "'" + str(path).replace("'", "'\\''") + "'"


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise BackendError("", f"{argv[0]} failed: {err.decode(errors='replace').strip()}")
