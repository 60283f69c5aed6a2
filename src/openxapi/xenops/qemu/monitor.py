"""One QMP connection per domain, with the events the backend waits on.

``qemu.qmp`` does the protocol; this wrapper adds what the backend needs around it: connecting
to a socket QEMU creates asynchronously, recording the events that tell a guest power-off from
a reset or a crash, and noticing when the process is gone (the connection drops).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qemu.qmp import EventListener, QMPClient, QMPError, Runstate

# qemu.qmp logs a traceback whenever QEMU exits under it; an exit is normal here.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)

WATCHED_EVENTS = (
    "SHUTDOWN",
    "RESET",
    "STOP",
    "RESUME",
    "GUEST_PANICKED",
    "BALLOON_CHANGE",
    "DEVICE_DELETED",
)


class MonitorGone(Exception):
    """The QMP connection dropped: the QEMU process has exited."""


class Monitor:
    """A connected QMP session: commands, and the events seen since connecting."""

    def __init__(self, name: str) -> None:
        self._client = QMPClient(name)
        self._listener = EventListener(WATCHED_EVENTS)
        self._client.register_listener(self._listener)
        self.events: list[tuple[float, str, Mapping[str, Any]]] = []
        self._changed = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self.gone = asyncio.Event()
        #: Set (as well) whenever an event arrives or the connection drops.
        self.wake: asyncio.Event | None = None

    async def connect(self, path: Path, timeout: float = 10.0) -> None:
        """Connect to QEMU's QMP socket, waiting for QEMU to create it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self._client.connect(str(path))
                break
            except (QMPError, OSError) as e:
                if time.monotonic() > deadline:
                    raise MonitorGone(f"no QMP at {path}: {e}") from None
                await asyncio.sleep(0.02)
        self._pump = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        pump = asyncio.get_running_loop().create_task(self._events())
        try:
            while self._client.runstate == Runstate.RUNNING:
                await self._client.runstate_changed()
        finally:
            pump.cancel()
            self.gone.set()
            self._changed.set()
            if self.wake is not None:
                self.wake.set()

    async def _events(self) -> None:
        async for event in self._listener:
            data = event.get("data", {})
            self.events.append(
                (time.monotonic(), str(event["event"]), data if isinstance(data, dict) else {})
            )
            self._changed.set()
            if self.wake is not None:
                self.wake.set()

    async def execute(self, cmd: str, args: Mapping[str, object] | None = None) -> Any:
        if self.gone.is_set():
            raise MonitorGone(cmd)
        try:
            return await self._client.execute(cmd, args)
        except QMPError as e:
            if self.gone.is_set() or self._client.runstate != Runstate.RUNNING:
                raise MonitorGone(cmd) from None
            raise RuntimeError(f"QMP {cmd}: {e}") from None
        except (EOFError, OSError):
            raise MonitorGone(cmd) from None

    async def wait_event(self, names: tuple[str, ...], since: float, timeout: float) -> str | None:
        """The first of ``names`` seen after ``since`` (monotonic), or "GONE" when QEMU
        exited, or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for at, name, _ in self.events:
                if at >= since and name in names:
                    return name
            if self.gone.is_set():
                return "GONE"
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def last_shutdown_reason(self) -> str:
        """The reason of the last SHUTDOWN event ("" when QEMU never reported one)."""
        for _, name, data in reversed(self.events):
            if name == "SHUTDOWN":
                return str(data.get("reason", ""))
        return ""

    async def close(self) -> None:
        """Drop the connection (QEMU keeps running)."""
        with contextlib.suppress(Exception):
            await self._client.disconnect()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(BaseException):
                await self._pump
