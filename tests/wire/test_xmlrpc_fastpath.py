"""The regular-expression path for all-string calls agrees with the full parser."""

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
        xmlrpc.client.dumps((1,), "a.b").encode(),
        xmlrpc.client.dumps(("a&b",), "a.b").encode(),
        xmlrpc.client.dumps(("caf\u00e9",), "a.b").encode(),
        b"<methodCall><methodName>a.b</methodName><params><param><value>]]></value></param>"
        b"</params></methodCall>",
        b"<!DOCTYPE x><methodCall><methodName>a.b</methodName><params/></methodCall>",
    ):
        assert _decode_simple(body) is None
