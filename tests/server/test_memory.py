"""Freed heap memory goes back to the system after a burst of garbage."""

from __future__ import annotations

import os

from openxapi.server.memory import release_free_memory


def _rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/status") as fh:
        return int(fh.read().split("VmRSS:")[1].split()[0])


def test_release_free_memory_returns_heap_after_a_burst() -> None:
    # Many small objects freed out of order leave glibc holding the pages.
    burst = [{"k": str(i) * 20, "v": [i, str(i)]} for i in range(300_000)]
    keep = burst[::97]
    del burst
    before = _rss_kib()
    assert release_free_memory() is True
    after = _rss_kib()
    assert after < before
    assert keep
