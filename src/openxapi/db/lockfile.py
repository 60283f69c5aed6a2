"""The store file's owner lock: one daemon (and its writer process) per store file.

SQLite's exclusive locking mode guards the file only while a connection is open; the
daemon opens the file first to load it and then hands it to its writer process, so the
ownership is held by an advisory lock on ``<store>.lock`` that both share (the writer
inherits the descriptor) and that the kernel releases when the last of them exits.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

#: How long to wait for a previous owner (a killed daemon's writer finishing its batch).
WAIT = 3.0


class StoreLocked(OSError):
    """Another daemon owns the store file."""


def acquire(store: Path, wait: float = WAIT) -> int:
    """Lock the store for this process; returns the descriptor that holds the lock."""
    path = store.with_name(store.name + ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise StoreLocked(f"{store} is in use by another openxapi daemon") from None
            time.sleep(0.05)
        except BaseException:
            os.close(fd)
            raise


def release(fd: int) -> None:
    os.close(fd)
