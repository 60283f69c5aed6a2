"""Request-head parsing and chunked decoding, fed the odd inputs real clients produce."""

from __future__ import annotations

import pytest

from openxapi.http.parser import BadRequest, ChunkedDecoder, find_head_end, parse_head


def test_head_end_crlf_and_bare_lf() -> None:
    assert find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY", 1024) == 27
    assert find_head_end(b"GET / HTTP/1.1\nHost: x\n\nBODY", 1024) == 24
    assert find_head_end(b"GET / HTTP/1.1\nHost: x\n\r\nBODY", 1024) == 25
    assert find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n", 1024) == -1


def test_head_end_search_is_bounded() -> None:
    assert find_head_end(b"G" * 2000 + b"\r\n\r\n", 1024) == -1


def test_parse_head_fields() -> None:
    head = parse_head(
        b"POST /RPC2?a=1 HTTP/1.1\r\nHost: h\r\nX-A:  one \r\nx-a: two\r\nContent-Length: 3\r\n\r\n"
    )
    assert (head.method, head.target, head.version) == ("POST", "/RPC2?a=1", "1.1")
    assert head.headers == {"host": "h", "x-a": "one, two", "content-length": "3"}


def test_parse_head_http10_and_bare_lf() -> None:
    head = parse_head(b"PUT /import HTTP/1.0\nHost: h\n\n")
    assert head.version == "1.0"
    assert head.headers == {"host": "h"}


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\n\r\n",
        b"GET / FTP/1.0\r\n\r\n",
        b"G(T / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
    ],
)
def test_parse_head_rejects_malformed(raw: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        parse_head(raw)
    assert info.value.status == 400


def test_parse_head_unsupported_version() -> None:
    with pytest.raises(BadRequest) as info:
        parse_head(b"GET / HTTP/2.0\r\n\r\n")
    assert info.value.status == 505


def test_chunked_in_pieces_with_extensions_and_trailers() -> None:
    wire = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT"
    decoder = ChunkedDecoder()
    buf = bytearray()
    out: list[bytes] = []
    for i in range(len(wire)):
        buf += wire[i : i + 1]
        if not decoder.done:
            out.extend(decoder.decode(buf))
    assert decoder.done
    assert b"".join(out) == b"Wikipedia in\r\n\r\nchunks."
    assert bytes(buf) == b"NEXT"


def test_chunked_bare_lf() -> None:
    decoder = ChunkedDecoder()
    buf = bytearray(b"3\nabc\n0\n\n")
    assert decoder.decode(buf) == [b"abc"]
    assert decoder.done


@pytest.mark.parametrize("wire", [b"zz\r\n", b"-1\r\n", b"3\r\nabcX\r\n", b"9" * 5000])
def test_chunked_rejects_garbage(wire: bytes) -> None:
    with pytest.raises(BadRequest):
        ChunkedDecoder().decode(bytearray(wire))


def test_repeated_head_parses_alike_into_separate_dicts() -> None:
    raw = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"
    first = parse_head(raw)
    first.headers["host"] = "changed"
    second = parse_head(bytearray(raw))
    assert (second.method, second.target, second.version) == ("POST", "/x", "1.1")
    assert second.headers == {"host": "a", "content-length": "3"}


def test_repeated_bad_head_is_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(BadRequest):
            parse_head(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n")
