"""Type strings of the description parse to trees and render back unchanged."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from openxapi.spec import types as T


def _type_strings() -> set[str]:
    text = resources.files("openxapi.spec").joinpath("data", "api.json").read_text()
    data: dict[str, Any] = json.loads(text)
    out: set[str] = set()
    for c in data["classes"].values():
        out.update(f["type"] for f in c["fields"])
        for m in c["messages"]:
            out.add(m["result"])
            out.update(p["type"] for p in m["params"])
    return out


TYPE_STRINGS = sorted(_type_strings())


def test_there_are_many_type_strings() -> None:
    assert len(TYPE_STRINGS) > 300


@pytest.mark.parametrize("text", TYPE_STRINGS)
def test_round_trip(text: str) -> None:
    t = T.parse(text)
    assert T.render(t) == text
    assert T.parse(T.render(t)) == t


def test_only_prose_types_are_opaque() -> None:
    opaque = [s for s in TYPE_STRINGS if isinstance(T.parse(s), T.Opaque)]
    assert opaque == ["an event batch"]


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("string", T.STRING),
        ("void", T.VOID),
        ("VM ref", T.Ref("VM")),
        ("enum vm_power_state", T.Enum("vm_power_state")),
        ("string set", T.Set(T.STRING)),
        ("(string -> string) map", T.Map(T.STRING, T.STRING)),
        (
            "(VM ref -> (string -> enum vm_operations) map) map",
            T.Map(T.Ref("VM"), T.Map(T.STRING, T.Enum("vm_operations"))),
        ),
        ("(string -> string set) map", T.Map(T.STRING, T.Set(T.STRING))),
        ("VM record", T.Record("VM")),
        ("int option", T.Option(T.INT)),
        ("(VM ref -> VM record) map", T.Map(T.Ref("VM"), T.Record("VM"))),
    ],
)
def test_parse(text: str, tree: T.Type) -> None:
    assert T.parse(text) == tree
    assert T.render(tree) == text


def test_malformed_map() -> None:
    with pytest.raises(ValueError):
        T.parse("(string string) map")
