"""The wire forms around an API extension, as the reference's RPC library makes them.

``host.call_extension`` takes a JSON-RPC call as a string; the extension program reads
the same call as XML-RPC on stdin and answers with an XML-RPC response on stdout. Each
reading failure is reported with the text the reference's exception printer gives.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import xml.parsers.expat
from collections.abc import Callable
from typing import Any

from openxapi.api.plugin_xml import escape, ocaml_escaped, ocaml_quoted
from openxapi.errors import ApiError
from openxapi.spec.values import DateTime


class ReadError(Exception):
    """The extension's answer could not be read; the text as the reference prints it."""


# ---- the JSON-RPC call -----------------------------------------------------------------------


def _malformed(reason: str) -> ApiError:
    return ApiError("INTERNAL_ERROR", f"Jsonrpc.Malformed_method_request({ocaml_quoted(reason)})")


def _first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        out.setdefault(k, v)
    return out


def parse_json_call(text: str) -> tuple[str, list[Any]]:
    """The method name and params of a JSON-RPC request that must carry an id."""
    if not text.strip(" \t\r\n"):
        raise ApiError("INTERNAL_ERROR", 'Yojson.Json_error("Blank input data")')
    try:
        doc = json.loads(text, object_pairs_hook=_first_wins)
    except (ValueError, RecursionError) as e:
        where = (
            f"Line {e.lineno}, bytes {e.colno - 1}-{e.colno}:\n{e.msg}"
            if isinstance(e, json.JSONDecodeError)
            else str(e)
        )
        raise ApiError("INTERNAL_ERROR", f"Yojson.Json_error({ocaml_quoted(where)})") from None
    if not isinstance(doc, dict):
        raise _malformed("Invalid request body")
    if "method" not in doc:
        raise _malformed("Required field method is missing")
    name = doc["method"]
    if not isinstance(name, str):
        raise _malformed("Invalid field 'method' in request body")
    version = doc.get("jsonrpc")
    if version is not None and version != "2.0":
        raise _malformed("Invalid field 'jsonrpc' in request body")
    params = doc.get("params")
    if version is None and "params" not in doc:
        raise _malformed("Required field params is missing")
    if isinstance(params, dict) and version is not None:
        params = [params]
    elif params is None and version is not None:
        params = []
    elif not isinstance(params, list):
        raise _malformed("Invalid field 'params' in request body")
    ident = doc.get("id")
    if ident is None or isinstance(ident, (bool, float)) or not isinstance(ident, (int, str)):
        raise _malformed("Invalid field 'id' in request body")
    return name, params


# ---- the XML-RPC call on the extension's stdin -----------------------------------------------


def _value(v: Any) -> str:
    if v is None:
        return "<value><nil/></value>"
    if isinstance(v, bool):
        return f"<value><boolean>{1 if v else 0}</boolean></value>"
    if isinstance(v, int):
        return f"<value>{v}</value>"
    if isinstance(v, float):
        return f"<value><double>{_ocaml_g(v)}</double></value>"
    if isinstance(v, DateTime):
        return f"<value><dateTime.iso8601>{v}</dateTime.iso8601></value>"
    if isinstance(v, str):
        return f"<value>{escape(v)}</value>"
    if isinstance(v, (bytes, bytearray)):
        return f"<value><base64>{base64.b64encode(bytes(v)).decode()}</base64></value>"
    if isinstance(v, (list, tuple)):
        return "<value><array><data>" + "".join(map(_value, v)) + "</data></array></value>"
    if isinstance(v, dict):
        members = "".join(f"<member><name>{k}</name>{_value(x)}</member>" for k, x in v.items())
        return f"<value><struct>{members}</struct></value>"
    return f"<value>{escape(str(v))}</value>"


def _ocaml_g(v: float) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.16g}"


def xml_call(name: str, params: list[Any]) -> str:
    """The call as the extension reads it on stdin."""
    body = "".join(f"<param>{_value(p)}</param>" for p in params)
    return (
        f'<?xml version="1.0"?><methodCall><methodName>{escape(name)}</methodName>'
        f"<params>{body}</params></methodCall>"
    )


# ---- the extension's answer ------------------------------------------------------------------

_END: tuple[str, str] = ("end", "")


def _events(text: str) -> list[tuple[str, str]]:
    """Start, end and text events up to the root's end; a reading error ends the list."""
    events: list[tuple[str, str]] = []
    depth = 0

    class Done(Exception):
        pass

    def start(tag: str, _attrs: Any) -> None:
        nonlocal depth
        depth += 1
        events.append(("start", tag))

    def end(_tag: str) -> None:
        nonlocal depth
        depth -= 1
        events.append(_END)
        if depth == 0:
            raise Done

    def data(d: str) -> None:
        if events and events[-1][0] == "data":
            events[-1] = ("data", events[-1][1] + d)
        else:
            events.append(("data", d))

    def refuse(*_args: object) -> None:
        raise xml.parsers.expat.ExpatError("entity declarations are not accepted")

    p = xml.parsers.expat.ParserCreate()
    p.StartElementHandler = start
    p.EndElementHandler = end
    p.CharacterDataHandler = data
    p.EntityDeclHandler = refuse
    try:
        p.Parse(text.encode(), True)
    except Done:
        return events
    except xml.parsers.expat.ExpatError:
        pass
    events.append(("error", ""))
    return events


def _blank(d: str) -> bool:
    return not d.strip("\n \t")


class _Reader:
    """The reference's pull parser over the events."""

    def __init__(self, text: str) -> None:
        self.events = _events(text)
        self.i = 0

    def peek(self) -> tuple[str, str]:
        ev = self.events[self.i] if self.i < len(self.events) else ("error", "")
        if ev[0] == "error":
            raise ReadError("Xmlm.Error(_, _)")
        return ev

    def take(self) -> tuple[str, str]:
        ev = self.peek()
        self.i += 1
        return ev

    @staticmethod
    def fail(got: str, expected: str) -> ReadError:
        return ReadError(f"Xmlrpc.Parse_error({ocaml_quoted(got)}, {ocaml_quoted(expected)}, _)")

    def skip_blank(self) -> None:
        while self.peek()[0] == "data" and _blank(self.peek()[1]):
            self.take()

    def get_data(self) -> str:
        kind, v = self.take()
        if kind == "data":
            return v
        if kind == "start":
            raise self.fail(f"open_tag({v})", "data")
        return ""

    def open_tag(self) -> str:
        while True:
            kind, v = self.take()
            if kind == "start":
                return v
            if kind == "data" and _blank(v):
                continue
            if kind == "data":
                raise self.fail(f"data({ocaml_escaped(v)})", "open_tag")
            raise self.fail("close_tag", "open_tag")

    def close_tag(self, tag: str) -> None:
        while True:
            kind, v = self.take()
            if kind == "end":
                return
            if kind == "start":
                raise self.fail(f"open_tag({v})", f"close_tag({tag})")
            if not _blank(v):
                raise self.fail(f"data({ocaml_escaped(v)})", f"close_tag({tag})")

    def map_tag(self, tag: str, f: Callable[[], Any]) -> Any:
        t = self.open_tag()
        if t != tag:
            raise self.fail(f"open_tag({t})", f"open_tag({tag})")
        r = f()
        self.close_tag(tag)
        return r

    def value(self) -> Any:
        t = self.open_tag()
        if t != "value":
            raise self.fail("open_tag(value)", f"open_tag({t})")
        kind, v = self.peek()
        if kind == "end":
            r: Any = ""
        elif kind == "data":
            self.take()
            r = self.typed() if _blank(v) and self.peek()[0] == "start" else v
        else:
            r = self.typed()
        self.close_tag("value")
        return r

    def typed(self) -> Any:
        tag = self.open_tag()
        r = self._empty(tag) if self.peek()[0] == "end" else self._basic(tag)
        self.close_tag(tag)
        return r

    def _empty(self, tag: str) -> Any:
        empties: dict[str, Any] = {"string": "", "array": [], "struct": {}, "nil": None}
        if tag in empties:
            return empties[tag]
        if tag == "value":
            return ""
        raise self.fail(f"empty_{tag}", tag)

    def _basic(self, tag: str) -> Any:
        if tag in ("int", "i8", "i4"):
            return _int64(self.get_data())
        if tag == "boolean":
            return self.get_data() == "1"
        if tag == "double":
            return _float(self.get_data())
        if tag == "string":
            return self.get_data()
        if tag == "dateTime.iso8601":
            return DateTime(self.get_data())
        if tag == "base64":
            return _base64(self.get_data())
        if tag == "array":
            return self.map_tag("data", self._values)
        if tag == "struct":
            return self._members()
        if tag == "nil":
            return None
        raise self.fail(
            f"open_tag({tag})",
            "open_tag(int/i8/i4/boolean/double/string/dateTime.iso8601/array/struct/nil)",
        )

    def _values(self) -> list[Any]:
        out = []
        self.skip_blank()
        while self.peek()[0] != "end":
            out.append(self.value())
            self.skip_blank()
        return out

    def _members(self) -> dict[str, Any]:
        out: dict[str, Any] = {}

        def member() -> None:
            name = self.map_tag("name", self.get_data)
            out.setdefault(name, self.value())

        self.skip_blank()
        while self.peek()[0] != "end":
            self.map_tag("member", member)
            self.skip_blank()
        return out

    def response(self) -> tuple[bool, Any]:
        return self.map_tag("methodResponse", self._body)  # type: ignore[no-any-return]

    def _body(self) -> tuple[bool, Any]:
        self.skip_blank()
        kind, v = self.peek()
        if kind == "start" and v == "params":
            return self.map_tag("params", lambda: self.map_tag("param", self._status))  # type: ignore[no-any-return]
        if kind == "start" and v == "fault":
            return self.map_tag("fault", self._fault)  # type: ignore[no-any-return]
        got = f"open_tag({v})" if kind == "start" else ("close_tag" if kind == "end" else v)
        raise self.fail(ocaml_escaped(got) if kind == "data" else got, "open_tag(fault/params)")

    def _status(self) -> tuple[bool, Any]:
        r = self.value()
        if not isinstance(r, dict):
            return True, r
        if r.get("Status") == "Success" and "Value" in r:
            return True, r["Value"]
        if r.get("Status") == "Failure" and "ErrorDescription" in r:
            return False, r["ErrorDescription"]
        return True, r

    def _fault(self) -> tuple[bool, Any]:
        r = self.value()
        if not isinstance(r, dict):
            raise self.fail(to_json(r), "fault")
        if "faultCode" not in r or "faultString" not in r:
            raise ReadError("Not_found")
        return False, ["fault", r["faultCode"], r["faultString"]]


def _int64(text: str) -> int:
    try:
        value = int(text, 10) if text.lstrip("+-").isdigit() else int(text.replace("_", ""), 0)
    except ValueError:
        raise ReadError('Failure("Int64.of_string")') from None
    if not -(2**63) <= value < 2**64:
        raise ReadError('Failure("Int64.of_string")')
    return value - 2**64 if value >= 2**63 else value


def _float(text: str) -> float:
    try:
        return float(text.replace("_", ""))
    except ValueError:
        raise ReadError('Failure("float_of_string")') from None


def _base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ReadError('Invalid_argument("Base64.decode_exn")') from None


def read_response(output: str) -> tuple[bool, Any]:
    """(True, value) or (False, error contents) from an extension's stdout."""
    try:
        return _Reader(output).response()
    except RecursionError:
        raise ReadError("Stack_overflow") from None


def to_json(value: Any) -> str:
    """A value as the reference's JSON printer writes it (compact)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (bytes, bytearray)):
            return bytes(v).decode("utf-8", errors="replace")
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return json.dumps(plain(value), separators=(",", ":"), ensure_ascii=False)


def raise_failure(contents: Any) -> ApiError:
    """The error an extension's failure stands for."""
    if isinstance(contents, str):
        return ApiError(contents)
    if isinstance(contents, list) and contents and all(isinstance(x, str) for x in contents):
        return ApiError(contents[0], *contents[1:])
    return ApiError("EXTENSION_PROTOCOL_FAILURE", to_json(contents))
