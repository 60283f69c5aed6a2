"""One HTTP/1.x connection as an asyncio protocol: framing, keep-alive, limits, timeouts.

Requests on a connection are answered strictly in order, one handler at a time; bytes of
pipelined requests wait in the buffer meanwhile. A handler that is running is never timed
out; only waiting for a client is. A running handler is not cancelled when its client goes
away, but it may ask to be told (``on_peer_gone``): a long poll then stops waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass, field
from typing import Any, cast

from openxapi.http.limits import Limits, RateLimiter
from openxapi.http.message import (
    STREAM_HIGH_WATER,
    BodyStream,
    Handler,
    Request,
    Response,
    split_target,
    text_response,
)
from openxapi.http.parser import BadRequest, ChunkedDecoder, Head, find_head_end, parse_head
from openxapi.http.response import (
    date_line,
    head_prefix,
    head_tail,
    header_block,
    header_line,
    simple_response,
    status_line,
)
from openxapi.http.router import Router

log = logging.getLogger("openxapi.http")

#: Bytes of not-yet-handled pipelined requests buffered before reading pauses.
_PIPELINE_HIGH_WATER = 1 << 20
#: Full bodies up to this size go out in the same write as the head.
_COALESCE_MAX = 256 * 1024

_FIRST, _IDLE, _BUSY = range(3)
_CR_LF = (13, 10)
_LENGTH_TO_EOF = -1


@dataclass(eq=False)
class Shared:
    """State every connection of one server consults: routes, limits, counters."""

    router: Router
    limits: Limits
    rate: RateLimiter
    closing: bool = False
    connections: set[HttpConnection] = field(default_factory=set)
    per_address: dict[str, int] = field(default_factory=dict)
    #: The last reply sent early, by (Response, method, version, keep-alive, second).
    early_reply: tuple[tuple[object, ...], bytes, bool] | None = None


@dataclass(slots=True, eq=False)
class _PendingBody:
    """A non-streaming request whose body is still arriving."""

    head: Head
    path: str
    query: dict[str, str]
    keep_alive: bool
    handler: Handler | None
    error: Response | None
    length: int
    decoder: ChunkedDecoder | None
    parts: list[bytes] = field(default_factory=list)
    size: int = 0


@dataclass(slots=True, eq=False)
class _Sink:
    """The body of a streaming request being fed to its handler."""

    stream: BodyStream
    remaining: int  # bytes left by Content-Length, or _LENGTH_TO_EOF
    decoder: ChunkedDecoder | None


def _clean_peer(address: Any) -> str:
    if isinstance(address, tuple) and address:
        host = str(address[0])
        return host[7:] if host.startswith("::ffff:") and "." in host else host
    return "unknown"


class HttpConnection(asyncio.Protocol):
    """Protocol instance for one accepted socket."""

    def __init__(self, shared: Shared, kind: str) -> None:
        self._shared = shared
        self._limits = shared.limits
        self._kind = kind
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._peer = "unix" if kind == "unix" else "unknown"
        self._buf = bytearray()
        self._phase = _IDLE if kind == "unix" else _FIRST
        self._t0 = self._last_rx = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        self._pending: _PendingBody | None = None
        self._sink: _Sink | None = None
        self._send_continue = False
        self._broken = False
        self._read_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._closed = False
        self._counted = False
        self._taken = False
        self._gone_callbacks: list[Callable[[], None]] = []
        self._peer_left = False
        # The running request's method, version and keep-alive wish, for an early answer.
        self._current: tuple[str, str, bool] = ("", "1.1", False)
        # Set once the running handler's reply has gone out early: whether to keep alive.
        self._early: bool | None = None

    # -- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        transport = self._transport
        shared = self._shared
        if self._kind != "unix":
            self._peer = _clean_peer(transport.get_extra_info("peername"))
            count = shared.per_address.get(self._peer, 0)
            if count >= self._limits.max_connections_per_address:
                transport.write(simple_response(503, "too many connections from this address"))
                self._close()
                return
            shared.per_address[self._peer] = count + 1
            self._counted = True
        if shared.closing:
            self._close()
            return
        shared.connections.add(self)
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._last_rx = self._loop.time()
        sink = self._sink
        if sink is not None:
            self._feed_sink(sink, data)
            return
        self._buf += data
        if self._busy:
            if len(self._buf) > _PIPELINE_HIGH_WATER:
                self._pause_reading()
            return
        self._process()

    def eof_received(self) -> bool:
        self._eof = True
        sink = self._sink
        if sink is not None:
            self._sink = None
            sink.stream.feed_eof(truncated=sink.remaining != _LENGTH_TO_EOF)
            if sink.remaining != _LENGTH_TO_EOF:
                self._broken = True
        elif self._busy:
            self._peer_gone()
        # Keep the write side open while a reply is still due (TLS cannot half-close).
        return self._busy and self._kind != "https"

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._cancel_timer()
        if self._busy:
            self._peer_gone()
        sink = self._sink
        if sink is not None:
            self._sink = None
            sink.stream.feed_eof(truncated=sink.remaining != _LENGTH_TO_EOF)
        self._wake_drain()
        if not self._taken:
            self._release()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    # -- stream control (called by BodyStream) ------------------------------------------

    def stream_wants_data(self) -> None:
        if self._send_continue:
            self._send_continue = False
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self._read_paused and self._sink is not None:
            self._resume_reading()

    # -- the client going away while a handler runs ------------------------------------------

    def on_peer_gone(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback`` once if the client disconnects (or half-closes) before the running
        handler has answered; returns a function that unregisters it."""
        if self._peer_left or self._closed:
            handle = self._loop.call_soon(callback)
            return handle.cancel
        callbacks = self._gone_callbacks
        callbacks.append(callback)

        def remove() -> None:
            if callback in callbacks:
                callbacks.remove(callback)

        return remove

    def answer_early(self, response: Response) -> bool:
        """Send the running handler's whole reply now, before the handler returns (a long
        poll answered straight from the code that woke it); the Response the handler
        returns later is dropped. False when the connection cannot take it."""
        if (
            not self._busy
            or self._closed
            or self._taken
            or self._early is not None
            or self._sink is not None
            or self._broken
            or response.stream is not None
        ):
            return False
        method, version, keep_alive = self._current
        if len(response.body) > _COALESCE_MAX:
            self._early = self._send_whole(method, version, response, keep_alive)
            return True
        # Many waiters woken together get the same Response: its bytes are built once.
        key = (response, method, version, keep_alive, int(time.time()))
        cached = self._shared.early_reply
        if cached is not None and cached[0] == key:
            message, keep = cached[1], cached[2]
        else:
            data, body, keep = self._whole(method, version, response, keep_alive)
            message = data + body
            self._shared.early_reply = (key, message, keep)
        assert self._transport is not None
        self._transport.write(message)
        self._early = keep
        return True

    def _peer_gone(self) -> None:
        self._peer_left = True
        callbacks, self._gone_callbacks = self._gone_callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("peer-gone callback %r failed", callback)

    # -- server side ---------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    def close_if_idle(self) -> None:
        """Close the connection unless a handler is running (server shutdown)."""
        if not self._busy:
            self._close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
        self._closed = True
        self._release()

    # -- request parsing -------------------------------------------------------------------

    def _process(self) -> None:
        buf = self._buf
        limits = self._limits
        while not self._busy and not self._closed:
            pending = self._pending
            if pending is not None:
                if not self._collect(pending):
                    break
                continue
            if buf and buf[0] in _CR_LF:
                while buf and buf[0] in _CR_LF:
                    del buf[:1]
            if not buf:
                break
            end = find_head_end(buf, limits.max_header_bytes)
            if end < 0:
                if len(buf) > limits.max_header_bytes:
                    self._fail(431, "request header fields too large")
                return
            if end > limits.max_header_bytes:
                self._fail(431, "request header fields too large")
                return
            try:
                head = parse_head(bytes(buf[:end]))
            except BadRequest as exc:
                self._fail(exc.status, str(exc))
                return
            del buf[:end]
            self._phase = _IDLE
            try:
                self._begin(head)
            except BadRequest as exc:
                self._fail(exc.status, str(exc))
                return
        if self._eof and not self._busy and not self._closed:
            self._close()

    def _begin(self, head: Head) -> None:
        headers = head.headers
        version = head.version
        connection = headers.get("connection")
        if version == "1.1":
            keep_alive = connection is None or "close" not in connection.lower()
        else:
            keep_alive = connection is not None and "keep-alive" in connection.lower()
        chunked = False
        length = 0
        te = headers.get("transfer-encoding")
        cl = headers.get("content-length")
        if te is not None:
            if te.strip().lower() != "chunked":
                raise BadRequest("unsupported transfer-encoding", 501)
            chunked = True
            if cl is not None:
                keep_alive = False
        elif cl is not None and cl.isdigit() and cl.isascii():
            length = int(cl)
        elif cl is not None:
            values = {v.strip() for v in cl.split(",")}
            if len(values) != 1:
                raise BadRequest("conflicting content-length")
            value = values.pop()
            if not (value.isdigit() and value.isascii()):
                raise BadRequest("bad content-length")
            length = int(value)
        method = head.method
        target = head.target
        query: dict[str, str]
        if target[:1] == "/" and "?" not in target and "%" not in target:
            path, query = target, {}
        else:
            path, query = split_target(target)
        shared = self._shared
        route = shared.router.resolve(method, path)
        error: Response | None = None
        if route is None:
            allowed = shared.router.allowed_methods(path)
            if allowed is None:
                error = text_response(404, "not found")
            else:
                error = text_response(405, "method not allowed")
                error.headers.append(("Allow", ", ".join(sorted(allowed))))
        elif (
            self._kind != "unix"
            and shared.rate.enabled
            and not shared.rate.allow(self._peer, self._loop.time())
        ):
            error = text_response(429, "too many requests")
        if route is not None and route.stream:
            expect = version == "1.1" and headers.get("expect", "").lower() == "100-continue"
            if error is not None:
                self._write_response_now(error, version, keep_alive=False)
                self._close()
                return
            self._begin_stream(
                head, path, query, route.handler, keep_alive, chunked, length, expect
            )
            return

        if length > self._limits.max_body_bytes:
            self._fail(500, "request body too large", version)
            return
        if not chunked and length <= len(self._buf):
            # Whole body already here: the common case for RPC.
            if length:
                body = bytes(self._buf[:length])
                del self._buf[:length]
            else:
                body = b""
            if error is not None:
                self._answer_error(error, version, keep_alive)
            else:
                assert route is not None
                self._dispatch(head, path, query, body, None, route.handler, keep_alive)
            return
        if version == "1.1" and headers.get("expect", "").lower() == "100-continue":
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._pending = _PendingBody(
            head,
            path,
            query,
            keep_alive,
            None if route is None else route.handler,
            error,
            length,
            ChunkedDecoder() if chunked else None,
        )

    def _collect(self, pending: _PendingBody) -> bool:
        buf = self._buf
        decoder = pending.decoder
        if decoder is not None:
            try:
                parts = decoder.decode(buf)
            except BadRequest as exc:
                self._fail(exc.status, str(exc))
                return False
            for part in parts:
                pending.size += len(part)
            pending.parts.extend(parts)
            if pending.size > self._limits.max_body_bytes:
                self._fail(500, "request body too large", pending.head.version)
                return False
            if not decoder.done:
                return False
            body = b"".join(pending.parts)
        else:
            if len(buf) < pending.length:
                return False
            body = bytes(buf[: pending.length])
            del buf[: pending.length]
        self._pending = None
        head = pending.head
        if pending.error is not None or pending.handler is None:
            error = pending.error or text_response(404, "not found")
            self._answer_error(error, head.version, pending.keep_alive)
        else:
            self._dispatch(
                head, pending.path, pending.query, body, None, pending.handler, pending.keep_alive
            )
        return True

    def _begin_stream(
        self,
        head: Head,
        path: str,
        query: dict[str, str],
        handler: Handler,
        keep_alive: bool,
        chunked: bool,
        length: int,
        expect: bool,
    ) -> None:
        stream = BodyStream(self)
        if chunked:
            sink: _Sink | None = _Sink(stream, 0, ChunkedDecoder())
        elif length:
            sink = _Sink(stream, length, None)
        elif (
            head.version == "1.0"
            and head.method in ("PUT", "POST")
            and "content-length" not in head.headers
        ):
            # HTTP/1.0 upload of unknown size: the body runs to end-of-connection.
            sink = _Sink(stream, _LENGTH_TO_EOF, None)
            keep_alive = False
        else:
            sink = None
            stream.feed_eof()
        self._send_continue = expect and sink is not None
        self._sink = sink
        self._dispatch(head, path, query, b"", stream, handler, keep_alive)
        if sink is not None:
            if self._buf:
                data = bytes(self._buf)
                self._buf.clear()
                self._feed_sink(sink, data)
            elif self._eof:
                self.eof_received()

    def _feed_sink(self, sink: _Sink, data: bytes) -> None:
        stream = sink.stream
        if sink.decoder is not None:
            buf = self._buf
            buf += data
            try:
                parts = sink.decoder.decode(buf)
            except BadRequest:
                self._sink = None
                self._broken = True
                stream.feed_eof(truncated=True)
                return
            for part in parts:
                stream.feed(part)
            if sink.decoder.done:
                self._sink = None
                stream.feed_eof()
        elif sink.remaining == _LENGTH_TO_EOF:
            stream.feed(data)
        else:
            if len(data) > sink.remaining:
                self._buf += data[sink.remaining :]
                data = data[: sink.remaining]
            sink.remaining -= len(data)
            stream.feed(data)
            if sink.remaining == 0:
                self._sink = None
                stream.feed_eof()
        if self._sink is not None and stream.buffered > STREAM_HIGH_WATER:
            self._pause_reading()

    # -- running handlers --------------------------------------------------------------------

    def _dispatch(
        self,
        head: Head,
        path: str,
        query: dict[str, str],
        body: bytes,
        stream: BodyStream | None,
        handler: Handler,
        keep_alive: bool,
    ) -> None:
        """Run the handler for one request. A handler that answers without suspending (most
        RPC calls) runs to the end right here, with no Task; one that suspends is carried on
        by a Task from the point where it suspended."""
        request = Request(
            head.method,
            head.target,
            path,
            query,
            head.version,
            head.headers,
            body,
            self._peer,
            self._kind,
            stream,
            self,
        )
        self._phase = _BUSY
        self._busy = True
        self._current = (head.method, head.version, keep_alive)
        coro = self._serve(request, handler, keep_alive)
        if stream is not None:
            # The body still has to be fed to the handler as it arrives: always a Task.
            self._task = self._loop.create_task(self._finish_later(coro, None, False))
            return
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            self._finished(stop.value)
            return
        except asyncio.CancelledError:
            self._finished(False)
            return
        self._task = self._loop.create_task(self._finish_later(coro, yielded, True))

    async def _finish_later(
        self, coro: Coroutine[Any, Any, bool], yielded: Any, started: bool
    ) -> None:
        try:
            keep_alive = await (_Resume(coro, yielded) if started else coro)
        except asyncio.CancelledError:
            self._finished(False)
            raise
        if self._finished(keep_alive):
            self._process()

    def _finished(self, keep_alive: bool) -> bool:
        """Book-keeping once a handler has answered; True if the next request may be read."""
        self._task = None
        self._busy = False
        self._early = None
        self._gone_callbacks = []
        if self._taken:
            self._closed = True
            if self._transport is not None and not self._transport.is_closing():
                self._transport.close()
            self._release()
            return False
        if not keep_alive or self._shared.closing or self._closed:
            self._close()
            return False
        self._phase = _IDLE
        self._last_rx = self._loop.time()
        self._arm_timer()
        if self._read_paused:
            self._resume_reading()
        return True

    async def _serve(self, request: Request, handler: Handler, keep_alive: bool) -> bool:
        try:
            try:
                response = await handler(request)
            except Exception:
                log.exception("handler for %s %s failed", request.method, request.path)
                response = text_response(500, "internal server error")
                keep_alive = False
            if self._taken:
                return False
            early = self._early
            if early is not None:
                self._early = None
                if self._write_paused:
                    await self._drain()
                return early
            if self._sink is not None or self._broken:
                # The body has not all been read yet (a reply may stream while it is):
                # whatever the handler leaves unread cannot be told apart from a next
                # request, so the connection ends with this reply.
                keep_alive = False
            if response.stream is None and not self._closed:
                keep_alive = self._send_whole(request.method, request.version, response, keep_alive)
                if self._write_paused:
                    await self._drain()
            else:
                keep_alive = await self._respond(
                    request.method, request.version, response, keep_alive
                )
            sink = self._sink
            if sink is not None:
                self._sink = None
                sink.stream.feed_eof(truncated=True)
            return keep_alive
        except asyncio.CancelledError:
            self.abort()
            raise
        except Exception:
            log.exception("sending the reply to %s %s failed", request.method, request.path)
            self.abort()
            return False

    def _send_whole(self, method: str, version: str, response: Response, keep_alive: bool) -> bool:
        """Write a reply whose body is all in memory; returns whether to keep the connection."""
        data, body, keep_alive = self._whole(method, version, response, keep_alive)
        transport = self._transport
        assert transport is not None
        if not body:
            transport.write(data)
        elif len(body) <= _COALESCE_MAX:
            transport.write(data + body)
        else:
            transport.write(data)
            transport.write(body)
        return keep_alive

    def _whole(
        self, method: str, version: str, response: Response, keep_alive: bool
    ) -> tuple[bytes, bytes, bool]:
        """Head and body bytes of a reply all in memory, and whether to keep the connection."""
        status = response.status
        lines, given_length, close = header_block(response.headers)
        if close or self._shared.closing:
            keep_alive = False
        body = response.body
        prefix = head_prefix(version, status, lines)
        if status < 200 or status == 204 or status == 304:
            data = prefix + head_tail(keep_alive)
            body = b""
        elif method == "HEAD":
            length = given_length if given_length else str(len(body))
            data = b"%sContent-Length: %s\r\n%s" % (
                prefix,
                length.encode("latin-1"),
                head_tail(keep_alive),
            )
            body = b""
        else:
            data = b"%sContent-Length: %d\r\n%s" % (prefix, len(body), head_tail(keep_alive))
        return data, body, keep_alive

    async def _respond(
        self, method: str, version: str, response: Response, keep_alive: bool
    ) -> bool:
        status = response.status
        stream = response.stream
        if self._closed:
            await _close_stream(stream)
            return False
        bodiless = status < 200 or status in (204, 304)
        if bodiless or method == "HEAD":
            await _close_stream(stream)
            return self._send_whole(method, version, response, keep_alive)
        lines, given_length, close = header_block(response.headers)
        if close or self._shared.closing:
            keep_alive = False
        parts = [status_line(version, status), lines]
        assert stream is not None

        expected = -1
        if given_length is not None:
            expected = int(given_length)
            parts.append(f"Content-Length: {expected}\r\n")
            mode = "length"
        elif version == "1.1":
            parts.append("Transfer-Encoding: chunked\r\n")
            mode = "chunked"
        else:
            mode = "eof"
            keep_alive = False
        parts.append("Connection: keep-alive\r\n" if keep_alive else "Connection: close\r\n")
        parts.append(date_line())
        parts.append("\r\n")
        self._write("".join(parts).encode("latin-1"))
        sent = 0
        try:
            async for chunk in stream:
                if self._closed:
                    return False
                if not chunk:
                    continue
                sent += len(chunk)
                if mode == "chunked":
                    self._write_many((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    self._write(chunk)
                if self._write_paused:
                    await self._drain()
        except Exception:
            log.exception("response stream for %s failed", method)
            self.abort()
            return False
        finally:
            await _close_stream(stream)
        if mode == "chunked":
            self._write(b"0\r\n\r\n")
        elif mode == "length" and sent != expected:
            keep_alive = False
        if self._write_paused:
            await self._drain()
        return keep_alive

    async def take_over(
        self, status: int, headers: list[tuple[str, str]]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Answer `status` and give the raw byte stream to the running handler."""
        transport = self._transport
        if transport is None or self._closed:
            raise ConnectionError("connection already closed")
        if self._sink is not None:
            raise RuntimeError("the request body has not been received yet")
        parts = [status_line("1.1", status)]
        parts.extend(header_line(k, v) for k, v in headers)
        parts.append("\r\n")
        transport.write("".join(parts).encode("latin-1"))
        self._taken = True
        self._cancel_timer()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._buf:
            reader.feed_data(bytes(self._buf))
            self._buf.clear()
        if self._eof:
            reader.feed_eof()
        if self._read_paused:
            self._resume_reading()
        writer = asyncio.StreamWriter(transport, protocol, reader, self._loop)
        return reader, writer

    # -- writing and closing -------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if not self._closed and self._transport is not None:
            self._transport.write(data)

    def _write_many(self, data: tuple[bytes, ...]) -> None:
        if not self._closed and self._transport is not None:
            self._transport.writelines(data)

    def _write_response_now(self, response: Response, version: str, keep_alive: bool) -> None:
        parts = [status_line(version, response.status)]
        parts.extend(
            header_line(k, v)
            for k, v in response.headers
            if k.lower() not in ("content-length", "connection", "transfer-encoding")
        )
        parts.append(f"Content-Length: {len(response.body)}\r\n")
        parts.append("Connection: keep-alive\r\n" if keep_alive else "Connection: close\r\n")
        parts.append(date_line())
        parts.append("\r\n")
        self._write("".join(parts).encode("latin-1") + response.body)

    def _answer_error(self, response: Response, version: str, keep_alive: bool) -> None:
        keep_alive = keep_alive and not self._shared.closing
        self._write_response_now(response, version, keep_alive)
        if not keep_alive:
            self._close()

    def _fail(self, status: int, text: str, version: str = "1.1") -> None:
        self._write(simple_response(status, text, version=version))
        self._close()

    def _close(self) -> None:
        if self._pending is not None:
            self._pending = None
        self._cancel_timer()
        if not self._closed:
            self._closed = True
            if self._transport is not None:
                self._transport.close()
        self._release()

    def _release(self) -> None:
        shared = self._shared
        shared.connections.discard(self)
        if self._counted:
            self._counted = False
            count = shared.per_address.get(self._peer, 1) - 1
            if count > 0:
                shared.per_address[self._peer] = count
            else:
                shared.per_address.pop(self._peer, None)

    def _pause_reading(self) -> None:
        if not self._read_paused and self._transport is not None and not self._closed:
            self._read_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and self._transport is not None and not self._closed:
            self._read_paused = False
            self._transport.resume_reading()

    async def _drain(self) -> None:
        while self._write_paused and not self._closed:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._drain_waiter = waiter
            try:
                await waiter
            finally:
                self._drain_waiter = None

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- timeouts ----------------------------------------------------------------------------

    def _deadline(self) -> float:
        limits = self._limits
        if self._phase == _FIRST:
            return min(
                self._last_rx + limits.header_read_timeout, self._t0 + limits.header_total_timeout
            )
        return self._last_rx + limits.idle_timeout

    def _arm_timer(self) -> None:
        """Make sure a timer fires no later than the current deadline. A timer that fires
        early just re-arms itself, so most requests need no timer work at all."""
        if self._closed:
            return
        deadline = self._deadline()
        timer = self._timer
        if timer is not None:
            if timer.when() <= deadline:
                return
            timer.cancel()
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed or self._taken or self._phase == _BUSY:
            return
        deadline = self._deadline()
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._on_timer)
            return
        if self._phase == _FIRST or self._buf or self._pending is not None:
            self._fail(408, "request timeout")
        else:
            self._close()


class _Resume:
    """Awaitable carrying on a coroutine that was stepped by hand until it first suspended
    on ``yielded``: the Task awaiting this waits for that first, then drives the rest."""

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, bool], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, bool]:
        coro = self._coro
        yielded = self._yielded
        while True:
            try:
                sent = yield yielded
            except BaseException as exc:  # cancellation and the like go to the coroutine
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return cast(bool, stop.value)
                continue
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return cast(bool, stop.value)


async def _close_stream(stream: object) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:
            log.debug("closing a response stream failed", exc_info=True)
