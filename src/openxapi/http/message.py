"""HTTP request and response values exchanged between the server and route handlers.

Handlers see plain data (method, decoded path, query, lower-case headers, body bytes) and
return a `Response`; streaming routes read the body through a `BodyStream` instead.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qsl, unquote

#: Bytes buffered in a body stream before the server stops reading from the socket.
STREAM_HIGH_WATER = 1 << 20


class _StreamControl(Protocol):
    """What a body stream asks of the connection feeding it (flow control, 100-continue)."""

    def stream_wants_data(self) -> None: ...


class BodyStream:
    """A request body read piece by piece; ``read`` returns b"" once the body has ended.

    The server feeds it from the socket and pauses the socket while the reader lags behind,
    so an upload of any size needs only bounded memory.
    """

    __slots__ = ("_chunks", "_control", "_eof", "_size", "_truncated", "_waiter")

    def __init__(self, control: _StreamControl | None = None) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._truncated = False
        self._waiter: asyncio.Future[None] | None = None
        self._control = control

    @classmethod
    def from_bytes(cls, data: bytes) -> BodyStream:
        """A finished stream holding `data`, for calling stream handlers without a socket."""
        stream = cls()
        if data:
            stream.feed(data)
        stream.feed_eof()
        return stream

    @property
    def at_eof(self) -> bool:
        """True once the body has ended and every byte of it was read."""
        return self._eof and not self._chunks

    @property
    def truncated(self) -> bool:
        """True if the client closed the connection before the body's declared end.

        Some clients (Xen Orchestra with an unknown upload size) announce a huge
        Content-Length and simply close the socket when done, so this is not an error by
        itself; handlers decide.
        """
        return self._truncated

    @property
    def buffered(self) -> int:
        """Bytes received but not yet read."""
        return self._size

    async def read(self, n: int = 65536) -> bytes:
        """Up to `n` bytes of the body (at least one unless the body has ended)."""
        while not self._chunks:
            if self._eof:
                return b""
            if self._control is not None:
                self._control.stream_wants_data()
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None
        first = self._chunks[0]
        if len(first) <= n:
            self._chunks.popleft()
            data = first
        else:
            data = first[:n]
            self._chunks[0] = first[n:]
        self._size -= len(data)
        if self._control is not None and self._size < STREAM_HIGH_WATER // 4:
            self._control.stream_wants_data()
        return data

    async def read_all(self, limit: int | None = None) -> bytes:
        """The rest of the body; ValueError if it grows beyond `limit` bytes."""
        parts: list[bytes] = []
        total = 0
        while chunk := await self.read(1 << 20):
            total += len(chunk)
            if limit is not None and total > limit:
                raise ValueError(f"body larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk

    def feed(self, data: bytes) -> None:
        """Append received body bytes (server side)."""
        self._chunks.append(data)
        self._size += len(data)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def feed_eof(self, truncated: bool = False) -> None:
        """Mark the end of the body (server side); `truncated` if the peer went away early."""
        if self._eof:
            return
        self._eof = True
        self._truncated = truncated
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _TakeOverHook(Protocol):
    async def take_over(
        self, status: int, headers: list[tuple[str, str]]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]: ...

    def on_peer_gone(self, callback: Callable[[], None]) -> Callable[[], None]: ...

    def answer_early(self, response: Response) -> bool: ...


def _nothing() -> None:
    return None


@dataclass(slots=True)
class Request:
    """One parsed HTTP request as a route handler sees it.

    `path` is percent-decoded and has no query; `query` keeps the last value of a repeated
    key; header names are lower-case and repeated headers are joined with ", ".
    If only `target` is given, `path` and `query` are derived from it.
    """

    method: str
    target: str
    path: str = ""
    query: dict[str, str] = field(default_factory=dict)
    version: str = "1.1"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    peer: str = ""
    transport: str = "http"
    stream: BodyStream | None = None
    _hook: _TakeOverHook | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.path and not self.query:
            self.path, self.query = split_target(self.target)

    async def take_over(
        self, status: int = 200, headers: list[tuple[str, str]] | None = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Reply with `status` and hand the raw connection to the caller (CONNECT tunnels).

        After this the connection carries arbitrary bytes both ways. The handler closes the
        writer when done (the server also closes the connection once the handler returns,
        and ignores the Response it returns).
        """
        if self._hook is None:
            raise RuntimeError("this request has no connection to take over")
        hook, self._hook = self._hook, None
        return await hook.take_over(status, list(headers or ()))

    def on_peer_gone(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback`` if the client goes away before this request is answered (a long
        poll stops waiting then); returns a function that unregisters it."""
        if self._hook is None:
            return _nothing
        return self._hook.on_peer_gone(callback)

    def answer_early(self, response: Response) -> bool:
        """Send this request's whole reply now, while its handler still runs; whatever the
        handler returns afterwards is dropped. False when the connection cannot (closed,
        body still arriving, already answered)."""
        if self._hook is None:
            return False
        return self._hook.answer_early(response)


def split_target(target: str) -> tuple[str, dict[str, str]]:
    """Decoded path and query dict of a request target (origin, absolute or authority form)."""
    if not target.startswith("/"):
        if "://" in target:
            rest = target.split("://", 1)[1]
            slash = rest.find("/")
            target = rest[slash:] if slash >= 0 else "/"
        else:
            return target, {}
    raw_path, sep, raw_query = target.partition("?")
    path = unquote(raw_path) if "%" in raw_path else raw_path
    if not sep or not raw_query:
        return path, {}
    return path, dict(parse_qsl(raw_query, keep_blank_values=True))


@dataclass(slots=True)
class Response:
    """What a handler answers: a full `body`, or a `stream` of byte chunks.

    A stream with no Content-Length header goes out chunked to HTTP/1.1 clients and up to
    end-of-connection to HTTP/1.0 clients.
    """

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None


Handler = Callable[[Request], Awaitable[Response]]


def text_response(
    status: int, text: str, content_type: str = "text/plain; charset=utf-8"
) -> Response:
    """A small textual reply, for errors and simple endpoints."""
    return Response(status, [("Content-Type", content_type)], text.encode())
