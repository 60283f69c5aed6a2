"""Typed unmarshalling of parameters: what each API type accepts from the wire (rulings §3)."""

from __future__ import annotations

from typing import Any

import pytest

from openxapi.api.coerce import CoercionError, coerce, coerce_param
from openxapi.errors import ApiError
from openxapi.spec import types as T
from openxapi.spec.model import load
from openxapi.spec.values import DateTime
from tests.api.world import World, create_args

ENUMS = load().enums


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (5, 5),
        ("5", 5),
        ("-17", -17),
        ("+3", 3),
        (" 42 ", 42),
        ("4294967296", 2**32),
        (str(2**63 - 1), 2**63 - 1),
        (str(-(2**63)), -(2**63)),
        (2**40, 2**40),
    ],
)
def test_int_from_int_or_decimal_string(given: Any, expected: int) -> None:
    got = coerce(given, T.INT, ENUMS)
    assert got == expected and type(got) is int


@pytest.mark.parametrize(
    "given", ["", "-", "1.5", "0x10", "1e3", "١٢", "12a", str(2**63), str(-(2**63) - 1), 2**64, 1.0]
)
def test_int_rejects(given: Any) -> None:
    with pytest.raises(CoercionError):
        coerce(given, T.INT, ENUMS)


def test_int_rejects_bool() -> None:
    with pytest.raises(CoercionError):
        coerce(True, T.INT, ENUMS)


def test_bool_only_from_bool() -> None:
    assert coerce(True, T.BOOL, ENUMS) is True
    assert coerce(False, T.BOOL, ENUMS) is False
    for bad in ("true", 1, 0, "1", None):
        with pytest.raises(CoercionError):
            coerce(bad, T.BOOL, ENUMS)


def test_float() -> None:
    assert coerce(1, T.FLOAT, ENUMS) == 1.0
    assert coerce("2.5", T.FLOAT, ENUMS) == 2.5
    assert coerce(0.25, T.FLOAT, ENUMS) == 0.25
    for bad in ("x", True, None, []):
        with pytest.raises(CoercionError):
            coerce(bad, T.FLOAT, ENUMS)


def test_string() -> None:
    assert coerce("x", T.STRING, ENUMS) == "x"
    got = coerce(DateTime("20240101T00:00:00Z"), T.STRING, ENUMS)
    assert got == "20240101T00:00:00Z" and type(got) is str
    for bad in (1, None, b"x", ["x"]):
        with pytest.raises(CoercionError):
            coerce(bad, T.STRING, ENUMS)


def test_enum_membership() -> None:
    t = T.Enum("vm_power_state")
    assert coerce("Running", t, ENUMS) == "Running"
    for bad in ("running", "", 1, None):
        with pytest.raises(CoercionError):
            coerce(bad, t, ENUMS)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("20240229T23:59:58Z", "20240229T23:59:58Z"),
        ("2024-02-29T23:59:58Z", "20240229T23:59:58Z"),
        ("20240229T23:59:58", "20240229T23:59:58Z"),
        ("2024-03-01T01:59:58+02:00", "20240229T23:59:58Z"),
        ("2024-02-29T23:59:58.123Z", "20240229T23:59:58Z"),
    ],
)
def test_datetime_both_forms(given: str, expected: str) -> None:
    got = coerce(given, T.DATETIME, ENUMS)
    assert got == expected and isinstance(got, DateTime)


def test_datetime_rejects() -> None:
    for bad in ("yesterday", "2024-13-01T00:00:00Z", 0, None):
        with pytest.raises(CoercionError):
            coerce(bad, T.DATETIME, ENUMS)


def test_sets_and_maps() -> None:
    assert coerce(["1", 2], T.Set(T.INT), ENUMS) == [1, 2]
    assert coerce({"a": "1"}, T.parse("(string -> int) map"), ENUMS) == {"a": 1}
    nested = T.parse("(string -> (string -> string) map) map")
    assert coerce({"a": {"b": "c"}}, nested, ENUMS) == {"a": {"b": "c"}}
    ops = T.parse("(string -> enum vm_operations) map")
    assert coerce({"t": "start"}, ops, ENUMS) == {"t": "start"}
    for t, bad in (
        (T.Set(T.INT), {"a": 1}),
        (T.Set(T.INT), ["x"]),
        (T.Set(T.INT), "1"),
        (T.parse("(string -> string) map"), [["a", "b"]]),
        (T.parse("(string -> string) map"), {"a": 1}),
        (ops, {"t": "fly"}),
    ):
        with pytest.raises(CoercionError):
            coerce(bad, t, ENUMS)


def test_refs_take_any_string() -> None:
    assert coerce("OpaqueRef:x", T.Ref("VM"), ENUMS) == "OpaqueRef:x"
    with pytest.raises(CoercionError):
        coerce(None, T.Ref("VM"), ENUMS)


def test_coerce_param_names_the_parameter() -> None:
    with pytest.raises(ApiError) as info:
        coerce_param("x", T.INT, "memory", ENUMS)
    assert info.value.description() == ["FIELD_TYPE_ERROR", "memory"]


def test_deeply_nested_value_is_a_type_error() -> None:
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    t: T.Type = T.STRING
    for _ in range(5000):
        t = T.Set(t)
    with pytest.raises(ApiError) as info:
        coerce_param(deep, t, "v", ENUMS)
    assert info.value.code == "FIELD_TYPE_ERROR"


# ---- through the dispatcher -----------------------------------------------------------------


async def test_int_setter_takes_a_decimal_string(world: World) -> None:
    vm = await world.call("VM.create", world.root, create_args(world.api, "VM"))
    await world.call("VM.set_user_version", world.root, vm, "-5")
    assert await world.call("VM.get_user_version", world.root, vm) == -5
    await world.call("VM.set_user_version", world.root, vm, str(2**40))
    assert await world.call("VM.get_user_version", world.root, vm) == 2**40
    assert await world.fail("VM.set_user_version", world.root, vm, True) == [
        "FIELD_TYPE_ERROR",
        "value",
    ]


async def test_bool_setter_refuses_strings(world: World) -> None:
    vm = await world.call("VM.create", world.root, create_args(world.api, "VM"))
    assert await world.fail("VM.set_is_a_template", world.root, vm, "true") == [
        "FIELD_TYPE_ERROR",
        "value",
    ]
    await world.call("VM.set_is_a_template", world.root, vm, True)
    assert await world.call("VM.get_is_a_template", world.root, vm) is True


async def test_enum_setter_checks_membership(world: World) -> None:
    vm = await world.call("VM.create", world.root, create_args(world.api, "VM"))
    assert await world.fail("VM.set_actions_after_shutdown", world.root, vm, "explode") == [
        "FIELD_TYPE_ERROR",
        "value",
    ]
    await world.call("VM.set_actions_after_shutdown", world.root, vm, "restart")
    assert await world.call("VM.get_actions_after_shutdown", world.root, vm) == "restart"


async def test_create_coerces_each_member(world: World) -> None:
    args = create_args(world.api, "VM", memory_static_max="1073741824", VCPUs_max=2)
    vm = await world.call("VM.create", world.root, args)
    rec = world.store.get("VM", vm)
    assert rec is not None
    assert rec["memory_static_max"] == 1073741824 and rec["VCPUs_max"] == 2
    bad = create_args(world.api, "VM", VCPUs_max="two")
    assert await world.fail("VM.create", world.root, bad) == ["FIELD_TYPE_ERROR", "VCPUs_max"]
