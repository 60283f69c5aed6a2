"""Fixtures for the HTTP tests: a server on 127.0.0.1 port 0 and small raw-socket clients.

Every async test here runs twice, on the stock asyncio loop and on uvloop (which the daemon
uses when installed), because their transports differ in flow control and half-close.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
import uvloop

from openxapi.http import HttpServer, Limits, Router
from tests.http.httptest_support import Start


def pytest_asyncio_loop_factories(config: Any, item: Any) -> Mapping[str, Callable[[], Any]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """`await start(router, limits)` gives a running server listening on 127.0.0.1:0."""
    servers: list[HttpServer] = []

    async def _start(router: Router, limits: Limits | None = None) -> HttpServer:
        server = HttpServer(router, limits)
        await server.start_tcp("127.0.0.1", 0)
        servers.append(server)
        return server

    yield _start
    for server in servers:
        await server.close(grace=1.0)
