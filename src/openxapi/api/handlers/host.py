"""host: the behaviour beyond generated accessors that a fresh server needs."""

from __future__ import annotations

import time
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.spec.values import DateTime, now


@handler("host.get_servertime")
async def get_servertime(state: ServerState, ctx: CallContext, host: str) -> Any:
    state.record("host", host)
    return now()


@handler("host.get_server_localtime")
async def get_server_localtime(state: ServerState, ctx: CallContext, host: str) -> Any:
    state.record("host", host)
    # The reference sends local time with no zone suffix.
    return DateTime(time.strftime("%Y%m%dT%H:%M:%S", time.localtime()))
