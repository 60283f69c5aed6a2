"""The one thread that touches the store file: SQLite connections belong to a thread, and
the store wants its disk calls run in order, off the event loop.

A bare thread fed by a ``SimpleQueue`` costs the event loop less per call than
``run_in_executor`` (no executor locks, no chained concurrent future); every durable batch
pays that cost once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[Callable[[], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.cancelled():
        return
    if exc is None:
        fut.set_result(result)
    else:
        fut.set_exception(exc)


class DiskThread:
    """Runs the calls given to ``call`` one at a time, in order, on a thread of its own."""

    def __init__(self, name: str) -> None:
        self._jobs: SimpleQueue[_Job | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Queue ``fn``; the future gets its result (or exception) on the calling loop.
        Cancelling the future does not stop ``fn`` once queued."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, fut, loop))
        return fut

    def stop(self) -> None:
        """Let queued calls finish, then end the thread (blocks until it has)."""
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is None:
                return
            fn, fut, loop = job
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn()
            except BaseException as exc:
                error = exc
            try:
                loop.call_soon_threadsafe(_settle, fut, result, error)
            except RuntimeError:
                pass  # the loop is closed: nobody is waiting any more
            del job, fn, fut, result, error
