"""Raw-socket client helpers shared by the HTTP tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from openxapi.http import HttpServer

#: The `start` fixture: `await start(router, limits=None)` gives a running server.
Start = Callable[..., Awaitable[HttpServer]]


async def exchange(
    port: int, data: bytes, *, half_close: bool = False, timeout: float = 5.0
) -> bytes:
    """Send raw bytes, optionally shut down our write side, and read until the server
    closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if half_close:
            writer.write_eof()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def split_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Parse consecutive Content-Length-framed responses out of raw bytes."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        out.append((status, headers, rest[:length]))
        data = rest[length:]
    return out
