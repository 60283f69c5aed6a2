"""What every benchmark needs: server processes started and stopped by PID, RPC helpers for
setting up, raw HTTP requests, statistics and the facts of the machine the run is on.

Everything talks to 127.0.0.1 only. Every process started here is registered and stopped at
exit, so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT_PASSWORD = "bench-root-pw"
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent

_live: dict[int, subprocess.Popen[bytes]] = {}


def _stop_all() -> None:
    for pid, proc in list(_live.items()):
        with contextlib.suppress(OSError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _live.pop(pid, None)


atexit.register(_stop_all)


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a process whose output goes to ``log``; it is stopped at exit if still running."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    _live[proc.pid] = proc
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM the process by its PID and wait; SIGKILL if it does not end in time."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    _live.pop(proc.pid, None)
    return proc.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------- HTTP and RPC


def http_request(path: str, body: bytes, content_type: str) -> bytes:
    """A complete keep-alive POST, head and body, ready to send as is."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def xml_call(method: str, *params: Any) -> bytes:
    return http_request("/", xmlrpc.client.dumps(params, method).encode(), "text/xml")


def json_call(method: str, *params: Any) -> bytes:
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1})
    return http_request("/jsonrpc", body.encode(), "application/json")


def read_response(sock: socket.socket, view: memoryview, keep: bytearray | None = None) -> int:
    """Read one HTTP response with a Content-Length; returns its size in bytes.

    Nothing is parsed beyond the head's length; with ``keep`` the bytes are also collected.
    """
    buf = view.obj
    assert isinstance(buf, bytearray)
    n = sock.recv_into(view)
    if n == 0:
        raise ConnectionError("server closed the connection")
    end = buf.find(b"\r\n\r\n", 0, n)
    while end < 0:
        more = sock.recv_into(view[n:])
        if more == 0:
            raise ConnectionError("server closed the connection")
        n += more
        end = buf.find(b"\r\n\r\n", 0, n)
    i = buf.find(b"Content-Length:", 0, end)
    if i < 0:
        i = buf.lower().find(b"content-length:", 0, end)
    total = end + 4 + int(buf[i + 15 : buf.find(b"\r\n", i)])
    if keep is not None:
        keep += view[:n]
    left = total - n
    while left > 0:
        got = sock.recv_into(view, min(left, len(view)))
        if got == 0:
            raise ConnectionError("server closed the connection")
        if keep is not None:
            keep += view[:got]
        left -= got
    return total


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def exchange(port: int, request: bytes) -> bytes:
    """One request on a fresh connection; the whole raw response (head and body)."""
    with connect(port) as sock:
        sock.sendall(request)
        keep = bytearray()
        read_response(sock, memoryview(bytearray(1 << 20)), keep)
        return bytes(keep)


class Rpc:
    """XML-RPC for setting things up (not for measuring)."""

    def __init__(self, port: int) -> None:
        self.proxy = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/", allow_none=True)
        self.session = ""

    def call(self, method: str, *params: Any) -> Any:
        fn: Any = self.proxy
        for part in method.split("."):
            fn = getattr(fn, part)
        reply = fn(*params)
        if reply.get("Status") != "Success":
            raise RuntimeError(f"{method}: {reply.get('ErrorDescription')}")
        return reply.get("Value")

    def login(self) -> str:
        self.session = self.call(
            "session.login_with_password", "root", ROOT_PASSWORD, "1.0", "openxapi-bench"
        )
        return self.session

    def __call__(self, method: str, *params: Any) -> Any:
        return self.call(method, self.session, *params)


# ---------------------------------------------------------------------- the server


def _try_login(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        body = xmlrpc.client.dumps(
            ("root", ROOT_PASSWORD, "1.0", "openxapi-bench"), "session.login_with_password"
        )
        conn.request("POST", "/", body, {"Content-Type": "text/xml"})
        return b"Success" in conn.getresponse().read()
    except (ConnectionError, http.client.HTTPException, OSError):
        return False
    finally:
        conn.close()


@dataclass
class Server:
    """One ``openxapi serve`` process on loopback, plain HTTP only."""

    data_dir: Path
    durable: bool = True
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    startup_s: float = 0.0
    #: The domain backend (``--backend``) and any further ``openxapi serve`` options.
    backend: str = "simulator"
    extra_args: tuple[str, ...] = ()

    def start(self, timeout: float = 120.0) -> float:
        """Start and wait until a login succeeds; returns seconds from process start."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "openxapi.cli.main",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            "127.0.0.1",
            "--http-port",
            str(self.port),
            "--https-port",
            "0",
            "--backend",
            self.backend,
            "--unix-socket",
            str(self.data_dir / "xapi.sock"),
            *self.extra_args,
        ]
        if not self.durable:
            cmd.append("--no-durability")
        env = dict(os.environ, OPENXAPI_ROOT_PASSWORD=ROOT_PASSWORD)
        t0 = time.perf_counter()
        self.proc = spawn(cmd, self.data_dir.parent / f"{self.data_dir.name}.log", env)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see its log")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
            except OSError:
                if time.perf_counter() - t0 > timeout:
                    self.stop()
                    raise RuntimeError("server did not start in time") from None
                time.sleep(0.005)
                continue
            if _try_login(self.port):
                break
            time.sleep(0.005)
        self.startup_s = time.perf_counter() - t0
        return self.startup_s

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def rss_mib(self) -> tuple[float, float]:
        """(current, peak) resident memory of the server process, MiB."""
        assert self.proc is not None
        return proc_rss_mib(self.proc.pid)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _own_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (the store's writer process, QEMU, ...)."""
    kids: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as f:
            kids += [int(x) for x in f.read().split()]
    return kids


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process and its live children have used so far."""
    total = _own_cpu_seconds(pid)
    for kid in children(pid):
        with contextlib.suppress(OSError):
            total += _own_cpu_seconds(kid)
    return total


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of the process and of its
    live children so far."""
    total = 0
    for proc in (pid, *children(pid)):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{proc}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{proc}/task/{tid}/status") as f:
                    for line in f:
                        if "ctxt_switches:" in line:
                            total += int(line.split()[1])
    return total


class SyscallCounter:
    """Counts one system call of a process with ``perf stat`` while a block runs; ``count``
    stays None where perf or its tracepoints are not available."""

    def __init__(self, pid: int, syscall: str, log: Path) -> None:
        self.pid, self.syscall, self.log = pid, syscall, log
        self.count: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SyscallCounter:
        perf = shutil.which("perf")
        if perf is not None:
            event = f"syscalls:sys_enter_{self.syscall}"
            pids = ",".join(str(p) for p in (self.pid, *children(self.pid)))
            cmd = [perf, "stat", "-x,", "-e", event, "-p", pids]
            self._proc = spawn(cmd, self.log)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is None:
            return
        os.kill(self._proc.pid, signal.SIGINT)
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            stop(self._proc)
        _live.pop(self._proc.pid, None)
        for line in self.log.read_text(errors="replace").splitlines():
            first = line.split(",")[0]
            if f"sys_enter_{self.syscall}" in line and first.isdigit():
                self.count = int(first)


def proc_rss_mib(pid: int) -> tuple[float, float]:
    rss = hwm = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return rss, hwm


# ---------------------------------------------------------------------- numbers and facts


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def p90(xs: list[float]) -> float:
    """The 90th percentile, nearest rank."""
    s = sorted(xs)
    return s[max(0, -(-len(s) * 9 // 10) - 1)]


def machine_facts() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        import uvloop

        loop = f"uvloop {getattr(uvloop, '__version__', '?')}"
    except ImportError:
        loop = "asyncio (uvloop not installed)"
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    mem = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = f"{int(f.readline().split()[1]) / 2**20:.0f} GiB"
    import openxapi

    where = Path(openxapi.__file__).resolve().parent.parent
    return {
        "openxapi under test": str(where)
        + (f" (git {commit})" if where.is_relative_to(REPO) and commit else ""),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "event loop": loop,
    } | ({"label": os.environ["BENCH_LABEL"]} if os.environ.get("BENCH_LABEL") else {})
