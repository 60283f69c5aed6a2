"""Real VMs on the QEMU backend under TCG (``bench/run --only qemu``; not in the default set).

Start cost: ``VM.start`` of the tiny test guest over XML-RPC until its ``TINYVM-READY`` line
is in the serial log, against the floor of launching the identical QEMU command line directly
(read back from the running VM, with a fresh domain directory) and against ``virsh start`` of
the same guest in libvirt, configured two ways (see ``Libvirt``); interleaved rounds, medians.
Suspend + resume of the 128 MiB guest once its agent has reported. Ten VMs started at once
until every agent reported an address, with the daemon's memory before and after, against
ten direct launches at once.

Every QEMU process, libvirt domain and file made here is removed before the section returns.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
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

    def start_until_ready(self) -> tuple[Path, float, float]:
        """(domain dir, QEMU daemonised, READY line seen), seconds from the launch."""
        t0 = time.perf_counter()
        where, proc = self.launch()
        self.launched(where, proc)
        call = time.perf_counter() - t0
        return where, call, wait_marker(where / "serial.log", t0)

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


def _stop_daemon(pid: int) -> bool:
    """SIGTERM a daemon this benchmark started; whether it is gone."""
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not pid_alive(pid)


@dataclass
class Libvirt:
    """One domain in libvirt's system instance. The daemons are started when not running
    (and stopped again at the end); the domain is undefined and its files removed.

    libvirtd runs in one of two configurations. "stock": Debian's qemu.conf as installed.
    "root": the same plus ``user``/``group`` root, bind-mounted over it in a private mount
    namespace (nothing on the host changes). Stock libvirt here runs QEMU as libvirt-qemu,
    which cannot open the root-only /dev/kvm, while its cached QEMU capabilities say KVM
    works; it then judges the cache stale and probes QEMU again (about 4 s) at every start.
    """

    name: str
    root: Path
    virtlogd: int = 0
    libvirtd: int = 0
    config: str = ""
    defined: bool = False
    version: str = ""
    notes: list[str] = field(default_factory=list)

    def up(self, config: str) -> float:
        """virtlogd and a libvirtd in ``config`` ("stock" or "root") running and answering;
        seconds it took. A libvirtd already running is used as it is."""
        t0 = time.perf_counter()
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.virtlogd and not _daemon_pid("virtlogd"):
            self.virtlogd = self._spawn("virtlogd", ["virtlogd", "-d"])
        if self.libvirtd and self.config != config:
            if not _stop_daemon(self.libvirtd):
                raise RuntimeError(f"libvirtd {self.libvirtd} did not stop")
            self.libvirtd = 0
        if not self.libvirtd:
            if _daemon_pid("libvirtd"):
                self.notes.append("libvirtd was already running and was used as it is")
                config = "as found"
            else:
                cmd = ["libvirtd", "-d"]
                if config == "root":
                    conf = self.root / "qemu.conf"
                    conf.write_text(Path(QEMU_CONF).read_text() + '\nuser = "+0"\ngroup = "+0"\n')
                    mount = f'mount --bind "$1" {QEMU_CONF} && exec libvirtd -d'
                    cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", mount, "sh"]
                    cmd.append(str(conf))
                self.libvirtd = self._spawn("libvirtd", cmd)
        self.config = config
        deadline = time.monotonic() + 180
        while True:
            try:
                self.version = virsh("version", "--daemon", timeout=180)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return time.perf_counter() - t0

    @staticmethod
    def _spawn(daemon: str, cmd: list[str]) -> int:
        subprocess.run(cmd, check=True, timeout=60)
        deadline = time.monotonic() + 30
        while not _daemon_pid(daemon):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{daemon} did not start")
            time.sleep(0.05)
        return _daemon_pid(daemon)

    def define(self, xml: str) -> float:
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
        for pid in (self.libvirtd, self.virtlogd):
            if pid and not _stop_daemon(pid):
                problems.append(f"daemon {pid} did not stop")
        self.libvirtd = self.virtlogd = 0
        shutil.rmtree(self.root, ignore_errors=True)
        return problems


# ---------------------------------------------------------------------- the measurements

#: One start of a guest until READY, its VM gone again afterwards: (call returned, READY).
Launch = Callable[[], tuple[float, float]]


def interleave(launchers: dict[str, Launch], rounds: int) -> dict[str, list[tuple[float, float]]]:
    """Each launcher once per round, in turn, after one untimed round (page cache, a
    daemon's first start); nothing runs while another is timed."""
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in launchers}
    for i in range(rounds + 1):
        line = []
        for name, launch in launchers.items():
            call, ready = launch()
            line.append(f"{name} {ready:.2f} s")
            if i:
                out[name].append((call, ready))
        print(f"   round {i or 'untimed'}: " + ", ".join(line), file=sys.stderr, flush=True)
    return out


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
    while len(addressed) < len(vms) or len(marked) < len(vms):
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
        time.sleep(POLL)
    out.ips_s = max(addressed.values())
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


@dataclass
class Results:
    """Everything measured; filled in as far as the run got."""

    phase1: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    phase2: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    suspends: list[float] = field(default_factory=list)
    resumes: list[float] = field(default_factory=list)
    tens: list[Concurrent] = field(default_factory=list)
    direct_tens: list[float] = field(default_factory=list)
    libvirt_error: str = ""
    libvirt_setup: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)


def _ready(runs: list[tuple[float, float]]) -> float:
    return median([r for _, r in runs])


def _calls(runs: list[tuple[float, float]]) -> float:
    return median([c for c, _ in runs])


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def _measure(fx: Fixtures, ox: Openxapi, quick: bool, res: Results) -> Libvirt | None:
    rounds = 3 if quick else 7
    vm = ox.install("bench-start")
    # The argv to copy: the VM's own command line, read back while it runs.
    ox.start_until_ready(vm)
    argv = ox.argv(vm)
    ox.rpc("VM.hard_shutdown", vm)
    floor = DirectQemu(argv, str(ox.domain_dir(vm)), fx.root / "qemu-direct")

    def openxapi() -> tuple[float, float]:
        call, ready = ox.start_until_ready(vm)
        ox.rpc("VM.hard_shutdown", vm)
        return call, ready

    def direct() -> tuple[float, float]:
        where, call, ready = floor.start_until_ready()
        floor.kill(where)
        return call, ready

    launchers: dict[str, Launch] = {"openxapi": openxapi, "direct": direct}
    lv: Libvirt | None = None
    if not res.libvirt_error:
        lv = Libvirt(f"openxapi-bench-{os.getpid()}", fx.root / "libvirt")
        try:
            up = lv.up("root")
            define = lv.define(domain_xml(lv.name, argv, lv.root))
            res.libvirt_setup.append(
                f"libvirtd ({lv.config}) up in {up:.1f} s, domain defined in {define:.1f} s"
            )
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            res.libvirt_error = f"libvirt did not start: {e}"
            res.leftovers += lv.close()
            lv = None

    def libvirt() -> tuple[float, float]:
        assert lv is not None
        call, ready = lv.start_until_ready()
        lv.destroy()
        return call, ready

    if lv is not None:
        launchers[f"libvirt ({lv.config})"] = libvirt
    res.phase1 = interleave(launchers, rounds)
    if lv is not None and lv.config == "root":
        up = lv.up("stock")
        res.libvirt_setup.append(f"libvirtd (stock) up in {up:.1f} s")
        res.phase2 = interleave({"openxapi": openxapi, "libvirt (stock)": libvirt}, rounds)
    res.suspends, res.resumes = suspend_rounds(ox, vm, 3 if quick else 5)
    vms = [ox.install(f"bench-ten-{i}") for i in range(CONCURRENT)]
    for i in range(1 if quick else 2):  # openxapi first, then the floor; reversed next round
        if i % 2 == 0:
            res.tens.append(concurrent_openxapi(ox, vms))
            res.direct_tens.append(concurrent_direct(floor, CONCURRENT))
        else:
            res.direct_tens.append(concurrent_direct(floor, CONCURRENT))
            res.tens.append(concurrent_openxapi(ox, vms))
        print(
            f"   ten at once: openxapi markers {res.tens[-1].markers_s:.1f} s, agents "
            f"{res.tens[-1].ips_s:.1f} s; direct markers {res.direct_tens[-1]:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    return lv


def _clean_up(fx: Fixtures, ox: Openxapi, lv: Libvirt | None) -> list[str]:
    """Stop everything this section started; what had to be forced or could not go."""
    left: list[str] = []
    ox.halt_all()
    ox.server.stop()
    if lv is not None:
        left += lv.close()
        if shutil.which("virsh") and _daemon_pid("libvirtd"):
            with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
                if lv.name in virsh("list", "--all", "--name", timeout=30).split():
                    left.append(f"libvirt domain {lv.name}")
    for root in (ox.run_root, fx.root / "qemu-direct", fx.root / "libvirt"):
        for pid in qemu_pids(str(root)):
            left.append(f"QEMU process {pid} (killed)")
            kill_and_wait(pid)
    shutil.rmtree(fx.root / "qemu-direct", ignore_errors=True)
    shutil.rmtree(fx.root / "libvirt", ignore_errors=True)
    if ox.run_root.exists():
        left += [str(p) for p in ox.run_root.iterdir() if p.name != "next-domid"]
        shutil.rmtree(ox.run_root, ignore_errors=True)
    return left


def run(fx: Fixtures, quick: bool) -> Section:
    t_start = time.perf_counter()
    load_before = os.getloadavg()[0]
    image = guest_image_dir()
    res = Results(libvirt_error=install_libvirt())
    ox = Openxapi.start(fx.fresh("qemu-vms"), image)
    lv: Libvirt | None = None
    try:
        lv = _measure(fx, ox, quick, res)
    finally:
        res.leftovers += _clean_up(fx, ox, lv)
    section = Section("Real VMs on the QEMU backend (TCG): start, suspend/resume, ten at once")
    _rows(section, res, lv)
    section.notes.append(
        f"load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}"
    )
    section.notes.append("left behind: " + (", ".join(res.leftovers) or "nothing"))
    section.data = {
        "start_phase1": res.phase1,
        "start_phase2": res.phase2,
        "suspend_s": res.suspends,
        "resume_s": res.resumes,
        "ten": [vars(t) for t in res.tens],
        "ten_direct_s": res.direct_tens,
        "libvirt_error": res.libvirt_error,
        "leftovers": res.leftovers,
    }
    section.seconds = time.perf_counter() - t_start
    return section


def _rows(section: Section, res: Results, lv: Libvirt | None) -> None:
    p1, p2 = res.phase1, res.phase2
    n = len(p1["openxapi"])
    ox1, direct = _ready(p1["openxapi"]), _ready(p1["direct"])
    section.rows += [
        Row(
            f"VM.start -> TINYVM-READY on the serial console, median of {n}",
            f"{ox1:.2f} s",
            floor=f"{direct:.2f} s (same argv run directly)",
            ratio=_ratio(ox1, direct),
            target=f"<= {START_RATIO_TARGET:.2f}x",
            passed=ox1 <= START_RATIO_TARGET * direct,
        ),
        Row(
            "... until the VM.start call returned / QEMU daemonised (direct)",
            f"{_calls(p1['openxapi']):.2f} s",
            floor=f"{_calls(p1['direct']):.2f} s",
        ),
    ]
    libvirts = [(p1, k) for k in p1 if k.startswith("libvirt")]
    libvirts += [(p2, k) for k in p2 if k.startswith("libvirt")]
    for phase, name in libvirts:
        ox, other = _ready(phase["openxapi"]), _ready(phase[name])
        section.rows += [
            Row(
                f"VM.start -> READY against virsh start -> READY, {name}",
                f"{ox:.2f} s",
                floor=f"{other:.2f} s",
                ratio=_ratio(ox, other),
                target=f"<= {LIBVIRT_RATIO_TARGET:.2f}x",
                passed=ox <= LIBVIRT_RATIO_TARGET * other,
            ),
            Row(
                f"... until the call returned, {name}",
                f"{_calls(phase['openxapi']):.2f} s",
                floor=f"{_calls(phase[name]):.2f} s",
            ),
        ]
    if not libvirts:
        section.rows.append(
            Row(
                "VM.start -> READY against virsh start -> READY",
                "not measured",
                target=f"<= {LIBVIRT_RATIO_TARGET:.2f}x",
                passed=False,
            )
        )
    pairs = [s + r for s, r in zip(res.suspends, res.resumes, strict=True)]
    section.rows += [
        Row(
            f"VM.suspend + VM.resume, 128 MiB guest, median of {len(pairs)}",
            f"{median(pairs):.2f} s",
            target=f"< {SUSPEND_TARGET_S:.1f} s",
            passed=median(pairs) < SUSPEND_TARGET_S,
        ),
        Row(
            "... VM.suspend / VM.resume alone, medians",
            f"{median(res.suspends):.2f} s / {median(res.resumes):.2f} s",
        ),
    ]
    ten = res.tens[0]
    markers = median([t.markers_s for t in res.tens])
    direct_ten = median(res.direct_tens)
    section.rows += [
        Row(
            f"{CONCURRENT} x Async.VM.start at once -> every agent reported 0/ip",
            f"{median([t.ips_s for t in res.tens]):.1f} s",
            passed=False if any(t.failed for t in res.tens) else None,
        ),
        Row(
            f"{CONCURRENT} x Async.VM.start at once -> every TINYVM-READY",
            f"{markers:.1f} s",
            floor=f"{direct_ten:.1f} s ({CONCURRENT} direct launches)",
            ratio=_ratio(markers, direct_ten),
        ),
        Row(
            f"daemon RSS before / after {CONCURRENT} VMs started",
            f"{ten.rss_before:.1f} / {ten.rss_after:.1f} MiB",
        ),
        Row(
            f"daemon memory per running VM ((after - before) / {CONCURRENT})",
            f"{(ten.rss_after - ten.rss_before) / CONCURRENT * 1024:.0f} KiB",
        ),
        Row("QEMU RSS per running VM, for scale", f"{ten.qemu_rss / CONCURRENT:.0f} MiB"),
    ]
    notes = section.notes
    if res.libvirt_error:
        notes.append(f"libvirt not measured: {res.libvirt_error}")
    elif lv is not None:
        facts = [
            line.split(":", 1)[1].strip()
            for line in lv.version.splitlines()
            if line.startswith(("Running against daemon", "Running hypervisor"))
        ]
        notes.append(
            f"libvirt {' with '.join(facts)}: domain type 'qemu' (TCG), same kernel, initrd, "
            "command line, memory, MAC and TCG cache size, serial to a file, user-mode virtio "
            "NIC, agent channel, balloon, VGA + VNC on a unix socket; QEMU run as root without "
            "relabelling; libvirt (root): qemu.conf with user/group root (bind-mounted in a "
            "private mount namespace); libvirt (stock): Debian's qemu.conf, which here re-probes "
            "QEMU's capabilities at every start; " + "; ".join(res.libvirt_setup + lv.notes)
        )
    notes += [
        "guest: the tiny test guest (Debian cloud kernel + busybox initramfs with the real "
        "qemu-ga), direct kernel boot, 128 MiB, 1 vCPU, one user-mode virtio NIC, no disk",
        "rounds interleaved after one untimed round; each VM is hard-shut-down (openxapi), "
        "SIGKILLed (direct) or destroyed (libvirt) before the next starts; READY polled "
        "every 5 ms",
    ]
    for label, phase in (("rounds", p1), ("second rounds", p2)):
        if phase:
            notes.append(
                f"{label}, READY s: "
                + "; ".join(f"{k} " + ", ".join(f"{r:.2f}" for _, r in v) for k, v in phase.items())
            )
    notes += [
        "suspend + resume per round: " + ", ".join(f"{x:.2f}" for x in pairs) + " s (the "
        "memory image goes through a file; each round after the agent reported)",
        f"{CONCURRENT} at once, per round (openxapi agents / markers, direct markers): "
        + "; ".join(
            f"{t.ips_s:.1f} / {t.markers_s:.1f}, {d:.1f} s"
            for t, d in zip(res.tens, res.direct_tens, strict=True)
        )
        + f" (agent addresses polled every 0.2 s); {sum(t.failed for t in res.tens)} tasks "
        "failed",
    ]
