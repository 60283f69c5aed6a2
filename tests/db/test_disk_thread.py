"""The store's disk thread: calls run in order, off the loop, and report back to it."""

from __future__ import annotations

import asyncio
import threading

import pytest

from openxapi.db.disk_thread import DiskThread


async def test_calls_run_in_order_on_one_other_thread() -> None:
    thread = DiskThread("test-disk")
    seen: list[tuple[int, str]] = []

    def job(n: int) -> int:
        seen.append((n, threading.current_thread().name))
        return n * 10

    try:
        results = await asyncio.gather(*(thread.call(lambda n=n: job(n)) for n in range(20)))
    finally:
        thread.stop()
    assert results == [n * 10 for n in range(20)]
    assert [n for n, _ in seen] == list(range(20))
    assert {name for _, name in seen} == {"test-disk"}


async def test_an_exception_reaches_the_caller_and_later_calls_still_run() -> None:
    thread = DiskThread("test-disk")

    def fail() -> None:
        raise OSError("disk on fire")

    try:
        with pytest.raises(OSError, match="disk on fire"):
            await thread.call(fail)
        assert await thread.call(lambda: "still here") == "still here"
    finally:
        thread.stop()


async def test_a_cancelled_caller_does_not_stop_the_call_or_the_thread() -> None:
    thread = DiskThread("test-disk")
    gate = threading.Event()
    ran: list[str] = []

    def slow() -> None:
        gate.wait(5)
        ran.append("slow")

    try:
        fut = thread.call(slow)
        fut.cancel()
        gate.set()
        assert await thread.call(lambda: "next") == "next"
        assert ran == ["slow"]
    finally:
        thread.stop()
