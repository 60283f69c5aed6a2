"""What the storage benchmarks share: a server with HTTP and HTTPS, disk transfers through
efficient clients, and page-cache handling that treats every measured copy the same way.

The clients are as lean as the floor they are compared with: an upload hands the file to
the kernel with ``sendfile`` (plain HTTP) or large ``send`` calls (HTTPS); a download
``recv_into``s a reused buffer and writes it out, then fsyncs. Before every timed copy
the source file's cached pages are dropped (``POSIX_FADV_DONTNEED``), for the floor too.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import ROOT_PASSWORD, Rpc, free_port, spawn, stop

MiB = 1 << 20


def drop_cache(path: Path) -> None:
    """Evict a file's pages from the page cache (written pages are flushed first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def random_file(path: Path, size: int) -> None:
    """``size`` bytes of random data, written and flushed."""
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n
        f.flush()
        os.fsync(f.fileno())


def dd(src: Path, dst: Path) -> float:
    """Seconds ``dd bs=1M conv=fsync`` takes to copy ``src`` (uncached) to a new ``dst``."""
    dst.unlink(missing_ok=True)
    drop_cache(src)
    t0 = time.perf_counter()
    subprocess.run(
        ["dd", f"if={src}", f"of={dst}", "bs=1M", "conv=fsync"],
        check=True,
        capture_output=True,
    )
    seconds = time.perf_counter() - t0
    drop_cache(dst)
    return seconds


@dataclass
class StorageServer:
    """An ``openxapi serve`` with plain HTTP and HTTPS on loopback."""

    data_dir: Path
    extra: list[str] = field(default_factory=list)
    http_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> None:
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
            str(self.http_port),
            "--https-port",
            str(self.https_port),
            "--backend",
            "simulator",
            "--unix-socket",
            str(self.data_dir / "xapi.sock"),
            *self.extra,
        ]
        env = dict(os.environ, OPENXAPI_ROOT_PASSWORD=ROOT_PASSWORD)
        self.proc = spawn(cmd, self.data_dir.parent / f"{self.data_dir.name}.log", env)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see its log")
            try:
                Rpc(self.http_port).login()
                return
            except (OSError, xmlrpc.client.ProtocolError, RuntimeError):
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not start in time") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def rpc(self) -> Rpc:
        r = Rpc(self.http_port)
        r.login()
        return r

    def connect(self, tls: bool) -> socket.socket:
        port = self.https_port if tls else self.http_port
        sock = socket.create_connection(("127.0.0.1", port), timeout=600)
        if not tls:
            return sock
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx.wrap_socket(sock, server_hostname="localhost")


def new_vdi(rpc: Rpc, sr: str, size: int, name: str) -> str:
    ref: str = rpc(
        "VDI.create",
        {
            "name_label": name,
            "SR": sr,
            "virtual_size": str(size),
            "type": "user",
            "sharable": False,
            "read_only": False,
            "other_config": {},
        },
    )
    return ref


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the reply")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def _header(head: bytes, name: str) -> str:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.encode():
            return value.strip().decode()
    return ""


def wait_task(rpc: Rpc, task: str, timeout: float = 600.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        rec: dict[str, Any] = rpc("task.get_record", task)
        if rec["status"] != "pending":
            if rec["status"] != "success":
                raise RuntimeError(f"task {task} ended {rec['status']}: {rec['error_info']}")
            return rec
        if time.monotonic() > deadline:
            raise RuntimeError(f"task {task} still pending")
        time.sleep(0.005)


def upload(server: StorageServer, rpc: Rpc, vdi: str, src: Path, tls: bool) -> float:
    """Seconds from the first byte sent to the import's task ending in success."""
    size = src.stat().st_size
    drop_cache(src)
    t0 = time.perf_counter()
    with server.connect(tls) as sock, open(src, "rb") as f:
        head = (
            f"PUT /import_raw_vdi?session_id={rpc.session}&vdi={vdi} HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(head.encode())
        if tls:
            buf = bytearray(4 * MiB)
            view = memoryview(buf)
            while n := f.readinto(buf):
                sock.sendall(view[:n])
        else:
            sock.sendfile(f)
        reply, _ = _read_head(sock)
        while sock.recv(65536):  # the reply ends when the import has ended
            pass
    task = _header(reply, "task-id")
    wait_task(rpc, task)
    return time.perf_counter() - t0


def download(
    server: StorageServer, rpc: Rpc, vdi: str, dst: Path, tls: bool, cached: Path | None
) -> float:
    """Seconds from the request to the last byte being in ``dst`` and fsynced."""
    if cached is not None:
        drop_cache(cached)
    dst.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with server.connect(tls) as sock:
        sock.sendall(
            (
                f"GET /export_raw_vdi?session_id={rpc.session}&vdi={vdi} HTTP/1.1\r\n"
                "Host: 127.0.0.1\r\nConnection: close\r\n\r\n"
            ).encode()
        )
        head, rest = _read_head(sock)
        length = int(_header(head, "content-length"))
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            got = len(rest)
            if rest:
                os.write(fd, rest)
            buf = bytearray(4 * MiB)
            view = memoryview(buf)
            filled = 0
            while got < length:
                # TLS hands out one 16 KiB record per call: gather them, write in big pieces.
                n = sock.recv_into(view[filled:], min(len(buf) - filled, length - got))
                if n == 0:
                    raise ConnectionError(f"export ended after {got} of {length} bytes")
                filled += n
                got += n
                if filled == len(buf) or got == length:
                    os.write(fd, view[:filled])
                    filled = 0
            os.fsync(fd)
        finally:
            os.close(fd)
    seconds = time.perf_counter() - t0
    wait_task(rpc, _header(head, "task-id"))
    drop_cache(dst)
    return seconds


def vdi_file(server: StorageServer, rpc: Rpc, sr: str, vdi: str) -> Path:
    """The qcow2 image of a disk in a local-directory SR."""
    uuid = rpc("SR.get_uuid", sr)
    location = rpc("VDI.get_location", vdi)
    return server.data_dir / "sr" / uuid / f"{location}.qcow2"


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6
