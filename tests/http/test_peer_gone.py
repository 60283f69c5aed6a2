"""A running handler can learn that its client went away (long polls stop waiting then);
handlers that do not ask keep running to the end, as the reference's calls do."""

from __future__ import annotations

import asyncio

from openxapi.http import Request, Response, Router, text_response
from tests.http.httptest_support import Start


def _long_poll_router(gone: asyncio.Event, finished: asyncio.Event) -> Router:
    async def poll(request: Request) -> Response:
        request.on_peer_gone(gone.set)
        await asyncio.wait_for(gone.wait(), 10)
        finished.set()
        return text_response(200, "client left")

    router = Router()
    router.add("/poll", poll)
    return router


async def test_a_disconnect_reaches_the_waiting_handler(start: Start) -> None:
    gone, finished = asyncio.Event(), asyncio.Event()
    server = await start(_long_poll_router(gone, finished))
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
    writer.write(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.05)
    assert not gone.is_set()
    writer.close()
    await asyncio.wait_for(finished.wait(), 5)


async def test_a_half_close_counts_as_leaving(start: Start) -> None:
    gone, finished = asyncio.Event(), asyncio.Event()
    server = await start(_long_poll_router(gone, finished))
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
    writer.write(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write_eof()
    await asyncio.wait_for(finished.wait(), 5)
    writer.close()


async def test_handlers_that_do_not_ask_run_to_the_end(start: Start) -> None:
    started, finished = asyncio.Event(), asyncio.Event()

    async def slow(request: Request) -> Response:
        started.set()
        await asyncio.sleep(0.2)
        finished.set()
        return text_response(200, "done")

    router = Router()
    router.add("/slow", slow)
    server = await start(router)
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await started.wait()
    writer.close()
    await asyncio.wait_for(finished.wait(), 5)


async def test_an_unregistered_callback_is_not_run(start: Start) -> None:
    called: list[str] = []
    released = asyncio.Event()

    async def handler(request: Request) -> Response:
        remove = request.on_peer_gone(lambda: called.append("gone"))
        remove()
        await asyncio.sleep(0.2)
        released.set()
        return text_response(200, "ok")

    router = Router()
    router.add("/", handler)
    server = await start(router)
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()
    await asyncio.wait_for(released.wait(), 5)
    assert called == []


async def test_a_request_without_a_connection_offers_a_harmless_hook() -> None:
    request = Request("GET", "/")
    remove = request.on_peer_gone(lambda: None)
    remove()


async def test_a_callback_registered_after_the_client_left_still_runs(start: Start) -> None:
    ran = asyncio.Event()
    left = asyncio.Event()

    async def late(request: Request) -> Response:
        # Wait until the connection has seen the client go, then register.
        await asyncio.wait_for(left.wait(), 5)
        await asyncio.sleep(0.05)
        request.on_peer_gone(ran.set)
        await asyncio.wait_for(ran.wait(), 5)
        return Response(200)

    router = Router()
    router.add("/", late)
    server = await start(router)
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()
    left.set()
    await asyncio.wait_for(ran.wait(), 5)
