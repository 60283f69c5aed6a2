"""Real VMs on the QEMU backend under TCG (``bench/run --only qemu``; not in the default set).

Start cost: ``VM.start`` of the tiny test guest over XML-RPC until its ``TINYVM-READY`` line
is in the serial log, against the floor of launching the identical QEMU command line directly
(read back from the running VM, with a fresh domain directory) and against ``virsh start`` of
the same guest in libvirt; interleaved rounds, medians. Suspend + resume of the 128 MiB guest
once its agent has reported. Ten VMs started at once until every agent reported an address,
with the daemon's memory before and after, against ten direct launches at once.

Every QEMU process, libvirt domain and file made here is removed before the section returns.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from fixtures import Fixtures
from harness import REPO, Rpc, Server, median, proc_rss_mib
from report import Row, Section

from openxapi.xenops.qemu.backend import _runtime_root

TEMPLATE = "openxapi tiny test guest"
MARKER = b"TINYVM-READY"
BOOT_TIMEOUT = 240.0
POLL = 0.005
LIBVIRT_PACKAGES = ("libvirt-daemon-system", "libvirt-clients", "libvirt-daemon-driver-qemu")
VIRSH = ("virsh", "-q", "-c", "qemu:///system")
QEMU_CONF = "/etc/libvirt/qemu.conf"
START_RATIO_TARGET = 1.10
LIBVIRT_RATIO_TARGET = 0.5
SUSPEND_TARGET_S = 1.5
CONCURRENT = 10


# ---------------------------------------------------------------------- processes and files


def guest_image_dir() -> Path:
    """The tiny test guest, built (or found cached) by ``scripts/guest-image``."""
    out = subprocess.run(
        [str(REPO / "scripts" / "guest-image")],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def qemu_pids(marker: str) -> list[int]:
    """QEMU processes whose command line mentions ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in cmd and marker.encode() in cmd:
            pids.append(int(entry.name))
    return pids


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def kill_and_wait(pid: int, timeout: float = 10.0) -> None:
    """SIGKILL one process this benchmark started and wait until it is gone."""
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def has_marker(log: Path) -> bool:
    try:
        with open(log, "rb") as f:
            return MARKER in f.read()
    except OSError:
        return False


def wait_marker(log: Path, t0: float, timeout: float = BOOT_TIMEOUT) -> float:
    """Seconds from ``t0`` until the guest's READY line is in ``log`` (polled every 5 ms)."""
    while not has_marker(log):
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"no {MARKER.decode()} in {log} after {timeout:.0f} s")
        time.sleep(POLL)
    return time.perf_counter() - t0


def rss_of(pids: list[int]) -> float:
    """Summed resident memory of ``pids``, MiB."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += proc_rss_mib(pid)[0]
    return total


def arg_after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# ---------------------------------------------------------------------- openxapi


@dataclass
class Openxapi:
    """VMs of the tiny template on a server started with ``--backend qemu --accel tcg``."""

    server: Server
    rpc: Rpc
    run_root: Path
    uuids: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, data_dir: Path, image: Path) -> Openxapi:
        server = Server(
            data_dir,
            backend="qemu",
            extra_args=("--accel", "tcg", "--guest-image-dir", str(image)),
        )
        server.start()
        rpc = Rpc(server.port)
        rpc.login()
        return cls(server, rpc, _runtime_root(data_dir / "qemu", ""))

    def install(self, name: str) -> str:
        """Clone the template without its disk and give it a NIC on the NAT network (what
        the agent reports an address for): the same device set libvirt gets below."""
        (tpl,) = self.rpc("VM.get_by_name_label", TEMPLATE)
        vm: str = self.rpc("VM.clone", tpl, name)
        self.rpc("VM.remove_from_other_config", vm, "disks")
        self.rpc("VM.add_to_other_config", vm, "disks", "<provision></provision>")
        self.rpc("VM.provision", vm)
        (net,) = self.rpc("network.get_by_name_label", "NAT network")
        self.rpc(
            "VIF.create",
            {
                "VM": vm,
                "network": net,
                "device": "0",
                "MAC": "",
                "MTU": "1500",
                "other_config": {},
                "qos_algorithm_type": "",
                "qos_algorithm_params": {},
            },
        )
        self.uuids[vm] = self.rpc("VM.get_uuid", vm)
        return vm

    def domain_dir(self, vm: str) -> Path:
        return self.run_root / self.uuids[vm]

    def serial(self, vm: str) -> Path:
        return self.domain_dir(vm) / "serial.log"

    def start_until_ready(self, vm: str) -> tuple[float, float]:
        """(VM.start returned, READY line seen), seconds from sending VM.start."""
        t0 = time.perf_counter()
        self.rpc("VM.start", vm, False, False)
        call = time.perf_counter() - t0
        return call, wait_marker(self.serial(vm), t0)

    def argv(self, vm: str) -> list[str]:
        """The command line of the VM's running QEMU process, as the kernel holds it."""
        pid = int((self.domain_dir(vm) / "qemu.pid").read_text())
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return [a.decode() for a in raw.split(b"\0")[:-1]]

    def agent_ip(self, vm: str) -> str:
        gm = self.rpc("VM.get_guest_metrics", vm)
        if gm == "OpaqueRef:NULL":
            return ""
        try:
            networks: dict[str, str] = self.rpc("VM_guest_metrics.get_networks", gm)
        except RuntimeError:
            return ""
        return networks.get("0/ip", "")

    def wait_suspendable(self, vm: str, timeout: float = BOOT_TIMEOUT) -> None:
        """Until the agent has reported (suspend is refused before it has)."""
        deadline = time.monotonic() + timeout
        while "suspend" not in self.rpc("VM.get_allowed_operations", vm):
            if time.monotonic() > deadline:
                raise RuntimeError("the guest agent did not report in time")
            time.sleep(0.05)

    def wait_tasks(self, tasks: list[str], timeout: float = BOOT_TIMEOUT) -> list[str]:
        deadline = time.monotonic() + timeout
        status = {t: "pending" for t in tasks}
        while any(s == "pending" for s in status.values()):
            if time.monotonic() > deadline:
                raise RuntimeError("tasks did not finish in time")
            time.sleep(0.05)
            for t, s in status.items():
                if s == "pending":
                    status[t] = self.rpc("task.get_status", t)
        for t in tasks:
            self.rpc("task.destroy", t)
        return [t for t, s in status.items() if s != "success"]

    def halt_all(self) -> None:
        """Hard-shutdown every VM of ours that runs (also after a failure half-way)."""
        for vm in self.uuids:
            with contextlib.suppress(RuntimeError, OSError):
                if self.rpc("VM.get_power_state", vm) != "Halted":
                    self.rpc("VM.hard_shutdown", vm)


# ---------------------------------------------------------------------- the direct floor


@dataclass
class DirectQemu:
    """The floor: a VM's exact QEMU argv run by hand, each time in its own fresh directory."""

    argv: list[str]
    template_dir: str
    root: Path
    runs: int = 0

    def launch(self) -> tuple[Path, subprocess.Popen[bytes]]:
        """Start QEMU (it daemonises; the returned process is the parent that exits)."""
        self.runs += 1
        where = self.root / f"d{self.runs}"
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(mode=0o700, parents=True)
        argv = [a.replace(self.template_dir, str(where)) for a in self.argv]
        with open(where / "launch.err", "wb") as err:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        return where, proc

    @staticmethod
    def launched(where: Path, proc: subprocess.Popen[bytes]) -> None:
        if proc.wait(60) != 0:
            err = (where / "launch.err").read_text(errors="replace").strip()[-400:]
            raise RuntimeError(f"QEMU failed to start: {err}")

    def start_until_ready(self) -> tuple[Path, float]:
        t0 = time.perf_counter()
        where, proc = self.launch()
        self.launched(where, proc)
        return where, wait_marker(where / "serial.log", t0)

    @staticmethod
    def kill(where: Path) -> None:
        with contextlib.suppress(OSError, ValueError):
            kill_and_wait(int((where / "qemu.pid").read_text()))
        shutil.rmtree(where, ignore_errors=True)

    def kill_all(self) -> None:
        for pid in qemu_pids(str(self.root)):
            kill_and_wait(pid)
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------------- libvirt


def _installed(pkg: str) -> bool:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True, check=False
    )
    return "install ok installed" in out.stdout


def install_libvirt() -> str:
    """Install the libvirt packages with scripts/setup.sh's apt_ensure; "" or why not."""
    if all(_installed(p) for p in LIBVIRT_PACKAGES):
        return ""
    script = f"source {REPO / 'scripts' / 'setup.sh'} && apt_ensure {' '.join(LIBVIRT_PACKAGES)}"
    try:
        out = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"apt-get failed: {e}"
    if out.returncode != 0 or not all(_installed(p) for p in LIBVIRT_PACKAGES):
        return "apt-get failed: " + (out.stderr or out.stdout).strip()[-300:]
    return ""


def domain_xml(name: str, argv: list[str], where: Path) -> str:
    """The guest of ``argv`` for libvirt: same kernel, initrd, command line, memory, vCPU,
    MAC and TCG translation cache; serial to a file, user-mode virtio NIC, the agent's unix
    channel, a balloon, VGA with VNC on a unix socket. QEMU runs as root, as openxapi's does."""
    mac = re.search(r"mac=([0-9a-fA-F:]{17})", " ".join(argv))
    tb = re.search(r"tb-size=(\d+)", arg_after(argv, "-accel"))
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{int(arg_after(argv, "-m"))}</memory>
  <vcpu>{int(arg_after(argv, "-smp").split(",")[0])}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(arg_after(argv, "-kernel"))}</kernel>
    <initrd>{escape(arg_after(argv, "-initrd"))}</initrd>
    <cmdline>{escape(arg_after(argv, "-append"))}</cmdline>
  </os>
  <features><acpi/>{f"<tcg><tb-cache unit='MiB'>{tb.group(1)}</tb-cache></tcg>" if tb else ""}
  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
  <devices>
    <emulator>{escape(shutil.which(argv[0]) or argv[0])}</emulator>
    <controller type='usb' model='none'/>
    <serial type='file'><source path={quoteattr(str(where / "serial.log"))}/></serial>
    <interface type='user'>{f"<mac address='{mac.group(1)}'/>" if mac else ""}
      <model type='virtio'/></interface>
    <channel type='unix'><source mode='bind' path={quoteattr(str(where / "qga.sock"))}/>
      <target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <graphics type='vnc' socket={quoteattr(str(where / "vnc.sock"))}/>
    <video><model type='vga'/></video>
    <memballoon model='virtio'/>
  </devices>
</domain>
"""


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def _daemon_pid(name: str) -> int:
    """The PID of a running ``name`` daemon from its pid file, or 0."""
    pid = _read_pid(Path(f"/run/{name}.pid"))
    try:
        if pid and Path(f"/proc/{pid}/comm").read_text().strip() == name and pid_alive(pid):
            return pid
    except OSError:
        pass
    return 0


def virsh(*args: str, timeout: float = 600.0) -> str:
    out = subprocess.run(
        [*VIRSH, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"virsh {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


@dataclass
class Libvirt:
    """One domain in libvirt's system instance; the daemons are started when not running
    (and then stopped again), the domain is undefined and its files removed at the end."""

    name: str
    root: Path
    started: list[int] = field(default_factory=list)
    defined: bool = False
    version: str = ""
    notes: list[str] = field(default_factory=list)

    def up(self) -> None:
        """Start virtlogd and libvirtd unless they run. libvirtd gets a qemu.conf that runs
        QEMU as root, bind-mounted in a private mount namespace (nothing on the host changes):
        with Debian's default user, libvirt-qemu, the root-only /dev/kvm here makes libvirt
        judge its cached QEMU capabilities stale and probe QEMU again at every start."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for daemon in ("virtlogd", "libvirtd"):
            if _daemon_pid(daemon):
                self.notes.append(f"{daemon} was already running and was used as it is")
                continue
            cmd = [daemon, "-d"]
            if daemon == "libvirtd":
                conf = self.root / "qemu.conf"
                conf.write_text(Path(QEMU_CONF).read_text() + '\nuser = "+0"\ngroup = "+0"\n')
                mount = f'mount --bind "$1" {QEMU_CONF} && exec libvirtd -d'
                cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", mount, "sh"]
                cmd.append(str(conf))
            subprocess.run(cmd, check=True, timeout=60)
            deadline = time.monotonic() + 30
            while not _daemon_pid(daemon):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{daemon} did not start")
                time.sleep(0.05)
            self.started.append(_daemon_pid(daemon))
        deadline = time.monotonic() + 120
        while True:
            try:
                self.version = virsh("version", "--daemon", timeout=120)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def define(self, xml: str) -> float:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.root / "domain.xml"
        path.write_text(xml)
        t0 = time.perf_counter()
        virsh("define", str(path))
        self.defined = True
        return time.perf_counter() - t0

    @property
    def serial(self) -> Path:
        return self.root / "serial.log"

    def start_until_ready(self) -> tuple[float, float]:
        """(virsh start returned, READY line seen), seconds from running virsh start."""
        self.serial.unlink(missing_ok=True)
        t0 = time.perf_counter()
        virsh("start", self.name)
        call = time.perf_counter() - t0
        return call, wait_marker(self.serial, t0)

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            virsh("destroy", self.name)

    def close(self) -> list[str]:
        """Undefine, remove the domain's files, stop the daemons started here; what failed."""
        problems = []
        if self.defined:
            self.destroy()
            try:
                virsh("undefine", self.name)
                self.defined = False
            except RuntimeError as e:
                problems.append(str(e))
        Path(f"/var/log/libvirt/qemu/{self.name}.log").unlink(missing_ok=True)
        shutil.rmtree(self.root, ignore_errors=True)
        for pid in reversed(self.started):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):
                problems.append(f"daemon {pid} did not stop")
        self.started.clear()
        return problems


# ---------------------------------------------------------------------- the measurements


@dataclass
class StartRuns:
    openxapi: list[float] = field(default_factory=list)
    openxapi_call: list[float] = field(default_factory=list)
    direct: list[float] = field(default_factory=list)
    libvirt: list[float] = field(default_factory=list)
    libvirt_call: list[float] = field(default_factory=list)


def start_rounds(
    ox: Openxapi, vm: str, floor: DirectQemu, lv: Libvirt | None, rounds: int
) -> StartRuns:
    """Interleaved: openxapi, direct, libvirt, openxapi, ...; each VM is killed before the
    next starts. One untimed round first (page cache, libvirt's first start)."""
    runs = StartRuns()
    for i in range(rounds + 1):
        call, ready = ox.start_until_ready(vm)
        ox.rpc("VM.hard_shutdown", vm)
        where, direct = floor.start_until_ready()
        floor.kill(where)
        if lv is not None:
            lv_call, lv_ready = lv.start_until_ready()
            lv.destroy()
        if i == 0:
            continue
        runs.openxapi.append(ready)
        runs.openxapi_call.append(call)
        runs.direct.append(direct)
        if lv is not None:
            runs.libvirt.append(lv_ready)
            runs.libvirt_call.append(lv_call)
        print(
            f"   round {i}: openxapi {ready:.2f} s (call {call:.2f}), direct {direct:.2f} s"
            + (f", libvirt {lv_ready:.2f} s (call {lv_call:.2f})" if lv is not None else ""),
            flush=True,
        )
    return runs


def suspend_rounds(ox: Openxapi, vm: str, rounds: int) -> tuple[list[float], list[float]]:
    """(suspend, resume) seconds, each pair timed after the agent reported."""
    ox.rpc("VM.start", vm, False, False)
    suspends, resumes = [], []
    for _ in range(rounds):
        ox.wait_suspendable(vm)
        t0 = time.perf_counter()
        ox.rpc("VM.suspend", vm)
        t1 = time.perf_counter()
        ox.rpc("VM.resume", vm, False, False)
        t2 = time.perf_counter()
        suspends.append(t1 - t0)
        resumes.append(t2 - t1)
    ox.rpc("VM.hard_shutdown", vm)
    return suspends, resumes


@dataclass
class Concurrent:
    markers_s: float = 0.0
    ips_s: float = 0.0
    rss_before: float = 0.0
    rss_after: float = 0.0
    qemu_rss: float = 0.0
    failed: int = 0


def concurrent_openxapi(ox: Openxapi, vms: list[str]) -> Concurrent:
    """All VMs started by Async.VM.start at once; until every READY line and every agent
    address is seen. The daemon's RSS before the starts and once every agent reported."""
    assert ox.server.proc is not None
    pid = ox.server.proc.pid
    time.sleep(1.0)
    out = Concurrent(rss_before=proc_rss_mib(pid)[0])
    t0 = time.perf_counter()
    tasks = [ox.rpc("Async.VM.start", vm, False, False) for vm in vms]
    marked: dict[str, float] = {}
    addressed: dict[str, float] = {}
    next_rpc = 0.0
    while len(addressed) < len(vms):
        now = time.perf_counter()
        if now - t0 > BOOT_TIMEOUT:
            raise RuntimeError(f"only {len(addressed)} of {len(vms)} agents reported in time")
        for vm in vms:
            if vm not in marked and has_marker(ox.serial(vm)):
                marked[vm] = now - t0
        if now >= next_rpc:
            for vm in vms:
                if vm not in addressed and ox.agent_ip(vm):
                    addressed[vm] = time.perf_counter() - t0
            next_rpc = time.perf_counter() + 0.2
        time.sleep(0.02)
    out.ips_s = max(addressed.values())
    while len(marked) < len(vms):  # a marker is written before the agent starts
        for vm in vms:
            if vm not in marked and has_marker(ox.serial(vm)):
                marked[vm] = time.perf_counter() - t0
        time.sleep(POLL)
    out.markers_s = max(marked.values())
    out.failed = len(ox.wait_tasks(tasks))
    time.sleep(1.0)
    out.rss_after = proc_rss_mib(pid)[0]
    out.qemu_rss = rss_of(qemu_pids(str(ox.run_root)))
    halts = [ox.rpc("Async.VM.hard_shutdown", vm) for vm in vms]
    out.failed += len(ox.wait_tasks(halts))
    return out


def concurrent_direct(floor: DirectQemu, n: int) -> float:
    """n direct launches at once; seconds until every READY line is seen."""
    t0 = time.perf_counter()
    launched = [floor.launch() for _ in range(n)]
    try:
        for where, proc in launched:
            floor.launched(where, proc)
        left = [where / "serial.log" for where, _ in launched]
        while left:
            if time.perf_counter() - t0 > BOOT_TIMEOUT:
                raise RuntimeError("direct launches did not all reach READY in time")
            left = [log for log in left if not has_marker(log)]
            time.sleep(POLL)
        return time.perf_counter() - t0
    finally:
        for where, proc in launched:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(60)
            floor.kill(where)


# ---------------------------------------------------------------------- the section


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def run(fx: Fixtures, quick: bool) -> Section:
    t_start = time.perf_counter()
    load_before = os.getloadavg()[0]
    rounds = 3 if quick else 7
    suspends_n = 3 if quick else 5
    ten_rounds = 1 if quick else 2
    image = guest_image_dir()
    libvirt_error = install_libvirt()
    data = fx.fresh("qemu-vms")
    floor_root = fx.root / "qemu-direct"
    lv: Libvirt | None = None
    notes: list[str] = []
    leftovers: list[str] = []
    ox = Openxapi.start(data, image)
    try:
        vm = ox.install("bench-start")
        # The argv to copy: the VM's own command line, read back while it runs.
        ox.start_until_ready(vm)
        argv = ox.argv(vm)
        ox.rpc("VM.hard_shutdown", vm)
        floor = DirectQemu(argv, str(ox.domain_dir(vm)), floor_root)
        define_s = up_s = 0.0
        if not libvirt_error:
            lv = Libvirt(f"openxapi-bench-{os.getpid()}", fx.root / "libvirt")
            try:
                t0 = time.perf_counter()
                lv.up()
                up_s = time.perf_counter() - t0
                define_s = lv.define(domain_xml(lv.name, argv, lv.root))
            except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                libvirt_error = f"libvirt did not start: {e}"
                leftovers += lv.close()
                lv = None
        print(f"   libvirt: {libvirt_error or f'defined in {define_s:.1f} s'}", flush=True)
        starts = start_rounds(ox, vm, floor, lv, rounds)
        suspends, resumes = suspend_rounds(ox, vm, suspends_n)
        vms = [ox.install(f"bench-ten-{i}") for i in range(CONCURRENT)]
        tens: list[Concurrent] = []
        direct_tens: list[float] = []
        for i in range(ten_rounds):  # openxapi first, then the floor; reversed next round
            if i % 2 == 0:
                tens.append(concurrent_openxapi(ox, vms))
                direct_tens.append(concurrent_direct(floor, CONCURRENT))
            else:
                direct_tens.append(concurrent_direct(floor, CONCURRENT))
                tens.append(concurrent_openxapi(ox, vms))
            print(
                f"   ten at once: openxapi markers {tens[-1].markers_s:.1f} s, agents "
                f"{tens[-1].ips_s:.1f} s; direct markers {direct_tens[-1]:.1f} s",
                flush=True,
            )
    finally:
        ox.halt_all()
        ox.server.stop()
        if lv is not None:
            leftovers += lv.close()
            with contextlib.suppress(RuntimeError):
                if lv.name in virsh("list", "--all", "--name", timeout=30):
                    leftovers.append(f"libvirt domain {lv.name}")
        for root in (ox.run_root, floor_root, fx.root / "libvirt"):
            for pid in qemu_pids(str(root)):
                leftovers.append(f"QEMU process {pid}")
                kill_and_wait(pid)
        shutil.rmtree(floor_root, ignore_errors=True)
        left = [p.name for p in ox.run_root.iterdir()] if ox.run_root.exists() else []
        leftovers += [f"{ox.run_root}/{n}" for n in left if n != "next-domid"]
        shutil.rmtree(ox.run_root, ignore_errors=True)

    section = Section("Real VMs on the QEMU backend (TCG): start, suspend/resume, ten at once")
    ox_med, direct_med = median(starts.openxapi), median(starts.direct)
    section.rows.append(
        Row(
            f"VM.start -> TINYVM-READY on the serial console, median of {rounds}",
            f"{ox_med:.2f} s",
            floor=f"{direct_med:.2f} s (same argv run directly)",
            ratio=_ratio(ox_med, direct_med),
            target=f"<= {START_RATIO_TARGET:.2f}x",
            passed=ox_med <= START_RATIO_TARGET * direct_med,
        )
    )
    section.rows.append(
        Row("... of which the VM.start call, median", f"{median(starts.openxapi_call):.2f} s")
    )
    if lv is not None or starts.libvirt:
        lv_med = median(starts.libvirt)
        section.rows += [
            Row(
                f"VM.start -> READY against virsh start -> READY, median of {rounds}",
                f"{ox_med:.2f} s",
                floor=f"{lv_med:.2f} s (libvirt)",
                ratio=_ratio(ox_med, lv_med),
                target=f"<= {LIBVIRT_RATIO_TARGET:.2f}x",
                passed=ox_med <= LIBVIRT_RATIO_TARGET * lv_med,
            ),
            Row(
                "... of which the virsh start call, median", f"{median(starts.libvirt_call):.2f} s"
            ),
        ]
    else:
        section.rows.append(
            Row(
                "VM.start -> READY against virsh start -> READY",
                "not measured",
                target=f"<= {LIBVIRT_RATIO_TARGET:.2f}x",
                passed=False,
            )
        )
    pairs = [s + r for s, r in zip(suspends, resumes, strict=True)]
    section.rows += [
        Row(
            f"VM.suspend + VM.resume, 128 MiB guest, median of {suspends_n}",
            f"{median(pairs):.2f} s",
            target=f"< {SUSPEND_TARGET_S:.1f} s",
            passed=median(pairs) < SUSPEND_TARGET_S,
        ),
        Row(
            "... VM.suspend / VM.resume alone, medians",
            f"{median(suspends):.2f} s / {median(resumes):.2f} s",
        ),
    ]
    ten = tens[0]
    ten_markers = median([t.markers_s for t in tens])
    direct_ten = median(direct_tens)
    section.rows += [
        Row(
            f"{CONCURRENT} x Async.VM.start at once -> every agent reported 0/ip",
            f"{median([t.ips_s for t in tens]):.1f} s",
            passed=None if not any(t.failed for t in tens) else False,
        ),
        Row(
            f"{CONCURRENT} x Async.VM.start at once -> every TINYVM-READY",
            f"{ten_markers:.1f} s",
            floor=f"{direct_ten:.1f} s ({CONCURRENT} direct launches)",
            ratio=_ratio(ten_markers, direct_ten),
        ),
        Row(
            f"daemon RSS before / after {CONCURRENT} running VMs",
            f"{ten.rss_before:.1f} / {ten.rss_after:.1f} MiB",
        ),
        Row(
            "daemon memory per running VM ((after - before) / 10)",
            f"{(ten.rss_after - ten.rss_before) / CONCURRENT * 1024:.0f} KiB",
        ),
        Row("QEMU RSS per running VM (for scale)", f"{ten.qemu_rss / CONCURRENT:.0f} MiB"),
    ]
    if libvirt_error:
        notes.append(f"libvirt not measured: {libvirt_error}")
    elif lv is not None:
        facts = [
            line.split(":", 1)[1].strip()
            for line in lv.version.splitlines()
            if line.startswith(("Running against daemon", "Running hypervisor"))
        ]
        notes.append(
            f"libvirt {' with '.join(facts)}, domain type 'qemu' (TCG), QEMU run as root with "
            f"no relabelling (as openxapi runs it); daemons up and answering in {up_s:.1f} s, "
            f"domain defined in {define_s:.1f} s"
        )
        notes += lv.notes
    notes += [
        "guest: the tiny test guest (Debian cloud kernel + busybox initramfs with the real "
        "qemu-ga), direct kernel boot, 128 MiB, 1 vCPU, one user-mode virtio NIC, no disk",
        "rounds interleaved openxapi / direct / libvirt after one untimed round of each; each "
        "VM is hard-shut-down (openxapi), SIGKILLed (direct) or destroyed (libvirt) before "
        "the next starts; READY polled every 5 ms",
        "openxapi per round: " + ", ".join(f"{x:.2f}" for x in starts.openxapi) + " s; "
        "direct: "
        + ", ".join(f"{x:.2f}" for x in starts.direct)
        + " s"
        + (
            "; libvirt: " + ", ".join(f"{x:.2f}" for x in starts.libvirt) + " s"
            if starts.libvirt
            else ""
        ),
        "suspend + resume per round: " + ", ".join(f"{x:.2f}" for x in pairs) + " s "
        "(the memory image goes through a file; each round after the agent reported)",
        f"{CONCURRENT} at once, per round (openxapi agents / markers, direct markers): "
        + "; ".join(
            f"{t.ips_s:.1f} / {t.markers_s:.1f}, {d:.1f} s"
            for t, d in zip(tens, direct_tens, strict=True)
        )
        + "; agent addresses polled every 0.2 s",
        f"load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}",
        "left behind: " + (", ".join(leftovers) if leftovers else "nothing"),
    ]
    section.notes += notes
    section.data = {
        "start_openxapi_s": starts.openxapi,
        "start_openxapi_call_s": starts.openxapi_call,
        "start_direct_s": starts.direct,
        "start_libvirt_s": starts.libvirt,
        "start_libvirt_call_s": starts.libvirt_call,
        "suspend_s": suspends,
        "resume_s": resumes,
        "ten": [vars(t) for t in tens],
        "ten_direct_s": direct_tens,
        "libvirt_error": libvirt_error,
        "leftovers": leftovers,
    }
    section.seconds = time.perf_counter() - t_start
    return section
