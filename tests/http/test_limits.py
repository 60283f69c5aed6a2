"""Limits as a client sees them: 431, 408, 500 for big bodies, 503 per-address cap, 429."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from openxapi.http import HttpServer, Limits, Request, Response, Router, text_response
from openxapi.http.limits import RateLimiter
from tests.http.httptest_support import Start, exchange, split_responses


async def ok(request: Request) -> Response:
    return text_response(200, f"ok {len(request.body)}")


async def sink(request: Request) -> Response:
    assert request.stream is not None
    return text_response(200, f"streamed {len(await request.stream.read_all())}")


def _router() -> Router:
    router = Router()
    router.add("/", ok)
    router.add("/import", sink, stream=True)
    return router


def _request_with_head_size(size: int) -> bytes:
    base = b"GET / HTTP/1.1\r\nConnection: close\r\nX-Pad: \r\n\r\n"
    return base.replace(b"X-Pad: ", b"X-Pad: " + b"a" * (size - len(base)))


async def test_header_limit_counts_the_whole_head(start: Start) -> None:
    server = await start(_router())
    port = server.ports[0]
    exact = _request_with_head_size(1024)
    assert len(exact) == 1024
    assert (await exchange(port, exact)).startswith(b"HTTP/1.1 200 ")
    too_big = await exchange(port, _request_with_head_size(1025))
    assert too_big.startswith(b"HTTP/1.1 431 ")
    # A head that never ends is refused once it passes the limit, without waiting.
    endless = await exchange(port, b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 5000)
    assert endless.startswith(b"HTTP/1.1 431 ")


async def test_body_arriving_with_head_is_not_counted_as_head(start: Start) -> None:
    server = await start(_router())
    body = b"x" * 5000
    data = await exchange(
        server.ports[0],
        b"POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: 5000\r\n\r\n" + body,
    )
    assert data.endswith(b"ok 5000")


async def test_slowloris_first_request_gets_408(start: Start) -> None:
    limits = Limits(header_read_timeout=0.3, header_total_timeout=0.6)
    server = await start(_router(), limits)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
    loop = asyncio.get_running_loop()
    began = loop.time()
    writer.write(b"GET / HTTP/1.1\r\n")
    reply = b""
    for _ in range(20):  # one header line every 0.1 s: each read is in time, the total is not
        await asyncio.sleep(0.1)
        if reader.at_eof():
            break
        try:
            writer.write(b"X-Slow: 1\r\n")
        except ConnectionError:
            break
        try:
            reply += await asyncio.wait_for(reader.read(), 0.01)
        except TimeoutError:
            continue
        break
    reply += await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert 0.5 <= loop.time() - began < 1.5


async def test_silent_first_request_gets_408(start: Start) -> None:
    server = await start(_router(), Limits(header_read_timeout=0.2, header_total_timeout=5))
    data = await exchange(server.ports[0], b"GET / HT")
    assert data.startswith(b"HTTP/1.1 408 ")


async def test_later_requests_have_no_header_timeout(start: Start) -> None:
    limits = Limits(header_read_timeout=0.1, header_total_timeout=0.2, idle_timeout=5)
    server = await start(_router(), limits)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    first = await asyncio.wait_for(reader.readuntil(b"ok 0"), 5)
    assert first.startswith(b"HTTP/1.1 200 ")
    writer.write(b"GET / HTTP/1.1\r\n")
    await asyncio.sleep(0.4)
    writer.write(b"Connection: close\r\n\r\n")
    second = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert second.startswith(b"HTTP/1.1 200 ")


async def test_idle_keep_alive_connection_closed_quietly(start: Start) -> None:
    server = await start(_router(), Limits(idle_timeout=0.2))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"ok 0")
    assert server.connections == 0


async def test_body_over_limit_is_500_and_close(start: Start) -> None:
    server = await start(_router(), Limits(max_body_bytes=1000))
    port = server.ports[0]
    data = await exchange(port, b"POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n" + b"x" * 1001)
    assert data.startswith(b"HTTP/1.1 500 ") and b"Connection: close" in data
    chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"200\r\n" + b"y" * 512
    data = await exchange(port, chunked + b"\r\n" + b"200\r\n" + b"y" * 512 + b"\r\n0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 500 ")
    # The limit applies to whole-body routes only; streaming routes take any size.
    data = await exchange(
        port,
        b"PUT /import HTTP/1.1\r\nConnection: close\r\nContent-Length: 5000\r\n\r\n" + b"z" * 5000,
    )
    assert data.endswith(b"streamed 5000")


async def test_connection_cap_per_address(start: Start) -> None:
    server = await start(_router(), Limits(max_connections_per_address=2))
    port = server.ports[0]
    held = []
    for _ in range(2):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"ok 0"), 5)
        held.append(writer)
    refused = await exchange(port, b"GET / HTTP/1.1\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 503 ")
    held.pop().close()
    await asyncio.sleep(0.1)
    accepted = await exchange(port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert accepted.startswith(b"HTTP/1.1 200 ")
    for writer in held:
        writer.close()


async def test_unix_socket_is_exempt_from_caps(tmp_path: Path) -> None:
    server = HttpServer(_router(), Limits(max_connections_per_address=1, rate_per_second=0.001))
    path = str(tmp_path / "s")
    await server.start_unix(path)
    try:
        writers = []
        for _ in range(3):
            reader, writer = await asyncio.open_unix_connection(path)
            writers.append(writer)
            for _ in range(3):
                writer.write(b"GET / HTTP/1.1\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"ok 0"), 5)
                assert head.startswith(b"HTTP/1.1 200 ")
        for writer in writers:
            writer.close()
    finally:
        await server.close()


async def test_rate_limit_429(start: Start) -> None:
    server = await start(_router(), Limits(rate_per_second=0.5, rate_burst=2))
    data = await exchange(
        server.ports[0],
        b"GET / HTTP/1.1\r\n\r\n" * 3 + b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nzz" * 1,
        half_close=True,
    )
    statuses = [status for status, _, _ in split_responses(data)]
    assert statuses == [200, 200, 429, 429]


def test_rate_limiter_refills() -> None:
    limiter = RateLimiter(rate=10, burst=2)
    assert limiter.allow("a", 0.0) and limiter.allow("a", 0.0)
    assert not limiter.allow("a", 0.0)
    assert limiter.allow("b", 0.0)
    assert limiter.allow("a", 0.1)
    assert not limiter.allow("a", 0.1)
    assert not RateLimiter(rate=0, burst=0).enabled


@pytest.mark.parametrize("rate", [0.0])
async def test_rate_limit_disabled(start: Start, rate: float) -> None:
    server = await start(_router(), Limits(rate_per_second=rate, rate_burst=0))
    data = await exchange(server.ports[0], b"GET / HTTP/1.1\r\n\r\n" * 50, half_close=True)
    assert {status for status, _, _ in split_responses(data)} == {200}


async def test_running_handler_is_never_timed_out(start: Start) -> None:
    async def slow(request: Request) -> Response:
        await asyncio.sleep(0.5)
        return text_response(200, "late")

    router = Router()
    router.add("/", slow)
    limits = Limits(header_read_timeout=0.1, header_total_timeout=0.1, idle_timeout=0.1)
    server = await start(router, limits)
    data = await exchange(server.ports[0], b"GET / HTTP/1.1\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"late")
