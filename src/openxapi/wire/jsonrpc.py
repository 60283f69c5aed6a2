"""JSON-RPC codec for ``POST /jsonrpc``: versions 1.0 and 2.0 as xapi reads and writes them.

Replies keep the member order xapi uses; a 2.0 success carries no ``error`` key (clients such
as xen-api reject ``"error": null`` there) while a 1.0 success must carry it.

Values are plain JSON: DateTime goes out as its string, Int32 as a number, bytes as base64
text, and Preencoded values as their cached JSON. Non-finite floats become ``null``: xapi's
JSON writer emits bare ``NaN``/``Infinity`` tokens, which strict JSON parsers (browsers, Go,
.NET) reject, so ``null`` is the form every client can read.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from openxapi.wire.errors import WireParseError
from openxapi.wire.preencoded import Preencoded

__all__ = [
    "MAX_DEPTH",
    "JsonCall",
    "decode_call",
    "encode_bare_success",
    "encode_failure",
    "encode_success",
    "encode_value",
]

#: How deeply arrays and objects may nest inside one parameter (as for XML-RPC).
MAX_DEPTH = 64


@dataclass
class JsonCall:
    """A decoded request: what to call, and what the reply must echo (id, version)."""

    method: str
    params: list[Any]
    id: Any
    version: str


def _too_deep(value: Any, limit: int) -> bool:
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if type(item) is list:
            children: Any = item
        elif type(item) is dict:
            children = item.values()
        else:
            continue
        if depth >= limit:
            return True
        pending.extend((child, depth + 1) for child in children if type(child) in (list, dict))
    return False


def decode_call(body: bytes) -> JsonCall:
    """The call in a JSON-RPC request body; WireParseError if it is not a valid request."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise WireParseError(f"malformed JSON: {exc}") from None
    except Exception as exc:
        raise WireParseError(f"unreadable JSON-RPC call: {type(exc).__name__}") from None
    if type(request) is not dict:
        raise WireParseError("request is not a JSON object")
    method = request.get("method")
    if type(method) is not str:
        raise WireParseError("'method' is missing or not a string")
    if "jsonrpc" not in request:
        version = "1.0"
    elif request["jsonrpc"] == "2.0":
        version = "2.0"
    else:
        raise WireParseError("'jsonrpc' must be \"2.0\" when present")
    params = request.get("params")
    if type(params) is list:
        pass
    elif version == "1.0":
        raise WireParseError("'params' must be an array")
    elif params is None:
        params = []
    elif type(params) is dict:
        params = [params]
    else:
        raise WireParseError("'params' must be an array or an object")
    call_id = request.get("id")
    if call_id is None or type(call_id) not in (str, int):
        raise WireParseError("'id' must be a string or an integer")
    if _too_deep(params, MAX_DEPTH + 1):
        raise WireParseError("values nested too deeply")
    return JsonCall(method=method, params=params, id=call_id, version=version)


def _default(value: Any) -> Any:
    if isinstance(value, Preencoded):
        return orjson.Fragment(value.json)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _sanitize(value: Any) -> Any:
    """A copy of ``value`` with lone surrogates (not encodable as UTF-8) replaced."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_sanitize(k): _sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_sanitize(item) for item in value]
    return value


def _dumps(document: Any) -> bytes:
    try:
        return orjson.dumps(document, default=_default)
    except orjson.JSONEncodeError:
        return orjson.dumps(_sanitize(document), default=_default)


def encode_value(value: Any) -> bytes:
    """One JSON value, e.g. to cache in a Preencoded."""
    return _dumps(value)


def encode_success(call: JsonCall, value: Any) -> bytes:
    """The reply carrying ``value`` as the call's result, in the call's protocol version."""
    if call.version == "2.0":
        return _dumps({"jsonrpc": "2.0", "result": value, "id": call.id})
    return _dumps({"result": value, "error": None, "id": call.id})


def encode_bare_success(call: JsonCall, value: Any) -> bytes:
    """Same as encode_success: JSON-RPC has no unwrapped form (system.listMethods)."""
    return encode_success(call, value)


def encode_failure(call: JsonCall, description: Sequence[str]) -> bytes:
    """The reply for a XenAPI error ``[code, params...]`` in the call's protocol version."""
    strings = [item if isinstance(item, str) else str(item) for item in description]
    if call.version == "2.0":
        error = {"code": 1, "message": strings[0] if strings else "", "data": strings[1:]}
        return _dumps({"jsonrpc": "2.0", "error": error, "id": call.id})
    return _dumps({"result": None, "error": strings, "id": call.id})
