"""Request/Response values and the body stream handlers read uploads from."""

from __future__ import annotations

import asyncio

from openxapi.http import BodyStream, Request, text_response
from openxapi.http.message import split_target


def test_request_derives_path_and_query_from_target() -> None:
    request = Request("PUT", "/import_raw_vdi/?format=raw&vdi=OpaqueRef%3Aab&x=1&x=2")
    assert request.path == "/import_raw_vdi/"
    assert request.query == {"format": "raw", "vdi": "OpaqueRef:ab", "x": "2"}


def test_split_target_forms() -> None:
    assert split_target("/a%20b?q=%2F") == ("/a b", {"q": "/"})
    assert split_target("http://host:80/RPC2?x=") == ("/RPC2", {"x": ""})
    assert split_target("host.example:443") == ("host.example:443", {})
    assert split_target("/plain") == ("/plain", {})


def test_text_response() -> None:
    response = text_response(404, "not found")
    assert response.status == 404
    assert response.body == b"not found"
    assert ("Content-Type", "text/plain; charset=utf-8") in response.headers


async def test_body_stream_reads_in_pieces() -> None:
    stream = BodyStream()

    async def produce() -> None:
        for part in (b"abc", b"defgh"):
            await asyncio.sleep(0)
            stream.feed(part)
        stream.feed_eof()

    task = asyncio.create_task(produce())
    assert await stream.read(2) == b"ab"
    assert await stream.read_all() == b"cdefgh"
    assert await stream.read() == b""
    assert stream.at_eof and not stream.truncated
    await task


async def test_body_stream_from_bytes_iterates() -> None:
    chunks = [c async for c in BodyStream.from_bytes(b"xyz")]
    assert b"".join(chunks) == b"xyz"


async def test_body_stream_truncated_flag() -> None:
    stream = BodyStream()
    stream.feed(b"12")
    stream.feed_eof(truncated=True)
    assert await stream.read_all() == b"12"
    assert stream.truncated
