"""Hand-written HTTP/1.x request-head parser and chunked-body decoder.

Kept free of I/O so the connection code can feed it whatever bytes have arrived, and so the
odd cases (bare LF line ends, chunk extensions, trailers) can be tested directly.
"""

from __future__ import annotations

from dataclasses import dataclass


class BadRequest(Exception):
    """The bytes received are not an HTTP request we can answer; reply `status` and close."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(slots=True)
class Head:
    """Request line and headers of one request."""

    method: str
    target: str
    version: str
    headers: dict[str, str]


_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def find_head_end(buf: bytes | bytearray, limit: int) -> int:
    """Offset just past the blank line ending the head, or -1 if it has not arrived yet.

    Accepts CRLF and bare LF line ends. Only the first `limit` + 4 bytes are searched.
    """
    stop = limit + 4
    crlf = buf.find(b"\n\r\n", 0, stop)
    lf = buf.find(b"\n\n", 0, crlf + 3 if crlf >= 0 else stop)
    if lf >= 0:
        return lf + 2
    if crlf >= 0:
        return crlf + 3
    return -1


#: Heads parsed recently, by their bytes: a keep-alive client repeats the same head for
#: every call of the same size, so most heads need no parsing. Emptied when full.
_PARSED: dict[bytes, Head] = {}
_PARSED_LIMIT = 256
_PARSED_MAX_BYTES = 2048


def parse_head(raw: bytes | bytearray) -> Head:
    """Parse a request line and header block (everything up to and including the blank line)."""
    if len(raw) > _PARSED_MAX_BYTES:
        return _parse_head(raw)
    key = bytes(raw)
    seen = _PARSED.get(key)
    if seen is None:
        seen = _parse_head(key)
        if len(_PARSED) >= _PARSED_LIMIT:
            _PARSED.clear()
        _PARSED[key] = seen
    # Each request gets its own headers dict, so nothing a handler does leaks to another.
    return Head(seen.method, seen.target, seen.version, seen.headers.copy())


def _parse_head(raw: bytes | bytearray) -> Head:
    text = raw.decode("latin-1")
    if "\x00" in text:
        raise BadRequest("NUL byte in request head")
    lines = text.split("\n")
    parts = lines[0].split()
    if len(parts) != 3:
        raise BadRequest("malformed request line")
    method, target, proto = parts
    if proto == "HTTP/1.1":
        version = "1.1"
    elif proto == "HTTP/1.0":
        version = "1.0"
    elif proto.startswith("HTTP/1."):
        version = "1.1"
    elif proto.startswith("HTTP/"):
        raise BadRequest("unsupported HTTP version", 505)
    else:
        raise BadRequest("malformed request line")
    if not _TOKEN_CHARS.issuperset(method):
        raise BadRequest("malformed method")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line or line == "\r":
            continue
        name, colon, value = line.partition(":")
        # A name with white space in or around it (or a folded continuation line) is
        # refused: proxies disagree about such lines, which is how requests get smuggled.
        if not colon or not name or " " in name or "\t" in name:
            raise BadRequest("malformed header line")
        name = name.lower()
        value = value.strip(" \t\r")
        old = headers.get(name)
        headers[name] = value if old is None else f"{old}, {value}"
    return Head(method, target, version, headers)


class ChunkedDecoder:
    """Incremental decoder of a `Transfer-Encoding: chunked` body.

    `decode` consumes what it can from the front of a bytearray and returns the data
    bytes found; `done` turns True after the last chunk and its trailers.
    """

    __slots__ = ("_remaining", "_state", "done")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)
    _MAX_LINE = 4096

    def __init__(self) -> None:
        self._state = self._SIZE
        self._remaining = 0
        self.done = False

    def decode(self, buf: bytearray) -> list[bytes]:
        out: list[bytes] = []
        pos = 0
        size = len(buf)
        try:
            while not self.done:
                state = self._state
                if state == self._DATA:
                    take = min(self._remaining, size - pos)
                    if take == 0:
                        break
                    out.append(bytes(buf[pos : pos + take]))
                    pos += take
                    self._remaining -= take
                    if self._remaining == 0:
                        self._state = self._DATA_END
                    continue
                eol = buf.find(b"\n", pos, pos + self._MAX_LINE + 1)
                if eol < 0:
                    if size - pos > self._MAX_LINE:
                        raise BadRequest("chunk line too long")
                    break
                line = bytes(buf[pos:eol]).rstrip(b"\r")
                pos = eol + 1
                if state == self._SIZE:
                    digits = line.split(b";", 1)[0].strip()
                    try:
                        if not digits or digits.startswith((b"-", b"+", b"0x", b"0X")):
                            raise ValueError
                        self._remaining = int(digits, 16)
                    except ValueError:
                        raise BadRequest("bad chunk size") from None
                    self._state = self._DATA if self._remaining else self._TRAILER
                elif state == self._DATA_END:
                    if line:
                        raise BadRequest("missing CRLF after chunk data")
                    self._state = self._SIZE
                elif not line:
                    self.done = True
        finally:
            del buf[:pos]
        return out
