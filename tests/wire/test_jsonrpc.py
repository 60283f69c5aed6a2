"""JSON-RPC codec: request rules of both versions and the exact reply shapes clients expect."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest

from openxapi.spec.values import DateTime, Int32
from openxapi.wire import Preencoded, WireParseError, encode_value_json, preencode
from openxapi.wire.jsonrpc import (
    MAX_DEPTH,
    JsonCall,
    decode_call,
    encode_bare_success,
    encode_failure,
    encode_success,
)

V1 = JsonCall("VM.get_all", ["OpaqueRef:s"], 7, "1.0")
V2 = JsonCall("VM.get_all", ["OpaqueRef:s"], "abc", "2.0")


# ---- decoding ---------------------------------------------------------------------------------


def test_v1_call() -> None:
    body = b'{"method":"session.login_with_password","params":["root","pw"],"id":1}'
    assert decode_call(body) == JsonCall("session.login_with_password", ["root", "pw"], 1, "1.0")


def test_v2_call_as_xen_api_sends_it() -> None:
    body = b'{"jsonrpc":"2.0","id":0,"method":"event.from","params":["s",["*"],"",60.1]}'
    assert decode_call(body) == JsonCall("event.from", ["s", ["*"], "", 60.1], 0, "2.0")


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("", []),
        (',"params":null', []),
        (',"params":[]', []),
        (',"params":[1,"2",true,null,{"a":[1.5]}]', [1, "2", True, None, {"a": [1.5]}]),
        (',"params":{"name_label":"x"}', [{"name_label": "x"}]),
    ],
)
def test_v2_params_forms(params: str, expected: list[Any]) -> None:
    body = f'{{"jsonrpc":"2.0","method":"m"{params},"id":"x"}}'.encode()
    assert decode_call(body).params == expected


def test_values_keep_their_json_types() -> None:
    body = b'{"method":"m","params":[4294967296,-1,0.5,"20250319T04:16:24Z",false],"id":1}'
    params = decode_call(body).params
    assert params == [4294967296, -1, 0.5, "20250319T04:16:24Z", False]
    assert [type(p) for p in params] == [int, int, float, str, bool]


def test_string_ids_are_echoed() -> None:
    assert decode_call(b'{"method":"m","params":[],"id":"req-1"}').id == "req-1"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"null",
        b"[]",
        b'"text"',
        b'[{"method":"m","params":[],"id":1}]',
        b'{"params":[],"id":1}',
        b'{"method":1,"params":[],"id":1}',
        b'{"method":null,"params":[],"id":1}',
        b'{"method":"m","id":1}',
        b'{"method":"m","params":null,"id":1}',
        b'{"method":"m","params":{},"id":1}',
        b'{"method":"m","params":"a","id":1}',
        b'{"jsonrpc":"2.0","method":"m","params":"a","id":1}',
        b'{"jsonrpc":"2.0","method":"m","params":3,"id":1}',
        b'{"jsonrpc":"1.0","method":"m","params":[],"id":1}',
        b'{"jsonrpc":2.0,"method":"m","params":[],"id":1}',
        b'{"jsonrpc":null,"method":"m","params":[],"id":1}',
        b'{"method":"m","params":[]}',
        b'{"method":"m","params":[],"id":null}',
        b'{"jsonrpc":"2.0","method":"m","params":[]}',
        b'{"method":"m","params":[],"id":1.5}',
        b'{"method":"m","params":[],"id":true}',
        b'{"method":"m","params":[],"id":[1]}',
        b'{"method":"m","params":[],"id":{}}',
        b'{"method":"m","params":[NaN],"id":1}',
        b'{"method":"m","params":["\xff"],"id":1}',
        b'{"method":"m","params":["\\ud800"],"id":1}',
        b'{"method":"m","params":[],"id":1} trailing',
    ],
)
def test_malformed_requests_are_refused(body: bytes) -> None:
    with pytest.raises(WireParseError):
        decode_call(body)


def nested(depth: int) -> bytes:
    return b'{"method":"m","params":[' + b"[" * depth + b'"leaf"' + b"]" * depth + b'],"id":1}'


def test_nesting_up_to_the_limit_is_accepted() -> None:
    value = decode_call(nested(MAX_DEPTH)).params[0]
    for _ in range(MAX_DEPTH):
        value = value[0]
    assert value == "leaf"
    objects = "".join('{"k":' for _ in range(MAX_DEPTH)) + "1" + "}" * MAX_DEPTH
    assert decode_call(f'{{"method":"m","params":[{objects}],"id":1}}'.encode()).params[0]["k"]


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100_000])
def test_deeper_nesting_is_refused(depth: int) -> None:
    with pytest.raises(WireParseError):
        decode_call(nested(depth))


# ---- encoding ---------------------------------------------------------------------------------


def test_v1_success_carries_a_null_error() -> None:
    assert encode_success(V1, ["OpaqueRef:a"]) == b'{"result":["OpaqueRef:a"],"error":null,"id":7}'


def test_v1_failure_is_a_plain_array() -> None:
    assert encode_failure(V1, ["SESSION_INVALID", "OpaqueRef:s"]) == (
        b'{"result":null,"error":["SESSION_INVALID","OpaqueRef:s"],"id":7}'
    )


def test_v2_success_has_no_error_key() -> None:
    out = encode_success(V2, "")
    assert out == b'{"jsonrpc":"2.0","result":"","id":"abc"}'
    assert "error" not in json.loads(out)


def test_v2_failure_is_an_error_object_with_code_1() -> None:
    assert encode_failure(V2, ["HANDLE_INVALID", "VM", "OpaqueRef:NULL"]) == (
        b'{"jsonrpc":"2.0","error":{"code":1,"message":"HANDLE_INVALID",'
        b'"data":["VM","OpaqueRef:NULL"]},"id":"abc"}'
    )
    assert encode_failure(V2, ["MESSAGE_REMOVED"]) == (
        b'{"jsonrpc":"2.0","error":{"code":1,"message":"MESSAGE_REMOVED","data":[]},"id":"abc"}'
    )


def test_failure_params_that_are_not_strings_are_stringified() -> None:
    out = encode_failure(V1, ["VM_TOO_MANY_VCPUS", 3])  # type: ignore[list-item]
    assert json.loads(out)["error"] == ["VM_TOO_MANY_VCPUS", "3"]


def test_bare_success_is_an_ordinary_result() -> None:
    assert encode_bare_success(V2, ["VM.start"]) == encode_success(V2, ["VM.start"])
    assert encode_bare_success(V1, ["VM.start"]) == encode_success(V1, ["VM.start"])


def test_value_conversions() -> None:
    value = {
        "z_first": 1,
        "a_second": DateTime("20250319T04:16:24Z"),
        "count": Int32(3),
        "big": 2**63 - 1,
        "f": 1.0,
        "half": 0.5,
        "nan": math.nan,
        "inf": math.inf,
        "bytes": b"hi",
        "tuple": ("a", None),
        "flag": False,
    }
    assert encode_value_json(value) == (
        b'{"z_first":1,"a_second":"20250319T04:16:24Z","count":3,"big":9223372036854775807,'
        b'"f":1.0,"half":0.5,"nan":null,"inf":null,"bytes":"aGk=","tuple":["a",null],'
        b'"flag":false}'
    )


def test_lone_surrogates_are_replaced_rather_than_failing() -> None:
    out = encode_success(V2, {"k\ud800": ["x\udfff"]})
    assert json.loads(out)["result"] == {"k?": ["x?"]}


def test_unknown_types_are_refused() -> None:
    with pytest.raises(TypeError):
        encode_value_json(object())


def test_preencoded_is_inserted_verbatim() -> None:
    frag = Preencoded(b"<value></value>", b'{"cached":true}')
    assert encode_success(V1, {"OpaqueRef:1": frag}) == (
        b'{"result":{"OpaqueRef:1":{"cached":true}},"error":null,"id":7}'
    )


def test_preencoded_records_read_back_like_plain_ones() -> None:
    records = {f"OpaqueRef:{i}": {"name_label": f"vm {i}", "memory": 2**33} for i in range(3)}
    cached = {k: preencode(v) for k, v in records.items()}
    assert encode_success(V2, cached) == encode_success(V2, records)
    assert orjson.loads(encode_success(V2, cached))["result"] == records
