"""The floor: a raw asyncio protocol server that answers every request with the same bytes.

It does the least any HTTP server must (find the end of each request by its Content-Length,
write a reply), so the gap between it and openxapi is what openxapi's own work costs. It
runs on uvloop when openxapi would, and replies with bytes captured from openxapi itself.

    python bench/canned.py --port P --reply FILE [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

from harness import BENCH_DIR, spawn, stop


class Canned(asyncio.Protocol):
    reply = b""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            i = buf.find(b"Content-Length:", 0, end)
            length = int(buf[i + 15 : buf.index(b"\r\n", i)]) if i >= 0 else 0
            total = end + 4 + length
            if len(buf) < total:
                break
            assert self.transport is not None
            self.transport.write(self.reply)
            buf = buf[total:]
        self.buf = buf


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Canned, "127.0.0.1", port, backlog=1024)
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    print("canned ready", flush=True)
    await done.wait()
    server.close()
    await server.wait_closed()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--reply", type=Path, required=True)
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    ns = ap.parse_args()
    Canned.reply = ns.reply.read_bytes()
    if ns.loop == "uvloop":
        import uvloop

        uvloop.run(serve(ns.port))
    else:
        asyncio.run(serve(ns.port))


def uses_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


class CannedServer:
    """The floor server as a process, stopped by PID. ``script`` may name another server
    taking the same options (httponly.py)."""

    def __init__(self, reply_file: Path, port: int, log: Path, script: str = "canned.py") -> None:
        self.port = port
        loop = "uvloop" if uses_uvloop() else "asyncio"
        cmd = [
            sys.executable,
            str(BENCH_DIR / script),
            "--port",
            str(port),
            "--reply",
            str(reply_file),
            "--loop",
            loop,
        ]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = spawn(cmd, log)
        t0 = time.perf_counter()
        while b" ready" not in log.read_bytes():
            if self.proc.poll() is not None or time.perf_counter() - t0 > 60:
                self.stop()
                raise RuntimeError(f"canned server did not start; see {log}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def __enter__(self) -> CannedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()
