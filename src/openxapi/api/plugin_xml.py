"""The XML a host plugin is called with, and the reading of its answer, as the reference's.

The call is one command-line argument: ``<methodCall>`` naming the function, with the
session and a struct of string arguments. The answer on stdout is a XenAPI-style
``<methodResponse>`` (``{Status: Success, Value}`` or ``{Status: Failure,
ErrorDescription}``) or an XML-RPC fault. The reading is strict in the reference's way
(whitespace-only text ignored, attributes not allowed), and a badly shaped answer is
reported with the reference's wording.
"""

from __future__ import annotations

import xml.parsers.expat
from dataclasses import dataclass, field

from openxapi.errors import ApiError


@dataclass(slots=True)
class Element:
    """One XML element: tag, attributes and children (elements or text)."""

    tag: str
    attrs: list[tuple[str, str]] = field(default_factory=list)
    children: list[Element | str] = field(default_factory=list)


Node = Element | str


class XmlError(Exception):
    """Not well-formed XML: the message and line, as the reference prints them."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(f"{message} line {line}")


class RunTimeTypeError(Exception):
    """Well-formed XML of the wrong shape (the reference's XMLRPC.RunTimeTypeError)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class OcamlException(Exception):
    """Another exception of the reference's reader, held as ``Printexc`` prints it."""


def ocaml_escaped(text: str) -> str:
    """OCaml's ``String.escaped``."""
    out = []
    for ch in text:
        o = ord(ch)
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\b":
            out.append("\\b")
        elif 32 <= o <= 126:
            out.append(ch)
        else:
            out.extend(f"\\{b:03d}" for b in ch.encode("utf-8", "surrogatepass"))
    return "".join(out)


def ocaml_quoted(text: str) -> str:
    """A string as ``Printexc`` shows it (``%S``)."""
    return '"' + ocaml_escaped(text) + '"'


# ---- writing ---------------------------------------------------------------------------------


def escape(text: str) -> str:
    """Text content as the reference writes it: markup escaped, control characters dropped."""
    out = []
    for ch in text:
        if ch == ">":
            out.append("&gt;")
        elif ch == "<":
            out.append("&lt;")
        elif ch == "&":
            out.append("&amp;")
        elif ch == '"':
            out.append("&quot;")
        elif ch >= " " or ch in "\t\n\r":
            out.append(ch)
    return "".join(out)


def _string_value(text: str) -> str:
    return f"<value>{escape(text)}</value>" if text else "<value/>"


def plugin_call(fn: str, session: str, args: dict[str, str]) -> str:
    """The one argument a plugin is run with."""
    members = "".join(
        f"<member><name>{escape(k)}</name>{_string_value(v)}</member>" for k, v in args.items()
    )
    struct = f"<struct>{members}</struct>" if members else "<struct/>"
    return (
        f"<methodCall><methodName>{escape(fn)}</methodName><params>"
        f"<param>{_string_value(session)}</param><param><value>{struct}</value></param>"
        "</params></methodCall>"
    )


# ---- reading ---------------------------------------------------------------------------------


def _expat_message(err: xml.parsers.expat.ExpatError, seen_root: bool) -> str:
    code = err.code
    if code == xml.parsers.expat.errors.codes[xml.parsers.expat.errors.XML_ERROR_NO_ELEMENTS]:
        return "unexpected end of input"
    if not seen_root:
        return "expected root element"
    return xml.parsers.expat.ErrorString(code) or "malformed document"


def parse(text: str) -> Element:
    """The document's root element; text after it is ignored, as the reference does."""
    parser = xml.parsers.expat.ParserCreate()
    stack: list[Element] = []
    done: list[Element] = []

    def start(tag: str, attrs: list[str]) -> None:
        if done:
            raise _RootClosed
        el = Element(tag, list(zip(attrs[::2], attrs[1::2], strict=True)))
        if stack:
            stack[-1].children.append(el)
        stack.append(el)

    def end(_tag: str) -> None:
        el = stack.pop()
        el.children = _merge_text(el.children)
        if not stack:
            done.append(el)
            raise _RootClosed

    def data(text: str) -> None:
        if stack:
            stack[-1].children.append(text)

    def refuse(*_args: object) -> None:
        raise XmlError("entity declarations are not accepted", parser.CurrentLineNumber)

    parser.ordered_attributes = True
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    parser.EntityDeclHandler = refuse
    try:
        parser.Parse(text.encode(), True)
    except _RootClosed:
        pass
    except xml.parsers.expat.ExpatError as e:
        raise XmlError(_expat_message(e, bool(stack)), e.lineno) from None
    if not done:
        raise XmlError("unexpected end of input", parser.CurrentLineNumber)
    return done[0]


class _RootClosed(Exception):
    """The root element has ended: stop reading."""


def _merge_text(children: list[Node]) -> list[Node]:
    """Adjacent text joined, and whitespace-only text left out (as the reference)."""
    merged: list[Node] = []
    for c in children:
        if isinstance(c, str) and merged and isinstance(merged[-1], str):
            merged[-1] += c
        else:
            merged.append(c)
    return [c for c in merged if not (isinstance(c, str) and not c.strip(" \n\t"))]


def _pp(node: Node) -> str:
    if isinstance(node, str):
        return "PCData=" + ocaml_escaped(node)
    return "Element=" + ocaml_escaped(node.tag)


def _unbox(ok: tuple[str, ...], node: Node) -> list[Node]:
    if isinstance(node, Element) and node.tag in ok and not node.attrs:
        return node.children
    raise RunTimeTypeError(f"unbox: {_pp(node)} should contain '{ok[0]}'")


def _singleton(ok: tuple[str, ...], node: Node) -> Node:
    children = _unbox(ok, node)
    if len(children) == 1:
        return children[0]
    listed = ", ".join(_pp(c) for c in children)
    raise RunTimeTypeError(f"singleton: {{{listed}}} should be the singleton {{{ok[0]}}}")


def _pcdata(node: Node) -> str:
    if isinstance(node, str):
        return node
    raise RunTimeTypeError("pcdata")


def _name(node: Node) -> str:
    children = _unbox(("name",), node)
    if not children:
        return ""
    if len(children) == 1 and isinstance(children[0], str):
        return children[0]
    raise RunTimeTypeError("From.name: should contain PCData")


def read_string(node: Node) -> str:
    """A string value: bare text, ``<string>`` or empty."""
    if isinstance(node, Element) and node.tag == "value" and not node.attrs:
        ch = node.children
        if not ch:
            return ""
        if len(ch) == 1 and isinstance(ch[0], str):
            return ch[0]
        if len(ch) == 1 and isinstance(ch[0], Element):
            inner = ch[0]
            if inner.tag == "string" and not inner.attrs and not inner.children:
                return ""
    return _pcdata(_singleton(("string",), _singleton(("value",), node)))


def _int(node: Node) -> int:
    text = _pcdata(_singleton(("i4", "int"), _singleton(("value",), node)))
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        raise OcamlException('Failure("Int32.of_string")') from None
    if not -(2**31) <= value < 2**32:
        raise OcamlException('Failure("Int32.of_string")')
    return value - 2**32 if value >= 2**31 else value


def _structure(node: Node) -> list[tuple[str, Node]]:
    members = _unbox(("struct",), _singleton(("value",), node))
    out = []
    for m in members:
        pair = _unbox(("member",), m)
        if len(pair) != 2:
            raise RunTimeTypeError("pair ")
        out.append((_name(pair[0]), pair[1]))
    return out


def _assoc(key: str, pairs: list[tuple[str, Node]]) -> Node:
    for k, v in pairs:
        if k == key:
            return v
    raise KeyError(key)


def _status(node: Node) -> str:
    """The plugin's result, or its failure raised as the error it names."""
    bindings = _structure(node)
    try:
        status = read_string(_assoc("Status", bindings))
        if status == "Success":
            return read_string(_assoc("Value", bindings))
        if status != "Failure":
            raise KeyError("Status")
        items = _unbox(
            ("data",),
            _singleton(("array",), _singleton(("value",), _assoc("ErrorDescription", bindings))),
        )
    except KeyError:
        raise RunTimeTypeError("Status") from None
    if not items:
        raise RunTimeTypeError("Empty array of error strings")
    code, *params = [read_string(i) for i in items]
    raise ApiError(code, *params)


def _fault(node: Node) -> ApiError:
    members = _structure(_singleton(("fault",), node))
    try:
        reason = read_string(_assoc("faultString", members))
        code = _int(_assoc("faultCode", members))
    except KeyError:
        raise OcamlException("Not_found") from None
    return ApiError("XENAPI_PLUGIN_FAILURE", "fault", str(code), reason)


def _response(root: Element) -> str:
    body = _singleton(("methodResponse",), root)
    if isinstance(body, Element) and body.tag == "params":
        params = [_singleton(("param",), p) for p in _unbox(("params",), body)]
        if len(params) != 1:
            raise RunTimeTypeError("Expected single return value (struct status)")
        return _status(params[0])
    if isinstance(body, Element) and body.tag == "fault":
        raise _fault(root.children[0])
    raise RunTimeTypeError("response")


def plugin_result(output: str) -> str:
    """A plugin's stdout read as the reference reads it: its string result, or the error."""
    try:
        root = parse(output)
    except XmlError as e:
        raise ApiError(
            "XENAPI_PLUGIN_FAILURE", "failed to parse plugin output", output, str(e)
        ) from None
    try:
        return _response(root)
    except RunTimeTypeError as e:
        raise ApiError(
            "INTERNAL_ERROR", f"XMLRPC.RunTimeTypeError({ocaml_quoted(e.name)}, _)"
        ) from None
    except OcamlException as e:
        raise ApiError("INTERNAL_ERROR", str(e)) from None
