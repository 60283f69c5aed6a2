"""The RPC endpoints: HTTP request → codec → dispatcher → codec → HTTP reply.

XML-RPC on ``/``, ``/RPC2``, ``/xmlrpc`` and ``/json`` (the reference's ``/json`` is its
XML-RPC handler); JSON-RPC on ``/jsonrpc``. Replies are always HTTP 200 unless the
envelope itself cannot be parsed, which the reference answers with HTTP 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.dispatch import Dispatcher
from openxapi.errors import ApiError
from openxapi.http.message import Request, Response
from openxapi.http.router import Router
from openxapi.server.memory import release_free_memory
from openxapi.wire import jsonrpc, xmlrpc
from openxapi.wire.errors import WireParseError

XML_HEADERS = [
    ("Content-Type", "text/xml"),
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Headers", "X-Requested-With"),
]
JSON_HEADERS = [
    ("Content-Type", "application/json"),
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Headers", "X-Requested-With"),
]
LIST_METHODS = "system.listMethods"
#: Long polls whose woken waiters are answered straight from the code that wakes them.
EARLY_ANSWERED = frozenset({"event.from"})


def preflight(req: Request) -> Response:
    """CORS preflight as rulings §6 describes it."""
    allow_headers = req.headers.get("access-control-request-headers", "")
    headers = [
        ("Access-Control-Allow-Origin", "*"),
        ("Access-Control-Allow-Methods", "POST, OPTIONS"),
        ("Access-Control-Max-Age", "86400"),
    ]
    if allow_headers:
        headers.append(("Access-Control-Allow-Headers", allow_headers))
    return Response(200, headers, b"")


def _parse_error(kind: str, err: Exception) -> Response:
    text = f"<html><body><h1>500 Internal Error</h1>{kind}.Parse_error({err})</body></html>"
    return Response(500, [("Content-Type", "text/html")], text.encode("utf-8", "replace"))


def _context(
    req: Request, codec: str, answer_now: Callable[[Any], bool] | None = None
) -> CallContext:
    return CallContext(
        transport=req.transport,
        peer=req.peer,
        codec=codec,
        user_agent=req.headers.get("user-agent", ""),
        peer_gone=req.on_peer_gone,
        answer_now=answer_now,
    )


#: Replies up to this size are kept for the next waiter with the same answer.
_SHARED_ANSWER_MAX = 256 * 1024


class _LastAnswer:
    """The last early XML-RPC reply, by the value it carries: the woken waiters that asked
    the same thing are given one Response (so the connection encodes its bytes once)."""

    value: Any = None
    response: Response | None = None


def _xml_answer(req: Request) -> Callable[[Any], bool]:
    def answer(value: Any) -> bool:
        last = _LastAnswer
        if last.response is not None and last.value is value:
            return req.answer_early(last.response)
        response = Response(200, XML_HEADERS, xmlrpc.encode_success(value))
        small = len(response.body) <= _SHARED_ANSWER_MAX
        last.value, last.response = (value, response) if small else (None, None)
        return req.answer_early(response)

    return answer


def _json_answer(req: Request, call: jsonrpc.JsonCall) -> Callable[[Any], bool]:
    def answer(value: Any) -> bool:
        return req.answer_early(Response(200, JSON_HEADERS, jsonrpc.encode_success(call, value)))

    return answer


#: A reply at least this big is followed, once sent, by returning freed heap to the system.
BIG_REPLY = 16 << 20
TRIM_DELAY = 0.5


def _big_reply_trimmed(resp: Response) -> Response:
    """Encoding a big reply (``get_all_records`` of 10,000 VMs: 100 MiB) raises the heap's
    high-water mark; give the pages back once the reply has gone out."""
    body = resp.body
    if isinstance(body, bytes | bytearray | memoryview) and len(body) >= BIG_REPLY:
        asyncio.get_running_loop().call_later(TRIM_DELAY, release_free_memory)
    return resp


class RpcEndpoints:
    """Route handlers bound to one dispatcher."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    def install(self, router: Router) -> None:
        methods = {"POST", "OPTIONS"}
        for prefix in ("/", "/RPC2", "/xmlrpc", "/json"):
            router.add(prefix, self.xmlrpc, methods=methods)
        router.add("/jsonrpc", self.jsonrpc, methods=methods)

    async def xmlrpc(self, req: Request) -> Response:
        if req.method == "OPTIONS":
            return preflight(req)
        try:
            name, params = xmlrpc.decode_call(req.body)
        except WireParseError as e:
            return _parse_error("Xmlrpc", e)
        try:
            answer = _xml_answer(req) if name in EARLY_ANSWERED else None
            value = await self.dispatcher.call(name, params, _context(req, "xml", answer))
        except ApiError as e:
            return Response(200, XML_HEADERS, xmlrpc.encode_failure(e.description()))
        if name == LIST_METHODS:
            return Response(200, XML_HEADERS, xmlrpc.encode_bare(value))
        return _big_reply_trimmed(Response(200, XML_HEADERS, xmlrpc.encode_success(value)))

    async def jsonrpc(self, req: Request) -> Response:
        if req.method == "OPTIONS":
            return preflight(req)
        try:
            call = jsonrpc.decode_call(req.body)
        except WireParseError as e:
            return _parse_error("Jsonrpc", e)
        try:
            answer = _json_answer(req, call) if call.method in EARLY_ANSWERED else None
            value = await self.dispatcher.call(
                call.method, call.params, _context(req, "json", answer)
            )
        except ApiError as e:
            return Response(200, JSON_HEADERS, jsonrpc.encode_failure(call, e.description()))
        return _big_reply_trimmed(Response(200, JSON_HEADERS, jsonrpc.encode_success(call, value)))
