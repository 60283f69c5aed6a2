"""Run a real ``openxapi serve`` process for tests: free ports, its own data directory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT_PASSWORD = "test-root-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """One server process; ``start()`` returns when it accepts calls."""

    data_dir: Path
    http_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    _pump: threading.Thread | None = None

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "xapi.sock"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def cert_path(self) -> Path:
        return self.data_dir / "tls" / "server.pem"

    def start(self, timeout: float = 20.0) -> float:
        """Start and wait until ready; returns the seconds it took."""
        env = dict(os.environ)
        env.setdefault("OPENXAPI_ROOT_PASSWORD", ROOT_PASSWORD)
        env.update(self.env)
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
            str(self.http_port),
            "--https-port",
            str(self.https_port),
            "--unix-socket",
            str(self.socket_path),
            "--auth-fail-delay",
            "0.2",
            *([] if "--backend" in self.extra_args else ["--backend", "simulator"]),
            *self.extra_args,
        ]
        t0 = time.monotonic()
        self.output = []
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                if "openxapi ready" in line:
                    ready.set()

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() - t0 > timeout:
                self.kill()
                raise RuntimeError("server did not start:\n" + "".join(self.output))
        return time.monotonic() - t0

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reap()
        return code

    def _reap(self) -> None:
        """Wait for the output reader, then close the pipe (no leaked file objects)."""
        if self._pump is not None:
            self._pump.join(5)
            self._pump = None
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self._reap()
