"""Property tests: decoders never fail other than with WireParseError, and every encodable
value reads back (through the Python SDK's parser and our own) as xapi's clients would see it."""

from __future__ import annotations

import base64
import xmlrpc.client
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openxapi.spec.values import DateTime, Int32, from_datetime
from openxapi.wire import WireParseError, encode_value_json, encode_value_xml, jsonrpc
from openxapi.wire import xmlrpc as xcodec

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- decoders never crash ---------------------------------------------------------------------

XML_TOKENS = st.sampled_from(
    [
        "<methodCall>",
        "</methodCall>",
        "<methodName>",
        "</methodName>",
        "<params>",
        "</params>",
        "<params/>",
        "<param>",
        "</param>",
        "<value>",
        "</value>",
        "<value/>",
        "<string>",
        "</string>",
        "<int>",
        "</int>",
        "<i4>",
        "</i4>",
        "<i8>",
        "</i8>",
        "<boolean>",
        "</boolean>",
        "<double>",
        "</double>",
        "<dateTime.iso8601>",
        "</dateTime.iso8601>",
        "<base64>",
        "</base64>",
        "<array>",
        "</array>",
        "<data>",
        "</data>",
        "<struct>",
        "</struct>",
        "<member>",
        "</member>",
        "<name>",
        "</name>",
        "<nil/>",
        "<nil>",
        "</nil>",
        "<array/>",
        "<struct/>",
        "<data/>",
        "<unknown>",
        "1",
        "-1",
        "0",
        "1.5",
        "inf",
        "nan",
        "9223372036854775808",
        "aGk=",
        "=",
        "20250319T04:16:24Z",
        "2025-03-19",
        " ",
        "\n",
        "\t",
        "\r",
        "&amp;",
        "&lt;",
        "&#65;",
        "&#0;",
        "&bogus;",
        "<![CDATA[x<y]]>",
        "<!-- c -->",
        "<?pi x?>",
        "<?xml version='1.0'?>",
        "<!DOCTYPE x>",
        '<!DOCTYPE x [<!ENTITY e "v">]>',
        "&e;",
        "\u00e9",
        "\ufffe",
        "\x01",
    ]
)


@FUZZ
@given(st.binary(max_size=300))
def test_xml_decoder_survives_arbitrary_bytes(body: bytes) -> None:
    try:
        name, params = xcodec.decode_call(body)
    except WireParseError:
        return
    assert isinstance(name, str)
    assert isinstance(params, list)


@FUZZ
@given(
    st.booleans(),
    st.lists(XML_TOKENS | st.text(max_size=4), max_size=40),
)
def test_xml_decoder_survives_tag_soup(envelope: bool, tokens: list[str]) -> None:
    text = "".join(tokens)
    if envelope:
        text = (
            "<methodCall><methodName>m</methodName><params><param>"
            f"{text}</param></params></methodCall>"
        )
    try:
        name, params = xcodec.decode_call(text.encode("utf-8", "surrogatepass"))
    except WireParseError:
        return
    assert isinstance(name, str)
    assert isinstance(params, list)


VALID_XML_CALL = xmlrpc.client.dumps(
    (
        "OpaqueRef:x",
        {"k": [1, True, 2.5, None, xmlrpc.client.Binary(b"ab")]},
        xmlrpc.client.DateTime("20250319T04:16:24"),
    ),
    "VM.create",
    allow_none=True,
).encode()


@FUZZ
@given(st.data())
def test_xml_decoder_survives_mutations_of_a_valid_call(data: st.DataObject) -> None:
    body = bytearray(VALID_XML_CALL)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(body)))
        action = data.draw(st.sampled_from(["delete", "insert", "replace", "truncate"]))
        if action == "delete":
            del body[at : at + data.draw(st.integers(1, 8))]
        elif action == "insert":
            body[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif action == "replace" and at < len(body):
            body[at] = data.draw(st.integers(0, 255))
        else:
            del body[at:]
    try:
        xcodec.decode_call(bytes(body))
    except WireParseError:
        pass


JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
JSON_MEMBERS = st.dictionaries(
    st.sampled_from(["jsonrpc", "method", "params", "id", "extra"]),
    st.sampled_from(["2.0", "1.0", "VM.start"]) | JSON_VALUES,
    max_size=5,
)


def check_json_call(body: bytes) -> None:
    try:
        decoded = jsonrpc.decode_call(body)
    except WireParseError:
        return
    assert isinstance(decoded.method, str)
    assert isinstance(decoded.params, list)
    assert type(decoded.id) in (str, int)
    assert decoded.version in ("1.0", "2.0")


@FUZZ
@given(st.binary(max_size=300))
def test_json_decoder_survives_arbitrary_bytes(body: bytes) -> None:
    check_json_call(body)


@FUZZ
@given(JSON_MEMBERS | JSON_VALUES)
def test_json_decoder_survives_arbitrary_json(document: Any) -> None:
    try:
        body = orjson.dumps(document)
    except orjson.JSONEncodeError:
        return
    check_json_call(body)


@FUZZ
@given(
    st.lists(
        st.sampled_from(list('{}[]:,"'))
        | st.sampled_from(
            [
                '"jsonrpc"',
                '"2.0"',
                '"method"',
                '"m"',
                '"params"',
                '"id"',
                "1",
                "null",
                "true",
                "1e999",
                "-0",
                "\\u0000",
            ]
        ),
        max_size=40,
    )
)
def test_json_decoder_survives_token_soup(tokens: list[str]) -> None:
    check_json_call("".join(tokens).encode())


# ---- encode, then read back -------------------------------------------------------------------

AWKWARD_CHARS = st.sampled_from(
    [
        "\x00",
        "\x01",
        "\x1f",
        "\t",
        "\n",
        "\r",
        "<",
        ">",
        "&",
        '"',
        "'",
        "\ud800",
        "\udfff",
        "\ufffe",
        "\uffff",
    ]
)
STRINGS = st.text(st.characters() | AWKWARD_CHARS, max_size=12)
# Years before 1000 are left out: xapi's format has exactly four year digits.
DATETIMES = st.datetimes(min_value=datetime(1000, 1, 1), timezones=st.just(UTC)).map(from_datetime)
SCALARS = (
    STRINGS
    | st.integers(-(2**63), 2**63 - 1)
    | st.integers(-(2**31), 2**31 - 1).map(Int32)
    | st.booleans()
    | st.floats(allow_nan=False)
    | st.none()
    | DATETIMES
    | st.binary(max_size=10)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(STRINGS, inner, max_size=4)
    ),
    max_leaves=15,
)
DROPPED = {*(chr(c) for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)), "\ufffe", "\uffff"}


def xml_text(text: str) -> str:
    """A string as an XML parser returns it from our output: dropped characters gone and line
    ends normalised (xapi writes CR unescaped, so clients read it as LF)."""
    kept = "".join(c for c in text if c not in DROPPED and not "\ud800" <= c <= "\udfff")
    return kept.replace("\r\n", "\n").replace("\r", "\n")


def seen_by_sdk(value: Any) -> Any:
    if isinstance(value, DateTime):
        return xmlrpc.client.DateTime(str(value))
    if isinstance(value, str):
        return xml_text(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, Int32):
        return int(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return float(f"{value:.16g}")
    if isinstance(value, bytes):
        return xmlrpc.client.Binary(value)
    if isinstance(value, list | tuple):
        return [seen_by_sdk(item) for item in value]
    if isinstance(value, dict):
        return {xml_text(k): seen_by_sdk(v) for k, v in value.items()}
    return value


def seen_by_us(value: Any) -> Any:
    if isinstance(value, DateTime):
        return value
    if isinstance(value, bytes):
        return value
    if isinstance(value, list | tuple):
        return [seen_by_us(item) for item in value]
    if isinstance(value, dict):
        return {xml_text(k): seen_by_us(v) for k, v in value.items()}
    return seen_by_sdk(value)


@PROPERTY
@given(VALUES)
def test_xml_encoding_reads_back_in_the_python_sdk(value: Any) -> None:
    body = xcodec.encode_success(value)
    (reply,), _ = xmlrpc.client.loads(body)
    assert reply == {"Status": "Success", "Value": seen_by_sdk(value)}
    (bare,), _ = xmlrpc.client.loads(xcodec.encode_bare(value))
    assert bare == seen_by_sdk(value)


@PROPERTY
@given(st.lists(VALUES, max_size=3))
def test_xml_encoding_reads_back_in_our_decoder(params: list[Any]) -> None:
    body = b"".join(
        [
            b"<methodCall><methodName>m</methodName><params>",
            *(b"<param>" + encode_value_xml(p) + b"</param>" for p in params),
            b"</params></methodCall>",
        ]
    )
    assert xcodec.decode_call(body) == ("m", [seen_by_us(p) for p in params])


@PROPERTY
@given(st.lists(STRINGS, max_size=4))
def test_failure_descriptions_read_back(description: list[str]) -> None:
    (reply,), _ = xmlrpc.client.loads(xcodec.encode_failure(description))
    assert reply == {"Status": "Failure", "ErrorDescription": [xml_text(s) for s in description]}


# What the Python SDK can send: its marshaller refuses ints beyond 32 bits and passes control
# characters through unescaped (which no XML parser accepts), so those stay out.
SDK_STRINGS = st.text(
    st.characters(codec="utf-8", exclude_characters="\r\ufffe\uffff", exclude_categories=("Cc",))
    | st.sampled_from(["\t", "\n", "<", "&", ">", '"']),
    max_size=12,
)
SDK_VALUES = st.recursive(
    SDK_STRINGS
    | st.integers(-(2**31), 2**31 - 1)
    | st.booleans()
    | st.floats(allow_nan=False)
    | st.none()
    | st.datetimes(min_value=datetime(1000, 1, 1)).map(xmlrpc.client.DateTime)
    | st.binary(max_size=40).map(xmlrpc.client.Binary),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(SDK_STRINGS, inner, max_size=4),
    max_leaves=15,
)


def decoded_from_sdk(value: Any) -> Any:
    if isinstance(value, xmlrpc.client.DateTime):
        return value.value + "Z"
    if isinstance(value, xmlrpc.client.Binary):
        return value.data
    if isinstance(value, list):
        return [decoded_from_sdk(item) for item in value]
    if isinstance(value, dict):
        return {k: decoded_from_sdk(v) for k, v in value.items()}
    return value


@PROPERTY
@given(st.lists(SDK_VALUES, max_size=4))
def test_decodes_whatever_the_python_sdk_sends(params: list[Any]) -> None:
    body = xmlrpc.client.dumps(tuple(params), "VM.create", allow_none=True).encode()
    assert xcodec.decode_call(body) == ("VM.create", [decoded_from_sdk(p) for p in params])


def seen_in_json(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, list | tuple):
        return [seen_in_json(item) for item in value]
    if isinstance(value, dict):
        return {seen_in_json(k): seen_in_json(v) for k, v in value.items()}
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return None
    return value


@PROPERTY
@given(VALUES)
def test_json_encoding_reads_back(value: Any) -> None:
    assert orjson.loads(encode_value_json(value)) == seen_in_json(value)
    call = jsonrpc.JsonCall("m", [], 1, "2.0")
    assert orjson.loads(jsonrpc.encode_success(call, value)) == {
        "jsonrpc": "2.0",
        "result": seen_in_json(value),
        "id": 1,
    }
