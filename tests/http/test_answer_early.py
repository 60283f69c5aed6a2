"""A running handler can send its whole reply before it returns (a woken long poll answered
by the code that woke it); what it returns afterwards is dropped, and the connection goes
on with the next request."""

from __future__ import annotations

import asyncio

from openxapi.http import Request, Response, Router, text_response
from tests.http.httptest_support import Start


async def _read_reply(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head, await reader.readexactly(length)


def _router(resumed: asyncio.Event, release: asyncio.Event, refused: list[bool]) -> Router:
    async def poll(request: Request) -> Response:
        assert request.answer_early(text_response(200, "early"))
        refused.append(request.answer_early(text_response(200, "twice")))
        await release.wait()
        resumed.set()
        return text_response(200, "late")

    async def plain(request: Request) -> Response:
        return text_response(200, "next")

    router = Router()
    router.add("/poll", poll)
    router.add("/next", plain)
    return router


async def test_the_early_reply_is_the_one_sent_and_the_connection_carries_on(
    start: Start,
) -> None:
    resumed, release, refused = asyncio.Event(), asyncio.Event(), []
    server = await start(_router(resumed, release, refused))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
    writer.write(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head, body = await _read_reply(reader)
    assert body == b"early" and b"keep-alive" in head.lower()
    assert refused == [False]  # one reply per request
    # The next request waits for the handler to finish, then is answered normally.
    writer.write(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.05)
    release.set()
    await resumed.wait()
    _head, body = await _read_reply(reader)
    assert body == b"next"  # never "late"
    writer.close()


async def test_a_request_asking_to_close_is_closed_after_the_early_reply(start: Start) -> None:
    resumed, release, refused = asyncio.Event(), asyncio.Event(), []
    release.set()
    server = await start(_router(resumed, release, refused))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
    writer.write(b"GET /poll HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    head, body = await _read_reply(reader)
    assert body == b"early" and b"connection: close" in head.lower()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
