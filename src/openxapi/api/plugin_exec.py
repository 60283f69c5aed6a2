"""Running host plugins and API extensions as the reference's fork helper runs programs.

A program is found only by its exact name in the directory's listing, so names with
``/`` or ``..`` never resolve. It runs in its own session with a bare ``PATH``, stdin
from /dev/null (or the given bytes), and its stdout and stderr collected. A failure is
reported with the reference's wording ("non-zero exit", "signal: SIGKILL"), and a program
that cannot even start is reported as one exiting non-zero with no output, as the
reference's helper does (exit codes 126/127). Output is capped: a program that writes
more is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: The only environment a program gets (the reference's default).
PATH_ENV = {"PATH": "/sbin:/usr/sbin:/bin:/usr/bin"}
#: The most stdout kept from one run; more and the program is killed.
STDOUT_LIMIT = 16 << 20
#: The most stderr kept from one run.
STDERR_LIMIT = 1 << 20
#: Seconds to gather output still in the pipes once the program has exited.
DRAIN_GRACE = 1.0
#: Plugins shipped with the server, found after the plugin directory's own.
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "plugins"


class SpawnFailure(Exception):
    """A run that did not exit 0: the reference's status text, stdout and stderr."""

    def __init__(self, status: str, stdout: str, stderr: str) -> None:
        super().__init__(status, stdout, stderr)
        self.status = status
        self.stdout = stdout
        self.stderr = stderr


def find_program(directory: Path, name: str) -> Path | None:
    """``directory/name`` if ``name`` is an entry of the directory's listing."""
    try:
        entries = os.listdir(directory)
    except (OSError, ValueError):
        return None
    return directory / name if name in entries else None


def builtin_plugin(name: str) -> Path | None:
    """A plugin shipped with the server: module ``openxapi.plugins.<name with _>``."""
    if not name or "/" in name or name.startswith(".") or "_" in name:
        return None
    path = BUILTIN_DIR / (name.replace("-", "_") + ".py")
    return path if path.is_file() else None


def signal_text(number: int) -> str:
    """A signal as the reference prints it after "signal: "."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG({number})"


@dataclass(slots=True)
class _Sink:
    """Output read so far, up to ``limit`` bytes."""

    limit: int
    data: bytearray = field(default_factory=bytearray)
    overflow: bool = False

    async def drain(self, stream: asyncio.StreamReader, overflowed: Callable[[], None]) -> None:
        """Read to the end of the stream. Past the limit, ``overflowed`` is called once and
        the rest is read and dropped: a pipe left unread would never report its end, and
        the process's exit is only reported once its pipes have ended."""
        while True:
            chunk = await stream.read(1 << 16)
            if not chunk:
                return
            if self.overflow:
                continue
            room = self.limit - len(self.data)
            if len(chunk) > room:
                self.data += chunk[:room]
                self.overflow = True
                overflowed()
                continue
            self.data += chunk

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _kill(proc: asyncio.subprocess.Process) -> None:
    """The program and anything it started in its session."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


async def run(argv: list[str], stdin: bytes | None = None) -> tuple[str, str]:
    """Run a program to its end; its (stdout, stderr) when it exits 0, else SpawnFailure."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=PATH_ENV,
            cwd="/",
            start_new_session=True,
        )
    except (OSError, ValueError):
        raise SpawnFailure("non-zero exit", "", "") from None
    assert proc.stdout is not None and proc.stderr is not None
    out, err = _Sink(STDOUT_LIMIT), _Sink(STDERR_LIMIT)
    kill = functools.partial(_kill, proc)
    readers = [
        asyncio.ensure_future(out.drain(proc.stdout, kill)),
        asyncio.ensure_future(err.drain(proc.stderr, kill)),
    ]
    try:
        if stdin is not None and proc.stdin is not None:
            with contextlib.suppress(ConnectionError):
                proc.stdin.write(stdin)
                await proc.stdin.drain()
            proc.stdin.close()
        await proc.wait()
        await asyncio.wait(readers, timeout=DRAIN_GRACE)
    except BaseException:
        _kill(proc)
        with contextlib.suppress(BaseException):
            await asyncio.shield(proc.wait())
        raise
    finally:
        for r in readers:
            r.cancel()
    code = proc.returncode
    stdout, stderr = out.text(), err.text()
    if out.overflow or err.overflow:
        limit = STDOUT_LIMIT if out.overflow else STDERR_LIMIT
        stderr += f"\n[output beyond {limit} bytes: the program was killed]"
    if code == 0 and not (out.overflow or err.overflow):
        return stdout, stderr
    if code is not None and code < 0:
        raise SpawnFailure(f"signal: {signal_text(-code)}", stdout, stderr)
    raise SpawnFailure("non-zero exit", stdout, stderr)


def python_argv(script: Path, *args: str) -> list[str]:
    """A shipped plugin runs under this server's own interpreter, isolated."""
    return [sys.executable, "-I", str(script), *args]
