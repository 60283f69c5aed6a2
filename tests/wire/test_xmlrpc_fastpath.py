"""The regular-expression path for common calls agrees with the full parser."""

from __future__ import annotations

import xmlrpc.client

from hypothesis import given, settings
from hypothesis import strategies as st

from openxapi.wire.xmlrpc import _decode_full, _decode_simple, decode_call

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}\.[A-Za-z_][A-Za-z0-9_.]{0,30}", fullmatch=True)
texts = st.text(st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=40)


@settings(max_examples=300)
@given(names, st.lists(texts, max_size=5))
def test_fast_and_full_paths_agree(name: str, params: list[str]) -> None:
    body = xmlrpc.client.dumps(tuple(params), name).encode()
    try:
        expected = _decode_full(body)
    except Exception as e:  # the full parser refuses it: so must decode_call
        assert _decode_simple(body) is None, e
        return
    assert decode_call(body) == expected
    simple = _decode_simple(body)
    if simple is not None:
        assert simple == expected


def test_sdk_calls_take_the_fast_path() -> None:
    body = xmlrpc.client.dumps(("OpaqueRef:1", "OpaqueRef:2"), "host.get_record").encode()
    assert _decode_simple(body) == ("host.get_record", ["OpaqueRef:1", "OpaqueRef:2"])


def test_bare_and_tagged_strings() -> None:
    body = (
        b"<methodCall><methodName>a.b</methodName><params>"
        b"<param><value>bare</value></param><param><value><string></string></value></param>"
        b"<param><value></value></param></params></methodCall>"
    )
    assert _decode_simple(body) == ("a.b", ["bare", "", ""]) == _decode_full(body)


def test_other_shapes_fall_back() -> None:
    for body in (
        xmlrpc.client.dumps(({"k": "v"},), "a.b").encode(),
        xmlrpc.client.dumps(([1],), "a.b").encode(),
        xmlrpc.client.dumps(([["x"]],), "a.b").encode(),
        xmlrpc.client.dumps((None,), "a.b", allow_none=True).encode(),
        b"<methodCall><methodName>a.b</methodName><params><param><value><int>1</i4></value>"
        b"</param></params></methodCall>",
        b"<methodCall><methodName>a.b</methodName><params><param><value><int> 1</int></value>"
        b"</param></params></methodCall>",
        xmlrpc.client.dumps(("a&b",), "a.b").encode(),
        xmlrpc.client.dumps(("caf\u00e9",), "a.b").encode(),
        b"<methodCall><methodName>a.b</methodName><params><param><value>]]></value></param>"
        b"</params></methodCall>",
        b"<!DOCTYPE x><methodCall><methodName>a.b</methodName><params/></methodCall>",
    ):
        assert _decode_simple(body) is None


raw_texts = st.binary(max_size=12).filter(lambda b: b"<" not in b and b"&" not in b)
spaces = st.sampled_from([b"", b" ", b"\n", b"\r\n", b"\t", b"\x0b", b"\x0c", b"\x85"])


@settings(max_examples=400)
@given(st.lists(st.tuples(raw_texts, st.booleans(), spaces), max_size=3), spaces)
def test_raw_bodies_agree_or_fall_back(params: list[tuple[bytes, bool, bytes]], ws: bytes) -> None:
    """Hand-written bodies with any bytes in the text and odd spacing between tags: the fast
    path either gives the full parser's answer or leaves the body to it."""
    parts = [b"<?xml version='1.0'?>", ws, b"<methodCall>", ws, b"<methodName>m.n</methodName>"]
    parts += [ws, b"<params>"]
    for text, tagged, sep in params:
        value = b"<string>" + text + b"</string>" if tagged else text
        parts += [sep, b"<param>", sep, b"<value>", value, b"</value>", sep, b"</param>"]
    parts += [ws, b"</params>", ws, b"</methodCall>", ws]
    body = b"".join(parts)
    simple = _decode_simple(body)
    if simple is None:
        return
    assert simple == _decode_full(body)


def test_text_the_fast_path_leaves_to_the_parser() -> None:
    for text in (b"a>b", b"a\rb", b"a\x0bb", b"\x7f", b"a\x00"):
        body = b"<methodCall><methodName>a.b</methodName><params><param><value>%s</value>"
        body = body % text + b"</param></params></methodCall>"
        assert _decode_simple(body) is None


simple_values = st.one_of(
    texts,
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.booleans(),
    st.floats(allow_nan=False),
    st.lists(texts, max_size=4),
)


@settings(max_examples=300)
@given(names, st.lists(simple_values, max_size=5))
def test_mixed_calls_agree(name: str, params: list[object]) -> None:
    """Numbers, booleans and arrays of strings, as clients send them (event.from's params)."""
    body = xmlrpc.client.dumps(tuple(params), name).encode()
    try:
        expected = _decode_full(body)
    except Exception as e:
        assert _decode_simple(body) is None, e
        return
    assert decode_call(body) == expected
    simple = _decode_simple(body)
    if simple is not None:
        assert simple == expected


def test_event_from_takes_the_fast_path() -> None:
    body = xmlrpc.client.dumps(("OpaqueRef:s", ["vm", "host"], "12,34", 30.0), "event.from")
    assert _decode_simple(body.encode()) == (
        "event.from",
        ["OpaqueRef:s", ["vm", "host"], "12,34", 30.0],
    )


@given(
    st.sampled_from(["int", "i4", "i8", "double", "boolean"]),
    st.from_regex(r"[0-9a-zA-Z+.\-]{0,8}", fullmatch=True),
)
def test_scalar_text_agrees_or_fails_alike(tag: str, text: str) -> None:
    """Any number-like text in a typed scalar: the same value, or the same refusal."""
    body = (
        f"<methodCall><methodName>a.b</methodName><params><param><value><{tag}>{text}</{tag}>"
        "</value></param></params></methodCall>"
    ).encode()
    try:
        expected: object = _decode_full(body)
    except Exception as e:
        expected = repr(e)
    try:
        got: object = decode_call(body)
    except Exception as e:
        got = repr(e)
    # repr, so a NaN (which never equals itself) compares as the same value
    assert repr(got) == repr(expected)
