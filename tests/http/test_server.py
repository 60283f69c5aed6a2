"""The server over real sockets: keep-alive, routing, bodies, streams, pipelining, unix
socket, CONNECT take-over and shutdown."""

from __future__ import annotations

import asyncio
import http.client
import os
import socket
import stat
import xmlrpc.client
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from openxapi.http import HttpServer, Limits, Request, Response, Router, text_response
from tests.http.httptest_support import Start, exchange, split_responses

XML_REPLY = (
    b'<?xml version="1.0"?><methodResponse><params><param><value><struct>'
    b"<member><name>Status</name><value>Success</value></member>"
    b"<member><name>Value</name><value>OpaqueRef:abc</value></member>"
    b"</struct></value></param></params></methodResponse>"
)


async def echo(request: Request) -> Response:
    """Reply with what the handler saw, so tests can check parsing end to end."""
    text = (
        f"{request.method} {request.path} {sorted(request.query.items())} "
        f"{request.version} {request.transport} {request.peer} {len(request.body)}"
    )
    return Response(200, [("Content-Type", "text/plain")], text.encode() + b"|" + request.body)


async def upload(request: Request) -> Response:
    """Stream route: count the body and report whether it ended early."""
    assert request.stream is not None
    data = await request.stream.read_all()
    return text_response(200, f"got {len(data)} {data[:16]!r} truncated={request.stream.truncated}")


def _router() -> Router:
    router = Router()
    router.add("/", echo, methods={"POST", "GET", "HEAD", "OPTIONS"})
    router.add("/jsonrpc", echo, methods={"POST", "OPTIONS"})
    router.add("/import_raw_vdi", upload, methods={"PUT", "POST"}, stream=True)
    return router


def _get(port: int, requests: list[tuple[str, str, bytes | None]]) -> list[tuple[int, bytes]]:
    """Run requests on one http.client connection; fail if it was not kept alive."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    out = []
    first_sock = None
    for method, path, body in requests:
        conn.request(method, path, body)
        if first_sock is None:
            first_sock = conn.sock
        response = conn.getresponse()
        out.append((response.status, response.read()))
        assert conn.sock is first_sock, "connection was not kept alive"
    conn.close()
    return out


async def test_keep_alive_many_requests(start: Start) -> None:
    server = await start(_router())
    requests = [("POST", f"/RPC2?i={i}", b"x" * i) for i in range(5)]
    results = await asyncio.to_thread(_get, server.ports[0], requests)
    for i, (status, body) in enumerate(results):
        assert status == 200
        assert body.startswith(f"POST /RPC2 [('i', '{i}')] 1.1 http 127.0.0.1 {i}|".encode())


async def test_xmlrpc_client_over_keep_alive(start: Start) -> None:
    async def rpc(request: Request) -> Response:
        assert b"<methodName>session.login_with_password</methodName>" in request.body
        return Response(200, [("Content-Type", "text/xml")], XML_REPLY)

    router = Router()
    router.add("/", rpc, methods={"POST"})
    server = await start(router)

    def call() -> list[object]:
        proxy = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{server.ports[0]}")
        results = [proxy.session.login_with_password("root", "pw", "1.0", "t") for _ in range(3)]
        proxy("close")()
        return results

    results = await asyncio.to_thread(call)
    assert results == [{"Status": "Success", "Value": "OpaqueRef:abc"}] * 3


async def test_routing_trailing_slash_and_decoding(start: Start) -> None:
    server = await start(_router())
    port = server.ports[0]
    [(s1, b1), (s2, b2), (s3, b3)] = await asyncio.to_thread(
        _get,
        port,
        [
            ("PUT", "/import_raw_vdi/?format=raw&vdi=OpaqueRef%3A1", b"abc"),
            ("POST", "/jsonrpc", b"{}"),
            ("POST", "/a%20b?x=1&x=2", b""),
        ],
    )
    assert (s1, s2, s3) == (200, 200, 200)
    assert b1 == b"got 3 b'abc' truncated=False"
    assert b2.startswith(b"POST /jsonrpc [] 1.1")
    assert b3.startswith(b"POST /a b [('x', '2')]")


async def test_404_and_405(start: Start) -> None:
    router = Router()
    router.add("/jsonrpc", echo, methods={"POST"})
    server = await start(router)
    port = server.ports[0]
    data = await exchange(
        port,
        b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nxx"
        b"POST /jsonrpc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    [(s1, _, _), (s2, h2, _), (s3, _, b3)] = split_responses(data)
    assert (s1, s2, s3) == (404, 405, 200)
    assert h2["allow"] == "POST"
    assert b3.startswith(b"POST /jsonrpc")


async def test_options_reaches_handler_when_allowed(start: Start) -> None:
    async def cors(request: Request) -> Response:
        assert request.method == "OPTIONS"
        return Response(200, [("Access-Control-Allow-Origin", "*")])

    router = Router()
    router.add("/", cors, methods={"OPTIONS"})
    server = await start(router)
    data = await exchange(
        server.ports[0], b"OPTIONS /jsonrpc HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    [(status, headers, body)] = split_responses(data)
    assert status == 200 and headers["access-control-allow-origin"] == "*" and body == b""


async def test_malformed_request_gets_400_and_close(start: Start) -> None:
    server = await start(_router())
    data = await exchange(server.ports[0], b"THIS IS NOT HTTP\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"Connection: close" in data


async def test_chunked_request_body(start: Start) -> None:
    server = await start(_router())
    data = await exchange(
        server.ports[0],
        b"POST /RPC2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        b"PUT /import_raw_vdi/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
    )
    [(s1, _, b1), (s2, _, b2)] = split_responses(data)
    assert s1 == 200 and b1.endswith(b"|hello world")
    assert s2 == 200 and b2 == b"got 3 b'abc' truncated=False"


async def test_http10_put_without_length_streams_to_eof(start: Start) -> None:
    server = await start(_router())
    payload = bytes(range(256)) * 1000
    data = await exchange(
        server.ports[0],
        b"PUT /import_raw_vdi?vdi=x HTTP/1.0\r\nHost: x\r\n\r\n" + payload,
        half_close=True,
    )
    assert data.startswith(b"HTTP/1.0 200 ")
    assert b"Connection: close" in data
    assert data.endswith(f"got {len(payload)} {payload[:16]!r} truncated=False".encode())


async def test_huge_declared_length_then_close_is_truncated_upload(start: Start) -> None:
    """Xen Orchestra's unknown-size upload: a 1 PiB Content-Length, then the socket closes."""
    seen: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()

    async def early_reply(request: Request) -> Response:
        stream = request.stream
        assert stream is not None

        async def consume() -> AsyncIterator[bytes]:
            data = await stream.read_all()
            seen.set_result((len(data), stream.truncated))
            yield b""

        # Answer at once and read the body while the reply is "in progress", as xapi does.
        return Response(200, [("Content-Length", "0")], stream=consume())

    router = Router()
    router.add("/import", early_reply, methods={"PUT"}, stream=True)
    server = await start(router)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
    writer.write(b"PUT /import/?task_id=t HTTP/1.1\r\ncontent-length: 1125899906842624\r\n\r\n")
    status = await asyncio.wait_for(reader.readline(), 5)
    assert status.startswith(b"HTTP/1.1 200")
    writer.write(b"z" * 300_000)
    await writer.drain()
    writer.close()
    assert await asyncio.wait_for(seen, 5) == (300_000, True)


async def test_pipelined_requests_answered_in_order(start: Start) -> None:
    async def slow_first(request: Request) -> Response:
        if request.path == "/slow":
            await asyncio.sleep(0.05)
        return text_response(200, request.path)

    router = Router()
    router.add("/", slow_first)
    server = await start(router)
    data = await exchange(
        server.ports[0],
        b"GET /slow HTTP/1.1\r\n\r\n"
        b"POST /b HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"
        b"GET /c HTTP/1.1\r\n\r\n",
        half_close=True,
    )
    assert [body for _, _, body in split_responses(data)] == [b"/slow", b"/b", b"/c"]


async def test_expect_100_continue(start: Start) -> None:
    server = await start(_router())
    reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
    writer.write(b"POST /RPC2 HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    assert (
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
    )
    writer.write(b"body")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 ")
    writer.close()


async def test_http10_closes_unless_keep_alive(start: Start) -> None:
    server = await start(_router())
    closed = await exchange(server.ports[0], b"GET / HTTP/1.0\r\n\r\n")
    assert closed.startswith(b"HTTP/1.0 200 ") and b"Connection: close" in closed
    reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
    for _ in range(2):
        writer.write(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"Connection: keep-alive" in head
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
    writer.close()


async def test_head_has_no_body(start: Start) -> None:
    server = await start(_router())
    data = await exchange(server.ports[0], b"HEAD / HTTP/1.1\r\nConnection: close\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"Content-Length: " in head and body == b""


async def test_handler_exception_is_500(start: Start) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("boom")

    router = Router()
    router.add("/", broken)
    server = await start(router)
    data = await exchange(server.ports[0], b"GET / HTTP/1.1\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 500 ")


async def test_streamed_response_chunked_and_to_eof(start: Start) -> None:
    async def numbers(request: Request) -> Response:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(100):
                yield f"{i},".encode() * 100

        return Response(200, [("Content-Type", "text/plain")], stream=gen())

    router = Router()
    router.add("/", numbers)
    server = await start(router)
    expected = b"".join(f"{i},".encode() * 100 for i in range(100))
    [(status, body)] = await asyncio.to_thread(_get, server.ports[0], [("GET", "/", None)])
    assert status == 200 and body == expected
    data = await exchange(server.ports[0], b"GET / HTTP/1.0\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head and b"Connection: close" in head
    assert body == expected


async def test_large_reply_respects_flow_control(start: Start) -> None:
    big = os.urandom(8 << 20)

    async def large(request: Request) -> Response:
        return Response(200, [("Content-Type", "application/octet-stream")], big)

    router = Router()
    router.add("/", large)
    server = await start(router)
    results = await asyncio.to_thread(_get, server.ports[0], [("GET", "/", None)] * 2)
    assert results == [(200, big), (200, big)]


async def test_connect_take_over_echo(start: Start) -> None:
    async def tunnel(request: Request) -> Response:
        assert request.method == "CONNECT" and request.query == {"session_id": "s"}
        reader, writer = await request.take_over(200, [("X-Tunnel", "yes")])
        while data := await reader.read(1024):
            writer.write(data.upper())
            await writer.drain()
        writer.close()
        return Response(200)

    router = Router()
    router.add("/console", tunnel, methods={"CONNECT"})
    server = await start(router)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
    writer.write(b"CONNECT /console?session_id=s HTTP/1.0\r\n\r\nearly ")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 ") and b"X-Tunnel: yes" in head
    writer.write(b"bytes")
    assert await asyncio.wait_for(reader.readexactly(11), 5) == b"EARLY BYTES"
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await asyncio.sleep(0.05)
    assert server.connections == 0


async def test_close_lets_running_handler_finish(start: Start) -> None:
    started = asyncio.Event()

    async def slow(request: Request) -> Response:
        started.set()
        await asyncio.sleep(0.3)
        return text_response(200, "finished")

    router = Router()
    router.add("/slow", slow)
    router.add("/", echo)
    server = HttpServer(router)
    port = await server.start_tcp("127.0.0.1", 0)
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
    pending = asyncio.create_task(exchange(port, b"GET /slow HTTP/1.1\r\n\r\n"))
    await started.wait()
    await server.close(grace=5)
    data = await pending
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"finished")
    assert b"Connection: close" in data
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""
    idle_writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_close_cancels_handler_after_grace() -> None:
    cancelled = asyncio.Event()

    async def forever(request: Request) -> Response:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return text_response(200, "never")

    router = Router()
    router.add("/", forever)
    server = HttpServer(router)
    port = await server.start_tcp("127.0.0.1", 0)
    pending = asyncio.create_task(exchange(port, b"GET / HTTP/1.1\r\n\r\n"))
    await asyncio.sleep(0.05)
    await server.close(grace=0.1)
    assert cancelled.is_set()
    assert await pending == b""


async def test_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "run" / "xapi.sock"
    server = HttpServer(_router())
    await server.start_unix(str(path))
    try:
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"POST / HTTP/1.1\r\nHost: _var_lib_xcp_xapi\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert split_responses(data)[0][2].startswith(b"POST / [] 1.1 unix unix 0|")
        # A second server must not steal a live socket.
        with pytest.raises(OSError):
            await HttpServer(_router()).start_unix(str(path))
    finally:
        await server.close()
    assert not path.exists()


async def test_unix_socket_replaces_stale_file(tmp_path: Path) -> None:
    path = tmp_path / "xapi.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    server = HttpServer(_router())
    await server.start_unix(str(path), mode=0o660)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.0 200 ")
        writer.close()
    finally:
        await server.close()


async def test_listen_on_all_addresses() -> None:
    server = HttpServer(_router(), Limits())
    port = await server.start_tcp("", 0)
    try:
        assert server.ports == [port]
        for host in ("127.0.0.1", "::1"):
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                continue  # no IPv6 loopback here
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            data = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert data.startswith(b"HTTP/1.0 200 ")
            assert b" 127.0.0.1 " in data or b" ::1 " in data
    finally:
        await server.close()


async def test_slow_upload_reader_bounds_buffering(start: Start) -> None:
    peak = 0

    async def slow_sink(request: Request) -> Response:
        nonlocal peak
        stream = request.stream
        assert stream is not None
        total = 0
        while chunk := await stream.read(65536):
            total += len(chunk)
            peak = max(peak, stream.buffered)
            await asyncio.sleep(0.0005)
        return text_response(200, f"{total}")

    router = Router()
    router.add("/import", slow_sink, stream=True)
    server = await start(router)
    size = 24 << 20
    reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
    writer.write(f"PUT /import HTTP/1.1\r\nContent-Length: {size}\r\n\r\n".encode())
    block = b"q" * (1 << 20)
    for _ in range(size >> 20):
        writer.write(block)
        await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert await reader.readexactly(len(str(size))) == str(size).encode()
    writer.close()
    assert 0 < peak < 4 << 20


async def test_non_ascii_digits_in_content_length_are_refused(start: Start) -> None:
    server = await start(_router())
    for value in (b"\xb2", b"1, \xb2"):
        request = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + value + b"\r\n\r\nab"
        data = await exchange(server.ports[0], request)
        assert data.startswith(b"HTTP/1.1 400 ")
