"""XML-RPC codec: exact reply bytes, what the Python SDK's parser reads back, request decoding."""

from __future__ import annotations

import math
import re
import xmlrpc.client
from datetime import datetime
from typing import Any

import pytest

from openxapi.spec.values import DateTime, Int32
from openxapi.wire import Preencoded, WireParseError, encode_value_xml, preencode
from openxapi.wire.xmlrpc import (
    MAX_DEPTH,
    decode_call,
    encode_bare,
    encode_failure,
    encode_success,
)

HEAD = b'<?xml version="1.0"?><methodResponse><params><param>'
TAIL = b"</param></params></methodResponse>"


def sdk_loads(body: bytes) -> Any:
    """What the Python SDK (xmlrpc.client, use_datetime off) makes of a reply."""
    params, method = xmlrpc.client.loads(body)
    assert method is None
    assert len(params) == 1
    return params[0]


def call(*params: bytes, name: bytes = b"VM.start") -> bytes:
    joined = b"".join(b"<param>" + p + b"</param>" for p in params)
    return (
        b"<methodCall><methodName>"
        + name
        + b"</methodName><params>"
        + joined
        + b"</params></methodCall>"
    )


# ---- reply envelopes ------------------------------------------------------------------------


def test_success_envelope_is_exactly_xapis() -> None:
    assert encode_success("OpaqueRef:abc") == (
        HEAD + b"<value><struct><member><name>Status</name><value>Success</value></member>"
        b"<member><name>Value</name><value>OpaqueRef:abc</value></member>"
        b"</struct></value>" + TAIL
    )


def test_failure_envelope_is_exactly_xapis() -> None:
    assert encode_failure(["HANDLE_INVALID", "VM", "OpaqueRef:NULL"]) == (
        HEAD + b"<value><struct><member><name>Status</name><value>Failure</value></member>"
        b"<member><name>ErrorDescription</name><value><array><data>"
        b"<value>HANDLE_INVALID</value><value>VM</value><value>OpaqueRef:NULL</value>"
        b"</data></array></value></member></struct></value>" + TAIL
    )


def test_void_result_is_the_empty_string() -> None:
    out = encode_success("")
    assert b"<member><name>Value</name><value></value></member>" in out
    assert sdk_loads(out) == {"Status": "Success", "Value": ""}


def test_bare_reply_has_no_status_wrapper() -> None:
    out = encode_bare(["VM.start", "VM.get_all_records"])
    assert out == (
        HEAD + b"<value><array><data><value>VM.start</value><value>VM.get_all_records</value>"
        b"</data></array></value>" + TAIL
    )
    assert sdk_loads(out) == ["VM.start", "VM.get_all_records"]


def test_python_sdk_reads_success_and_failure() -> None:
    import XenAPI.XenAPI as sdk

    assert sdk._parse_result(sdk_loads(encode_success({"a": 1}))) == {"a": "1"}
    with pytest.raises(sdk.Failure) as info:
        sdk._parse_result(sdk_loads(encode_failure(["VM_BAD_POWER_STATE", "r", "halted", "x"])))
    assert info.value.details == ["VM_BAD_POWER_STATE", "r", "halted", "x"]


def test_failure_params_that_are_not_strings_are_stringified() -> None:
    out = encode_failure(["MEMORY_CONSTRAINT_VIOLATION", 5])  # type: ignore[list-item]
    assert sdk_loads(out)["ErrorDescription"] == ["MEMORY_CONSTRAINT_VIOLATION", "5"]


# ---- value encoding -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "xml"),
    [
        ("Halted", b"<value>Halted</value>"),
        ("", b"<value></value>"),
        (123, b"<value>123</value>"),
        (-7, b"<value>-7</value>"),
        (2**40, b"<value>1099511627776</value>"),
        (Int32(3), b"<value><i4>3</i4></value>"),
        (True, b"<value><boolean>1</boolean></value>"),
        (False, b"<value><boolean>0</boolean></value>"),
        (1.0, b"<value><double>1</double></value>"),
        (0.5, b"<value><double>0.5</double></value>"),
        (60.1, b"<value><double>60.1</double></value>"),
        (1e20, b"<value><double>1e+20</double></value>"),
        (0.1 + 0.2, b"<value><double>0.3</double></value>"),
        (-0.0, b"<value><double>-0</double></value>"),
        (math.inf, b"<value><double>inf</double></value>"),
        (-math.inf, b"<value><double>-inf</double></value>"),
        (math.nan, b"<value><double>nan</double></value>"),
        (
            DateTime("20250319T04:16:24Z"),
            b"<value><dateTime.iso8601>20250319T04:16:24Z</dateTime.iso8601></value>",
        ),
        (None, b"<value><nil/></value>"),
        (b"hi", b"<value><base64>aGk=</base64></value>"),
        ([], b"<value><array><data></data></array></value>"),
        (("a", 1), b"<value><array><data><value>a</value><value>1</value></data></array></value>"),
        ({}, b"<value><struct></struct></value>"),
        (
            {"b": "1", "a": ["x"]},
            b"<value><struct><member><name>b</name><value>1</value></member>"
            b"<member><name>a</name><value><array><data><value>x</value></data></array></value>"
            b"</member></struct></value>",
        ),
        ('<a & "b">\'', b"<value>&lt;a &amp; &quot;b&quot;&gt;'</value>"),
        ("a\x00b\x01c\x1fd\x7fe", b"<value>abcd\x7fe</value>"),
        ("t\tl\nc\r", b"<value>t\tl\nc\r</value>"),
        ("caf\u00e9 \u2603", "<value>caf\u00e9 \u2603</value>".encode()),
        ("x\ud800y\ufffez", b"<value>xyz</value>"),
        (
            {"<k&>": 1},
            b"<value><struct><member><name>&lt;k&amp;&gt;</name><value>1</value></member></struct></value>",
        ),
    ],
)
def test_value_encoding(value: Any, xml: bytes) -> None:
    assert encode_value_xml(value) == xml


def test_str_and_int_subclasses_encode_as_their_base() -> None:
    import enum

    class Colour(enum.StrEnum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 2

    assert encode_value_xml([Colour.RED, Level.HIGH]) == (
        b"<value><array><data><value>red</value><value>2</value></data></array></value>"
    )


def test_struct_member_values_of_every_kind_encode_in_place() -> None:
    record = {
        "s": "x",
        "i": 5,
        "b": False,
        "f": 2.5,
        "d": DateTime("19700101T00:00:00Z"),
        "n": None,
        "m": {"k": "v"},
        "r": Int32(1),
    }
    assert sdk_loads(HEAD + encode_value_xml(record) + TAIL) == {
        "s": "x",
        "i": "5",
        "b": False,
        "f": 2.5,
        "d": xmlrpc.client.DateTime("19700101T00:00:00Z"),
        "n": None,
        "m": {"k": "v"},
        "r": 1,
    }


def test_non_string_keys_are_refused() -> None:
    with pytest.raises(TypeError):
        encode_value_xml({1: "a"})


def test_unknown_types_are_refused() -> None:
    with pytest.raises(TypeError):
        encode_value_xml(object())


def test_preencoded_is_inserted_verbatim() -> None:
    frag = Preencoded(b"<value><struct></struct></value>", b"{}")
    out = encode_success({"OpaqueRef:1": frag, "OpaqueRef:2": frag})
    assert out.count(b"<value><struct></struct></value>") == 2
    assert sdk_loads(out)["Value"] == {"OpaqueRef:1": {}, "OpaqueRef:2": {}}


def test_preencoded_records_read_back_like_plain_ones() -> None:
    records = {f"OpaqueRef:{i}": {"name_label": f"vm<{i}>", "VCPUs_max": i} for i in range(3)}
    plain = encode_success(records)
    cached = encode_success({k: preencode(v) for k, v in records.items()})
    assert plain == cached


# ---- W5 / W6 traps ----------------------------------------------------------------------------


def test_no_whitespace_between_tags() -> None:
    value = {"a": [{"b": ""}, [], {}], "c": [None, True, 1.5, 7, Int32(2)], "": ""}
    out = encode_success(value) + encode_failure(["X"]) + encode_bare([value])
    assert re.search(rb">\s+<", out) is None
    assert b"\n" not in out


def test_empty_string_never_uses_a_string_tag() -> None:
    out = encode_success({"name_description": "", "tags": [""]})
    assert b"<string>" not in out
    assert out.count(b"<value></value>") == 2


def test_ints_arrive_in_the_sdk_as_strings() -> None:
    assert sdk_loads(encode_success([2**40, -(2**63), 2**63 - 1, 0]))["Value"] == [
        "1099511627776",
        "-9223372036854775808",
        "9223372036854775807",
        "0",
    ]


def test_sdk_types_for_every_value_kind() -> None:
    got = sdk_loads(
        encode_success(
            [
                "s",
                1.5,
                True,
                DateTime("20250319T04:16:24Z"),
                Int32(7),
                None,
                b"\x00\xff",
                {"k": []},
            ]
        )
    )["Value"]
    assert got[:3] == ["s", 1.5, True]
    assert isinstance(got[3], xmlrpc.client.DateTime)
    assert got[3].value == "20250319T04:16:24Z"
    assert got[4:6] == [7, None]
    assert isinstance(got[6], xmlrpc.client.Binary)
    assert got[6].data == b"\x00\xff"
    assert got[7] == {"k": []}


# ---- request decoding -------------------------------------------------------------------------


def test_decodes_every_type_the_python_sdk_sends() -> None:
    params = (
        "OpaqueRef:s",
        "",
        "  spaced\n text  ",
        "<&>\"'",
        2**31 - 1,
        -5,
        True,
        False,
        0.5,
        math.inf,
        None,
        xmlrpc.client.DateTime(datetime(2025, 3, 19, 4, 16, 24)),
        xmlrpc.client.Binary(b"\x00binary\xff" * 20),
        ["a", 1, [], {}],
        ("t",),
        {"name_label": "x", "VCPUs_max": "4", "nested": {"k": [None]}},
    )
    body = xmlrpc.client.dumps(params, "VM.create", allow_none=True).encode()
    name, got = decode_call(body)
    assert name == "VM.create"
    assert got == [
        "OpaqueRef:s",
        "",
        "  spaced\n text  ",
        "<&>\"'",
        2**31 - 1,
        -5,
        True,
        False,
        0.5,
        math.inf,
        None,
        "20250319T04:16:24Z",
        b"\x00binary\xff" * 20,
        ["a", 1, [], {}],
        ["t"],
        {"name_label": "x", "VCPUs_max": "4", "nested": {"k": [None]}},
    ]
    assert isinstance(got[11], DateTime)
    assert type(got[4]) is int


def test_decodes_what_the_sdk_sends_for_a_login() -> None:
    body = xmlrpc.client.dumps(
        ("root", "pw", "1.0", "probe"), "session.login_with_password", allow_none=True
    )
    assert decode_call(body.encode("utf-8")) == (
        "session.login_with_password",
        ["root", "pw", "1.0", "probe"],
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"<value>text</value>", "text"),
        (b"<value> keep  spaces </value>", " keep  spaces "),
        (b"<value>\n</value>", "\n"),
        (b"<value/>", ""),
        (b"<value></value>", ""),
        (b"<value><string/></value>", ""),
        (b"<value><string> s </string></value>", " s "),
        (b"<value>\n  <string>s</string>\n</value>", "s"),
        (b"<value><int>42</int></value>", 42),
        (b"<value><i4>-1</i4></value>", -1),
        (b"<value><i8>9223372036854775807</i8></value>", 2**63 - 1),
        (b"<value><int>+3</int></value>", 3),
        (b"<value><boolean>1</boolean></value>", True),
        (b"<value><boolean>0</boolean></value>", False),
        (b"<value><boolean>true</boolean></value>", False),
        (b"<value><double>30.0</double></value>", 30.0),
        (b"<value><double>1e3</double></value>", 1000.0),
        (b"<value><double>-inf</double></value>", -math.inf),
        (
            b"<value><dateTime.iso8601>20250319T04:16:24Z</dateTime.iso8601></value>",
            "20250319T04:16:24Z",
        ),
        (
            b"<value><dateTime.iso8601>2025-03-19T05:16:24+01:00</dateTime.iso8601></value>",
            "20250319T04:16:24Z",
        ),
        (b"<value><base64>aGk=\n</base64></value>", b"hi"),
        (b"<value><nil/></value>", None),
        (b"<value><array/></value>", []),
        (b"<value><array><data/></array></value>", []),
        (b"<value><struct/></value>", {}),
        (
            b"<value><array><data>\n  <value>a</value>\n  <value><int>1</int></value>\n"
            b"</data></array></value>",
            ["a", 1],
        ),
        (
            b"<value><struct>\n<member>\n<name>k</name>\n<value>v</value>\n</member>"
            b"<member><name></name><value/></member></struct></value>",
            {"k": "v", "": ""},
        ),
        (b"<value>a &amp; b &lt;&#65;&gt; <![CDATA[<raw>]]></value>", "a & b <A> <raw>"),
        ("<value>caf\u00e9</value>".encode(), "caf\u00e9"),
    ],
)
def test_value_decoding(value: bytes, expected: Any) -> None:
    assert decode_call(call(value)) == ("VM.start", [expected])


def test_params_may_be_missing_or_empty() -> None:
    assert decode_call(b"<methodCall><methodName>system.listMethods</methodName></methodCall>") == (
        "system.listMethods",
        [],
    )
    assert decode_call(b"<methodCall><methodName>x</methodName><params/></methodCall>") == ("x", [])


def test_xml_declaration_and_whitespace_are_accepted() -> None:
    body = (
        b"<?xml version='1.0' encoding='UTF-8'?>\n<methodCall>\n"
        b"  <methodName>VM.start</methodName>\n"
        b"  <params>\n    <param>\n      <value><string>a</string></value>\n    </param>\n"
        b"  </params>\n</methodCall>\n"
    )
    assert decode_call(body) == ("VM.start", ["a"])


def test_latin1_declared_encoding_is_honoured() -> None:
    body = b"<?xml version='1.0' encoding='ISO-8859-1'?>" + call(b"<value>caf\xe9</value>")
    assert decode_call(body) == ("VM.start", ["caf\u00e9"])


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml",
        b"<methodCall>",
        b"<methodCall><methodName>x</methodName><params></methodCall>",
        b"<methodResponse><params/></methodResponse>",
        b"<methodCall><params/></methodCall>",
        b"<methodCall><params/><methodName>x</methodName></methodCall>",
        b"<methodCall><methodName>x</methodName><methodName>y</methodName></methodCall>",
        b"<methodCall><methodName>x</methodName><params/><params/></methodCall>",
        b"<methodCall><methodName>x</methodName><params>junk</params></methodCall>",
        call(b""),
        call(b"<value>a</value><value>b</value>"),
        call(b"<value><unknown>1</unknown></value>"),
        call(b"<value><int>1</int><int>2</int></value>"),
        call(b"<value>text<int>1</int></value>"),
        call(b"<value><int>one</int></value>"),
        call(b"<value><int>1.5</int></value>"),
        call(b"<value><int></int></value>"),
        call(b"<value><int>9223372036854775808</int></value>"),
        call(b"<value><int>1_000</int></value>"),
        call(b"<value><int>\xd9\xa1</int></value>"),
        call(b"<value><double>x</double></value>"),
        call(b"<value><double>1_0</double></value>"),
        call("<value><double>\u0661.5</double></value>".encode()),
        call(b"<value><dateTime.iso8601>yesterday</dateTime.iso8601></value>"),
        call(b"<value><base64>a</base64></value>"),
        call(b"<value><base64>\xc3\xa9</base64></value>"),
        call(b"<value><nil>x</nil></value>"),
        call(b"<value><int><int>1</int></int></value>"),
        call(b"<value><array><value>a</value></array></value>"),
        call(b"<value><array><data/><data/></array></value>"),
        call(b"<value><array><data>text</data></array></value>"),
        call(b"<value><struct><value>a</value></struct></value>"),
        call(b"<value><struct><member><value>a</value><name>k</name></member></struct></value>"),
        call(b"<value><struct><member><name>k</name></member></struct></value>"),
        call(b"<value><struct><member><value>a</value></member></struct></value>"),
        call(b"<value><struct><member><name>k</name><value/><value/></member></struct></value>"),
        call(b"<value>&undefined;</value>"),
        call(b"<value>&#1;</value>"),
        call(b"<value>\xff\xfe</value>"),
        call(b"<value>\xc3</value>"),
        b"<?xml version='1.0' encoding='no-such-codec'?><methodCall/>",
        call(b"<value>a</value>") + b"<methodCall/>",
    ],
)
def test_malformed_calls_are_refused(body: bytes) -> None:
    with pytest.raises(WireParseError):
        decode_call(body)


def test_method_name_is_trimmed() -> None:
    assert decode_call(call(name=b"\n  VM.start  \n"))[0] == "VM.start"


# ---- hostile input ----------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<methodCall><methodName>x</methodName><params><param><value>&lol3;</value></param></params></methodCall>"""


@pytest.mark.parametrize(
    "body",
    [
        BILLION_LAUGHS,
        b'<!DOCTYPE m [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + call(b"<value>&e;</value>"),
        b'<!DOCTYPE m [<!ENTITY % p SYSTEM "http://127.0.0.1:1/x.dtd"> %p;]>' + call(b"<value/>"),
        b'<!DOCTYPE m SYSTEM "http://127.0.0.1:1/x.dtd">' + call(b"<value/>"),
        b"<!DOCTYPE methodCall>" + call(b"<value/>"),
    ],
)
def test_doctypes_and_entity_declarations_are_refused(body: bytes) -> None:
    with pytest.raises(WireParseError):
        decode_call(body)


def nested(depth: int, container: str = "array") -> bytes:
    if container == "array":
        opening, closing = b"<value><array><data>", b"</data></array></value>"
    else:
        opening = b"<value><struct><member><name>k</name>"
        closing = b"</member></struct></value>"
    return opening * depth + b"<value>leaf</value>" + closing * depth


def test_nesting_up_to_the_limit_is_accepted() -> None:
    _, params = decode_call(call(nested(MAX_DEPTH)))
    value = params[0]
    for _ in range(MAX_DEPTH):
        value = value[0]
    assert value == "leaf"
    _, params = decode_call(call(nested(MAX_DEPTH, "struct")))
    assert params[0]["k"]["k"]


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 10_000])
@pytest.mark.parametrize("container", ["array", "struct"])
def test_deeper_nesting_is_refused(depth: int, container: str) -> None:
    with pytest.raises(WireParseError):
        decode_call(call(nested(depth, container)))


def test_lone_preencoded_reply_equals_the_plain_encoding() -> None:
    record = {"name_label": "vm<1>", "VCPUs_max": 2, "tags": ["a"]}
    assert encode_success(preencode(record)) == encode_success(record)
