"""XML-RPC codec: reads ``methodCall`` bodies and writes replies byte-for-byte as xapi does.

Replies are compact (no whitespace between tags), strings carry no ``<string>`` tag, ints are
bare decimal text (so clients read int64 values as strings), and every reply except
``system.listMethods`` is wrapped in a ``Status``/``Value`` or ``ErrorDescription`` struct.

Requests are parsed with expat and refused (``WireParseError``) when malformed, when they carry a
DOCTYPE (and so any entity declaration), or when values nest deeper than ``MAX_DEPTH``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from typing import Any
from xml.parsers import expat

from openxapi.spec.values import DateTime, Int32, parse_datetime
from openxapi.wire.errors import WireParseError
from openxapi.wire.preencoded import Preencoded

__all__ = [
    "MAX_DEPTH",
    "decode_call",
    "encode_bare",
    "encode_failure",
    "encode_success",
    "encode_value",
]

#: How deeply arrays and structs may nest inside one parameter.
MAX_DEPTH = 64

# --------------------------------------------------------------------------------------------
# Encoding

# Characters that need work: the four xapi escapes, control characters other than TAB/LF/CR
# (dropped, as xapi does), and code points no XML parser or UTF-8 encoder accepts (dropped).
_UNSAFE = re.compile('[<>&"\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]').search
_ESCAPES: dict[int, str | None] = {
    ord("<"): "&lt;",
    ord(">"): "&gt;",
    ord("&"): "&amp;",
    ord('"'): "&quot;",
    0xFFFE: None,
    0xFFFF: None,
}
_ESCAPES.update(dict.fromkeys([c for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)]))
_ESCAPES.update(dict.fromkeys(range(0xD800, 0xE000)))

# Member openings ("<member><name>KEY</name>") for keys seen recently: record field names repeat
# across every record of a reply, so caching them skips the escape check for nearly all keys.
# Emptied when full, so one-off keys (refs of a get_all_records map) cannot crowd them out.
_MEMBER_OPEN: dict[str, str] = {}
_MEMBER_OPEN_LIMIT = 8192

_TRUE = "<value><boolean>1</boolean></value>"
_FALSE = "<value><boolean>0</boolean></value>"
_NIL = "<value><nil/></value>"


def _escape(text: str) -> str:
    return text if _UNSAFE(text) is None else text.translate(_ESCAPES)


def _member_open(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"XML-RPC struct keys must be strings, not {type(key).__name__}")
    opening = f"<member><name>{_escape(key)}</name>"
    if len(_MEMBER_OPEN) >= _MEMBER_OPEN_LIMIT:
        _MEMBER_OPEN.clear()
    _MEMBER_OPEN[key] = opening
    return opening


def _emit(value: Any, parts: list[str], chunks: list[bytes]) -> None:
    """Append the ``<value>`` element for ``value``; pre-encoded bytes go straight to chunks."""
    t = type(value)
    if t is str:
        if _UNSAFE(value) is None:
            parts.append(f"<value>{value}</value>")
        else:
            parts.append(f"<value>{value.translate(_ESCAPES)}</value>")
    elif t is dict:
        _emit_struct(value, parts, chunks)
    elif t is bool:
        parts.append(_TRUE if value else _FALSE)
    elif t is int:
        parts.append(f"<value>{value}</value>")
    elif t is list or t is tuple:
        parts.append("<value><array><data>")
        for item in value:
            _emit(item, parts, chunks)
        parts.append("</data></array></value>")
    elif t is Preencoded:
        _emit_preencoded(value, parts, chunks)
    elif t is float:
        parts.append(f"<value><double>{value:.16g}</double></value>")
    elif value is None:
        parts.append(_NIL)
    else:
        _emit_other(value, parts, chunks)


def _emit_struct(value: dict[str, Any], parts: list[str], chunks: list[bytes]) -> None:
    append = parts.append
    append("<value><struct>")
    opening_of = _MEMBER_OPEN.get
    for key, item in value.items():
        opening = opening_of(key)
        if opening is None:
            opening = _member_open(key)
        t = type(item)
        if t is str:
            if _UNSAFE(item) is None:
                append(f"{opening}<value>{item}</value></member>")
            else:
                append(f"{opening}<value>{item.translate(_ESCAPES)}</value></member>")
        elif t is int:
            append(f"{opening}<value>{item}</value></member>")
        elif t is bool:
            append(opening + (_TRUE if item else _FALSE) + "</member>")
        else:
            append(opening)
            _emit(item, parts, chunks)
            append("</member>")
    append("</struct></value>")


def _emit_preencoded(value: Preencoded, parts: list[str], chunks: list[bytes]) -> None:
    if parts:
        chunks.append("".join(parts).encode())
        parts.clear()
    chunks.append(value.xml)


def _emit_other(value: Any, parts: list[str], chunks: list[bytes]) -> None:
    """Subclasses of the plain types (DateTime, Int32, str/int enums) and bytes."""
    if isinstance(value, str):
        if isinstance(value, DateTime):
            parts.append(f"<value><dateTime.iso8601>{_escape(value)}</dateTime.iso8601></value>")
        else:
            parts.append(f"<value>{_escape(value)}</value>")
    elif isinstance(value, int):
        if isinstance(value, Int32):
            parts.append(f"<value><i4>{int(value)}</i4></value>")
        else:
            parts.append(f"<value>{int(value)}</value>")
    elif isinstance(value, float):
        parts.append(f"<value><double>{value:.16g}</double></value>")
    elif isinstance(value, dict):
        _emit_struct(value, parts, chunks)
    elif isinstance(value, list | tuple):
        parts.append("<value><array><data>")
        for item in value:
            _emit(item, parts, chunks)
        parts.append("</data></array></value>")
    elif isinstance(value, bytes | bytearray | memoryview):
        encoded = base64.b64encode(bytes(value)).decode("ascii")
        parts.append(f"<value><base64>{encoded}</base64></value>")
    elif isinstance(value, Preencoded):
        _emit_preencoded(value, parts, chunks)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as XML-RPC")


def _render(prefix: str, value: Any, suffix: str) -> bytes:
    parts = [prefix]
    chunks: list[bytes] = []
    _emit(value, parts, chunks)
    parts.append(suffix)
    if not chunks:
        return "".join(parts).encode()
    chunks.append("".join(parts).encode())
    return b"".join(chunks)


def encode_member(key: str, value: Any) -> bytes:
    """One struct ``<member>`` exactly as it appears inside an encoded struct."""
    opening = _MEMBER_OPEN.get(key)
    if opening is None:
        opening = _member_open(key)
    return _render(opening, value, "</member>")


def encode_value(value: Any) -> bytes:
    """One ``<value>…</value>`` element, e.g. to cache in a Preencoded or store as task.result."""
    return _render("", value, "")


_RESPONSE_OPEN = '<?xml version="1.0"?><methodResponse><params><param>'
_RESPONSE_CLOSE = "</param></params></methodResponse>"
_SUCCESS_OPEN = (
    _RESPONSE_OPEN + "<value><struct><member><name>Status</name><value>Success</value></member>"
    "<member><name>Value</name>"
)
_FAILURE_OPEN = (
    _RESPONSE_OPEN + "<value><struct><member><name>Status</name><value>Failure</value></member>"
    "<member><name>ErrorDescription</name>"
)
_STRUCT_CLOSE = "</member></struct></value>" + _RESPONSE_CLOSE


_SUCCESS_OPEN_BYTES = _SUCCESS_OPEN.encode()
_STRUCT_CLOSE_BYTES = _STRUCT_CLOSE.encode()


def encode_success(value: Any) -> bytes:
    """A successful reply: ``{Status: Success, Value: value}``."""
    if type(value) is Preencoded:  # a cached record: the commonest reply, one join
        return b"".join((_SUCCESS_OPEN_BYTES, value.xml, _STRUCT_CLOSE_BYTES))
    return _render(_SUCCESS_OPEN, value, _STRUCT_CLOSE)


def encode_failure(description: Sequence[str]) -> bytes:
    """A failed reply: ``{Status: Failure, ErrorDescription: [code, params...]}``."""
    strings = [item if isinstance(item, str) else str(item) for item in description]
    return _render(_FAILURE_OPEN, strings, _STRUCT_CLOSE)


def encode_bare(value: Any) -> bytes:
    """A reply whose only param is ``value`` itself (xapi's form for system.listMethods)."""
    return _render(_RESPONSE_OPEN, value, _RESPONSE_CLOSE)


# --------------------------------------------------------------------------------------------
# Decoding

_WS = " \t\r\n"
_INT = re.compile(r"[+-]?[0-9]+\Z")
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def _to_int(text: str) -> int:
    text = text.strip(_WS)
    if _INT.match(text) is None:
        raise WireParseError(f"bad integer {text[:40]!r}")
    number = int(text)
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise WireParseError(f"integer out of range {text[:40]!r}")
    return number


def _to_bool(text: str) -> bool:
    return text.strip(_WS) == "1"


def _to_float(text: str) -> float:
    text = text.strip(_WS)
    if "_" in text or not text.isascii():
        raise WireParseError(f"bad double {text[:40]!r}")
    try:
        return float(text)
    except ValueError:
        raise WireParseError(f"bad double {text[:40]!r}") from None


def _to_datetime(text: str) -> DateTime:
    try:
        return parse_datetime(text)
    except ValueError:
        raise WireParseError(f"bad dateTime.iso8601 {text[:40]!r}") from None


def _to_bytes(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError):
        raise WireParseError("bad base64") from None


_SCALARS: dict[str, Callable[[str], Any]] = {
    "string": str,
    "int": _to_int,
    "i4": _to_int,
    "i8": _to_int,
    "boolean": _to_bool,
    "double": _to_float,
    "dateTime.iso8601": _to_datetime,
    "base64": _to_bytes,
}

# Which child element may open inside which parent, and how many completed siblings must
# precede it: a fixed count places it (methodName before params, name before value) and
# limits it to one; -1 allows any number.
_CHILDREN: dict[tuple[str, str], int] = {
    ("", "methodCall"): 0,
    ("methodCall", "methodName"): 0,
    ("methodCall", "params"): 1,
    ("params", "param"): -1,
    ("param", "value"): 0,
    ("array", "data"): 0,
    ("data", "value"): -1,
    ("struct", "member"): -1,
    ("member", "name"): 0,
    ("member", "value"): 1,
    ("value", "array"): 0,
    ("value", "struct"): 0,
    ("value", "nil"): 0,
}
_CHILDREN.update({("value", tag): 0 for tag in _SCALARS})

# Elements whose character data is content; in all others only whitespace may appear.
_TEXT_ELEMENTS = frozenset(["value", "name", "methodName", *_SCALARS])


class _Frame:
    __slots__ = ("children", "tag", "text")

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.text: list[str] | None = [] if tag in _TEXT_ELEMENTS else None
        self.children: list[Any] = []


def _finish(frame: _Frame) -> Any:
    """The decoded result of a closed element, handed to its parent."""
    tag = frame.tag
    children = frame.children
    text = "".join(frame.text) if frame.text is not None else ""
    if tag == "value":
        if not children:
            return text
        if text.strip(_WS):
            raise WireParseError("text mixed with a typed value")
        return children[0]
    convert = _SCALARS.get(tag)
    if convert is not None:
        return convert(text)
    if tag == "member":
        if len(children) != 2:
            raise WireParseError("member needs a name and a value")
        return (children[0], children[1])
    if tag == "struct":
        return dict(children)
    if tag == "data" or tag == "params":
        return children
    if tag == "array":
        return children[0] if children else []
    if tag == "name":
        return text
    if tag == "nil":
        return None
    if tag == "param":
        if not children:
            raise WireParseError("param without a value")
        return children[0]
    if tag == "methodName":
        return text.strip(_WS)
    if tag == "methodCall":
        if not children:
            raise WireParseError("methodCall without methodName")
        return (children[0], children[1] if len(children) > 1 else [])
    raise WireParseError(f"unexpected element {tag!r}")  # pragma: no cover - table guards


def _refuse_doctype(*_args: object) -> None:
    raise WireParseError("DOCTYPE declarations are not accepted")


def _refuse_entity(*_args: object) -> None:
    raise WireParseError("entity declarations are not accepted")


# The shapes nearly every client sends: params that are strings (session refs, object refs,
# names), numbers, booleans, or arrays of strings (event classes, lists of refs). Matched by
# regular expression, they need no XML parser; the converters are the full parser's, so the
# values and errors are the same. Anything else — structs, nil, dates, entities, non-ASCII,
# control characters, ">" in text, spacing other than XML's — takes the full expat path.
# Text excludes CR (expat rewrites CR LF) and ">" (so no "]]>", which XML forbids in text).
_FAST_TEXT = rb"[^<>&\x00-\x08\x0b-\x1f\x7f-\xff]*"
_FAST_WS = rb"[ \t\r\n]*"
_FAST_NUMBER = rb"[0-9A-Za-z+.\-]*"
_FAST_TAGS = (b"double", b"int", b"i4", b"i8", b"boolean")
_FAST_STRING_VALUE = (
    rb"<value>(?:<string>(" + _FAST_TEXT + rb")</string>|(" + _FAST_TEXT + rb"))</value>"
)
_FAST_ARRAY_BODY = (
    rb"(?:"
    + _FAST_WS
    + rb"<value>(?:<string>"
    + _FAST_TEXT
    + rb"</string>|"
    + _FAST_TEXT
    + rb")</value>)*"
    + _FAST_WS
)
_FAST_VALUE = (
    rb"<value>(?:<string>"
    + _FAST_TEXT
    + rb"</string>|"
    + b"|".join(rb"<%s>%s</%s>" % (tag, _FAST_NUMBER, tag) for tag in _FAST_TAGS)
    + rb"|<array>"
    + _FAST_WS
    + rb"<data>"
    + _FAST_ARRAY_BODY
    + rb"</data>"
    + _FAST_WS
    + rb"</array>|"
    + _FAST_TEXT
    + rb")</value>"
)
_FAST_CALL = re.compile(
    _FAST_WS
    + rb"(?:<\?xml version=[\"']1\.0[\"'](?: encoding=[\"'](?:utf|UTF)-8[\"'])?"
    + _FAST_WS
    + rb"\?>)?"
    + _FAST_WS
    + rb"<methodCall>"
    + _FAST_WS
    + rb"<methodName>([A-Za-z0-9_.:-]+)</methodName>"
    + _FAST_WS
    + rb"<params>"
    + _FAST_WS
    + rb"((?:<param>"
    + _FAST_WS
    + _FAST_VALUE
    + _FAST_WS
    + rb"</param>"
    + _FAST_WS
    + rb")*)</params>"
    + _FAST_WS
    + rb"</methodCall>"
    + _FAST_WS
)
# One param of a body _FAST_CALL accepted. Groups: tagged string, scalar tag and its text,
# "<array>" and the array's body, bare string.
_FAST_PARAM = re.compile(
    rb"<param>"
    + _FAST_WS
    + rb"<value>(?:<string>("
    + _FAST_TEXT
    + rb")</string>|<(double|int|i4|i8|boolean)>("
    + _FAST_NUMBER
    + rb")</\2>|(<array>)"
    + _FAST_WS
    + rb"<data>("
    + _FAST_ARRAY_BODY
    + rb")</data>"
    + _FAST_WS
    + rb"</array>|("
    + _FAST_TEXT
    + rb"))</value>"
)
_FAST_ITEM = re.compile(_FAST_STRING_VALUE)


def _decode_simple(body: bytes) -> tuple[str, list[Any]] | None:
    """The call if it has one of the common plain-ASCII shapes; None to use the full parser."""
    m = _FAST_CALL.fullmatch(body)
    if m is None:
        return None
    params: list[Any] = []
    for tagged, tag, number, array, items, bare in _FAST_PARAM.findall(m.group(2)):
        if tag:
            params.append(_SCALARS[tag.decode("ascii")](number.decode("ascii")))
        elif array:
            params.append([(t or b).decode("ascii") for t, b in _FAST_ITEM.findall(items)])
        else:
            params.append((tagged or bare).decode("ascii"))
    return m.group(1).decode("ascii"), params


def decode_call(body: bytes) -> tuple[str, list[Any]]:
    """The method name and positional params of a ``methodCall``; WireParseError if unreadable."""
    if len(body) < 4096:
        simple = _decode_simple(body)
        if simple is not None:
            return simple
    return _decode_full(body)


def _decode_full(body: bytes) -> tuple[str, list[Any]]:
    root = _Frame("")
    stack = [root]
    containers = [0]

    def start(tag: str, _attrs: object) -> None:
        parent = stack[-1]
        required = _CHILDREN.get((parent.tag, tag))
        if required is None:
            raise WireParseError(f"unexpected <{tag}> in <{parent.tag or 'document'}>")
        if required >= 0 and len(parent.children) != required:
            raise WireParseError(f"misplaced <{tag}> in <{parent.tag or 'document'}>")
        if tag == "array" or tag == "struct":
            containers[0] += 1
            if containers[0] > MAX_DEPTH:
                raise WireParseError("values nested too deeply")
        stack.append(_Frame(tag))

    def end(tag: str) -> None:
        if tag == "array" or tag == "struct":
            containers[0] -= 1
        frame = stack.pop()
        stack[-1].children.append(_finish(frame))

    def chardata(data: str) -> None:
        frame = stack[-1]
        if frame.text is not None:
            frame.text.append(data)
        elif data.strip(_WS):
            raise WireParseError(f"unexpected text in <{frame.tag or 'document'}>")

    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.EntityDeclHandler = _refuse_entity
    parser.UnparsedEntityDeclHandler = _refuse_entity
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chardata
    try:
        parser.Parse(body, True)
    except WireParseError:
        raise
    except expat.ExpatError as exc:
        raise WireParseError(f"malformed XML: {exc}") from None
    except Exception as exc:
        raise WireParseError(f"unreadable XML-RPC call: {type(exc).__name__}") from None
    if len(stack) != 1 or not root.children:
        raise WireParseError("no methodCall element")
    name, params = root.children[0]
    return name, params
