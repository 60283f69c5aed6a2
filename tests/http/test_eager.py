"""Handlers that answer without suspending run with no Task; these check that a client cannot
tell: order, errors, cancellation, headers and the next request's view are all as before."""

from __future__ import annotations

import asyncio

from openxapi.http import Router
from openxapi.http.message import Request, Response
from tests.http.httptest_support import Start, exchange, split_responses

HEADERS_A = [("Content-Type", "text/plain"), ("X-A", "1")]
HEADERS_B = [("Content-Type", "text/plain"), ("X-B", "2")]


async def instant(request: Request) -> Response:
    return Response(200, HEADERS_A, request.body or request.path.encode())


async def later(request: Request) -> Response:
    await asyncio.sleep(0.01)
    return Response(200, HEADERS_B, b"later:" + request.body)


async def cancelled(_request: Request) -> Response:
    raise asyncio.CancelledError


async def closing(_request: Request) -> Response:
    return Response(200, [("Connection", "close"), ("X-C", "3")], b"bye")


async def mutating(request: Request) -> Response:
    seen = request.headers.get("x-seen", "")
    request.headers["x-seen"] = "changed"
    return Response(200, HEADERS_A, seen.encode())


async def bad_header(_request: Request) -> Response:
    return Response(200, [("X-Bad", "a\r\nSet-Cookie: x")], b"no")


def _router() -> Router:
    router = Router()
    router.add("/now", instant)
    router.add("/later", later)
    router.add("/cancel", cancelled)
    router.add("/close", closing)
    router.add("/mutate", mutating)
    router.add("/bad", bad_header)
    return router


def _post(path: str, body: bytes, close: bool = False) -> bytes:
    extra = b"Connection: close\r\n" if close else b""
    head = b"POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n"
    return head % (path.encode(), extra, len(body)) + body


async def test_many_pipelined_instant_requests_in_order(start: Start) -> None:
    server = await start(_router())
    count = 3000
    data = b"".join(_post("/now", b"%d" % i) for i in range(count - 1))
    data += _post("/now", b"last", close=True)
    replies = split_responses(await exchange(server.ports[0], data, timeout=20))
    assert [body for _, _, body in replies] == [b"%d" % i for i in range(count - 1)] + [b"last"]
    assert all(h["x-a"] == "1" and h["connection"] == "keep-alive" for _, h, _ in replies[:-1])
    assert replies[-1][1]["connection"] == "close"


async def test_instant_and_suspending_handlers_interleave_in_order(start: Start) -> None:
    server = await start(_router())
    data = b"".join(
        [_post("/now", b"1"), _post("/later", b"2"), _post("/now", b"3"), _post("/later", b"4")]
    )
    data += _post("/now", b"5", close=True)
    replies = split_responses(await exchange(server.ports[0], data))
    bodies = [body for _, _, body in replies]
    assert bodies == [b"1", b"later:2", b"3", b"later:4", b"5"]
    assert [("x-a" in h, "x-b" in h) for _, h, _ in replies] == [
        (True, False),
        (False, True),
        (True, False),
        (False, True),
        (True, False),
    ]


async def test_handler_cancelling_itself_drops_only_its_connection(start: Start) -> None:
    server = await start(_router())
    port = server.ports[0]
    assert await exchange(port, _post("/cancel", b"x") + _post("/now", b"y")) == b""
    replies = split_responses(await exchange(port, _post("/now", b"ok", close=True)))
    assert replies[0][2] == b"ok"
    assert server.connections == 0


async def test_handler_asking_to_close_closes_after_its_reply(start: Start) -> None:
    server = await start(_router())
    replies = split_responses(await exchange(server.ports[0], _post("/close", b"") * 2))
    assert len(replies) == 1
    status, headers, body = replies[0]
    assert (status, body, headers["connection"], headers["x-c"]) == (200, b"bye", "close", "3")


async def test_identical_heads_get_their_own_headers(start: Start) -> None:
    server = await start(_router())
    one = b"POST /mutate HTTP/1.1\r\nHost: x\r\nX-Seen: orig\r\nContent-Length: 0\r\n\r\n"
    last = b"POST /mutate HTTP/1.1\r\nHost: x\r\nX-Seen: orig\r\nConnection: close\r\n\r\n"
    replies = split_responses(await exchange(server.ports[0], one * 3 + last))
    assert [body for _, _, body in replies] == [b"orig"] * 4


async def test_header_with_line_break_is_never_sent(start: Start) -> None:
    server = await start(_router())
    port = server.ports[0]
    for _ in range(2):  # the second time the header list has been seen before
        assert await exchange(port, _post("/bad", b"")) == b""


async def test_head_and_bodiless_statuses_through_the_fast_path(start: Start) -> None:
    async def no_content(_request: Request) -> Response:
        return Response(204, HEADERS_A, b"ignored")

    router = Router()
    router.add("/none", no_content)
    router.add("/now", instant)
    server = await start(router)
    data = b"HEAD /now HTTP/1.1\r\nHost: x\r\n\r\n" + _post("/none", b"")
    data += _post("/now", b"end", close=True)
    raw = await exchange(server.ports[0], data)
    head_reply, rest = raw.split(b"\r\n\r\n", 1)
    assert b"Content-Length: 4" in head_reply  # the length a GET of /now would have
    none_reply, rest = rest.split(b"\r\n\r\n", 1)
    assert none_reply.startswith(b"HTTP/1.1 204 ") and b"Content-Length" not in none_reply
    assert rest.startswith(b"HTTP/1.1 200 ") and rest.endswith(b"\r\n\r\nend")
