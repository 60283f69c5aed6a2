"""Periodic clean-up of tasks and messages, as the reference's database GC does it."""

from __future__ import annotations

import asyncio
import logging

from openxapi.api import messages
from openxapi.api.state import ServerState
from openxapi.api.tasks import tasks_of

log = logging.getLogger("openxapi.gc")

#: Seconds between passes (the reference's GC thread also runs about once a minute).
GC_INTERVAL = 60.0


def collect_once(state: ServerState) -> tuple[int, int]:
    """One pass: (tasks destroyed, messages trimmed). Not yet durable."""
    return tasks_of(state).collect_garbage(), messages.collect_garbage(state)


async def collect_periodically(state: ServerState, interval: float | None = None) -> None:
    """Run :func:`collect_once` every ``interval`` seconds (default ``GC_INTERVAL``) until
    cancelled."""
    while True:
        await asyncio.sleep(GC_INTERVAL if interval is None else interval)
        try:
            gone = collect_once(state)
            if any(gone):
                await state.store.sync()
                log.info("gc: %d tasks and %d messages removed", *gone)
        except Exception:
            log.exception("gc pass failed")
