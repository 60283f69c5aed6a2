"""Preencoded values: one cached encoding per codec, embedded wherever a value may appear."""

from __future__ import annotations

import xmlrpc.client

import orjson

from openxapi.spec.values import DateTime
from openxapi.wire import Preencoded, encode_value_json, encode_value_xml, jsonrpc, preencode
from openxapi.wire import xmlrpc as xcodec

RECORD = {
    "uuid": "u",
    "power_state": "Halted",
    "VCPUs_max": 2,
    "last_boot": DateTime("19700101T00:00:00Z"),
}


def test_preencode_holds_both_encodings() -> None:
    cached = preencode(RECORD)
    assert cached == Preencoded(encode_value_xml(RECORD), encode_value_json(RECORD))
    assert cached.xml.startswith(b"<value><struct>")
    assert orjson.loads(cached.json)["VCPUs_max"] == 2


def test_cached_values_nest_anywhere() -> None:
    cached = preencode(RECORD)
    value = {"events": [{"snapshot": cached, "ref": "OpaqueRef:1"}, cached], "token": "t"}
    (reply,), _ = xmlrpc.client.loads(xcodec.encode_success(value))
    assert reply["Value"]["events"][0]["snapshot"]["VCPUs_max"] == "2"
    assert reply["Value"]["events"][1]["power_state"] == "Halted"
    call = jsonrpc.JsonCall("event.from", [], 1, "2.0")
    result = orjson.loads(jsonrpc.encode_success(call, value))["result"]
    assert result["events"][0]["snapshot"] == result["events"][1]
    assert result["events"][1]["last_boot"] == "19700101T00:00:00Z"
