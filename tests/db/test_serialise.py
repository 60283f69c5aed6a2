"""The database strings that where-expressions compare against must be xapi's, byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from openxapi.db.serialise import converter_for, db_string, sexpr_string
from openxapi.spec import types as T
from openxapi.spec.model import load
from openxapi.spec.values import EPOCH, DateTime, Int32


@pytest.mark.parametrize(
    ("value", "type_text", "expected"),
    [
        ("", "string", ""),
        ('it\'s a \\ "test"', "string", 'it\'s a \\ "test"'),
        ("tab\there\x01", "string", "tab\there\x01"),
        (0, "int", "0"),
        (-42, "int", "-42"),
        (2**63 - 1, "int", "9223372036854775807"),
        (Int32(7), "int", "7"),
        (True, "bool", "true"),
        (False, "bool", "false"),
        (1.0, "float", "1"),
        (0.0, "float", "0"),
        (-0.0, "float", "-0"),
        (0.5, "float", "0.5"),
        (0.1, "float", "0.100000000000000006"),
        (1e17, "float", "100000000000000000"),
        (1e18, "float", "1e+18"),
        (1e20, "float", "1e+20"),
        (1e-5, "float", "1.00000000000000008e-05"),
        (float("inf"), "float", "inf"),
        (float("-inf"), "float", "-inf"),
        (float("nan"), "float", "nan"),
        (3, "float", "3"),
        (EPOCH, "datetime", "19700101T00:00:00Z"),
        (DateTime("20240102T03:04:05Z"), "datetime", "20240102T03:04:05Z"),
        ("2024-01-02T03:04:05Z", "datetime", "20240102T03:04:05Z"),
        ("2024-01-02T05:04:05+02:00", "datetime", "20240102T03:04:05Z"),
        (datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "datetime", "20240102T03:04:05Z"),
        ("Running", "enum vm_power_state", "Running"),
        ("OpaqueRef:NULL", "VM ref", "OpaqueRef:NULL"),
        (
            "OpaqueRef:8b6e8d6e-1d5c-4b0e-9d9e-0c2f7d1d3a11",
            "host ref",
            "OpaqueRef:8b6e8d6e-1d5c-4b0e-9d9e-0c2f7d1d3a11",
        ),
        ("", "VM ref", ""),
    ],
)
def test_scalars(value: Any, type_text: str, expected: str) -> None:
    assert db_string(value, T.parse(type_text)) == expected


def test_negative_nan_is_spelt_as_glibc_prints_it() -> None:
    assert db_string(-float("nan"), T.FLOAT) == "-nan"


@pytest.mark.parametrize(
    ("value", "type_text", "expected"),
    [
        ([], "string set", "()"),
        (["a"], "string set", "('a')"),
        (["a", "b"], "string set", "('a' 'b')"),
        (["b", "a", "b"], "string set", "('b' 'a' 'b')"),
        ([""], "string set", "('')"),
        (["with space", "(paren)"], "string set", "('with space' '(paren)')"),
        (["start", "clean_shutdown"], "enum vm_operations set", "('start' 'clean_shutdown')"),
        (["OpaqueRef:a", "OpaqueRef:b"], "VBD ref set", "('OpaqueRef:a' 'OpaqueRef:b')"),
        ([1, 20], "int set", "('1' '20')"),
        ({}, "(string -> string) map", "()"),
        ({"k": "v"}, "(string -> string) map", "(('k' 'v'))"),
        ({"b": "2", "a": "1"}, "(string -> string) map", "(('b' '2') ('a' '1'))"),
        ({"k": ""}, "(string -> string) map", "(('k' ''))"),
        ({"0": 0.5, "1": 1.0}, "(int -> float) map", "(('0' '0.5') ('1' '1'))"),
        ({"3": 4}, "(int -> int) map", "(('3' '4'))"),
        ({"start": "no"}, "(enum vm_operations -> string) map", "(('start' 'no'))"),
        ({"t1": "start"}, "(string -> enum vm_operations) map", "(('t1' 'start'))"),
        ({"x": "OpaqueRef:b"}, "(string -> blob ref) map", "(('x' 'OpaqueRef:b'))"),
    ],
)
def test_sets_and_maps(value: Any, type_text: str, expected: str) -> None:
    assert db_string(value, T.parse(type_text)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "'plain'"),
        ("it's", "'it\\'s'"),
        ("back\\slash", "'back\\\\slash'"),
        ("\\'", "'\\\\\\''"),
        ('"double"', "'\"double\"'"),
        ("tab\tnl\ncr\r", "'tab\tnl\ncr\r'"),
        ("caf\u00e9 \u2603 \U0001f600", "'caf\u00e9 \u2603 \U0001f600'"),
    ],
)
def test_atoms_escape_only_backslash_and_single_quote(text: str, expected: str) -> None:
    assert sexpr_string(text) == expected


@pytest.mark.parametrize(
    ("text", "kept"),
    [("ab\x01cd", "ab"), ("\x00", ""), ("a\x1fb", "a"), ("ok\x0bno", "ok"), ("x\ud800y", "x")],
)
def test_set_and_map_strings_stop_at_the_first_character_illegal_in_xml(
    text: str, kept: str
) -> None:
    assert db_string([text], T.parse("string set")) == f"('{kept}')"
    assert db_string({"k": text}, T.parse("(string -> string) map")) == f"(('k' '{kept}'))"
    assert db_string(text, T.STRING) == text


def test_quotes_inside_map_keys_and_values_are_escaped() -> None:
    value = {"it's": "C:\\path", "k": "'"}
    assert (
        db_string(value, T.parse("(string -> string) map"))
        == "(('it\\'s' 'C:\\\\path') ('k' '\\''))"
    )


def test_a_set_inside_a_map_is_rendered_then_quoted_again() -> None:
    t = T.parse("(int -> string set) map")
    assert db_string({"0": ["fpu", "it's"]}, t) == "(('0' '(\\'fpu\\' \\'it\\\\\\'s\\')'))"
    assert db_string({"1": []}, t) == "(('1' '()'))"


def test_optional_refs_are_sets_of_zero_or_one() -> None:
    t = T.Option(T.Ref("VM"))
    assert db_string(None, t) == "()"
    assert db_string("OpaqueRef:x", t) == "('OpaqueRef:x')"


def test_types_never_stored_are_refused() -> None:
    with pytest.raises(TypeError):
        db_string({}, T.Record("VM"))


def test_vm_defaults() -> None:
    vm = load().classes["VM"]
    rendered = {f.column: db_string(f.default, f.type) for f in vm.fields}
    assert rendered["name__label"] == ""
    assert rendered["power_state"] == "Halted"
    assert rendered["is_a_template"] == "false"
    assert rendered["has_vendor_device"] == "true"
    assert rendered["memory__static_max"] == "0"
    assert rendered["HVM__shadow_multiplier"] == "1"
    assert rendered["snapshot_time"] == "19700101T00:00:00Z"
    assert rendered["resident_on"] == "OpaqueRef:NULL"
    assert rendered["other_config"] == "()"
    assert rendered["tags"] == "()"
    assert rendered["actions__after_crash"] == "destroy"


def test_every_stored_field_default_renders() -> None:
    api = load()
    for cls in api.db_classes():
        for f in cls.fields:
            assert isinstance(db_string(f.default, f.type), str), (cls.name, f.name)


def test_converter_is_built_once_per_type() -> None:
    t = T.parse("(string -> string) map")
    assert converter_for(t) is converter_for(T.parse("(string -> string) map"))
    assert converter_for(t)({"a": "b"}) == db_string({"a": "b"}, t)
