"""Every message of the description is bound: a handler, a generated message, the explicit
not-implemented list, or Removed; and ``not_implemented.txt`` is exactly what is left."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from openxapi.api.generic import Generic
from openxapi.api.registry import handlers, not_implemented
from openxapi.spec.model import load
from tests.api.world import World

ROOT = Path(__file__).resolve().parents[2]
LIST = ROOT / "src" / "openxapi" / "api" / "not_implemented.txt"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_not_implemented", ROOT / "tools" / "gen_not_implemented.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_not_implemented_list_is_up_to_date() -> None:
    expected = _generator().unhandled()
    assert sorted(not_implemented()) == expected, (
        "run tools/gen_not_implemented.py: "
        f"stale {sorted(not_implemented() - set(expected))[:10]}, "
        f"missing {sorted(set(expected) - not_implemented())[:10]}"
    )
    lines = [ln for ln in LIST.read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines == expected


def test_every_message_is_bound() -> None:
    api = load()
    generic = Generic(api).build()
    custom = handlers()
    missing = not_implemented()
    for wire, msg in api.messages.items():
        kinds = [
            wire in custom,
            wire in generic and wire not in custom,
            wire in missing,
            msg.lifecycle == "removed",
        ]
        assert any(kinds), f"{wire} has no behaviour and is not listed"
        assert not (wire in missing and (wire in custom or wire in generic)), wire


def test_not_implemented_names_are_messages_that_are_not_removed() -> None:
    api = load()
    for wire in not_implemented():
        assert wire in api.messages, wire
        assert api.messages[wire].lifecycle != "removed", wire


def test_handlers_are_for_messages_of_the_description() -> None:
    api = load()
    assert set(handlers()) <= set(api.messages)


async def test_dispatcher_finds_nothing_unbound(world: World) -> None:
    assert world.dispatcher.unhandled == []
    assert set(world.dispatcher.bound) == set(world.api.messages)
