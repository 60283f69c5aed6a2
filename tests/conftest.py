"""Suite-wide guard: the tests start real QEMU processes, and none may outlive the suite."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Set in this process's environment, so every QEMU the tests start (directly, or through a
#: server they start) carries it and can be told from QEMU processes of anyone else.
MARK = "OPENXAPI_TEST_SESSION"


def _qemu_processes(mark: bytes) -> dict[int, bytes]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
                env = (entry / "environ").read_bytes()
            except OSError:
                continue
            if cmd.startswith(b"qemu-system") and mark in env.split(b"\0"):
                found[int(entry.name)] = cmd
    return found


@pytest.fixture(scope="session", autouse=True)
def no_qemu_left_behind() -> Iterator[None]:
    """Every QEMU process a test started is gone when the suite ends."""
    os.environ[MARK] = f"{os.getpid()}-{time.time()}"
    mark = f"{MARK}={os.environ[MARK]}".encode()
    yield
    left = _qemu_processes(mark)
    assert not left, f"QEMU processes left by the tests: {sorted(left)}"
