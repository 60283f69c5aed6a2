"""The loaded API description: classes, field order, typed defaults, messages."""

from __future__ import annotations

from typing import Any

from openxapi.api.coerce import coerce
from openxapi.spec import types as T
from openxapi.spec.model import NULL_REF, empty_value, load
from openxapi.spec.values import EPOCH, DateTime

API = load()


def test_72_classes() -> None:
    assert len(API.classes) == 72
    for name in ("VM", "host", "pool", "session", "task", "event", "SR", "VDI", "role"):
        assert name in API.classes


def test_vm_field_order() -> None:
    names = [f.name for f in API.classes["VM"].fields]
    assert names[:4] == ["uuid", "allowed_operations", "current_operations", "name_label"]


def test_load_is_cached() -> None:
    assert load() is API


def test_api_version() -> None:
    assert (API.version_major, API.version_minor) == (2, 23)


def test_datetime_defaults_are_typed() -> None:
    count = 0
    for c in API.classes.values():
        for f in c.fields:
            if f.type == T.DATETIME:
                assert isinstance(f.default, DateTime), (c.name, f.name)
                count += 1
    assert count > 10


def _typed(v: Any, t: T.Type) -> bool:
    try:
        coerce(v, t, API.enums)
    except Exception:
        return False
    return True


def test_every_stored_field_default_fits_its_type() -> None:
    for c in API.db_classes():
        for f in c.fields:
            assert _typed(f.default, f.type), (c.name, f.name, f.default)


def test_empty_values() -> None:
    assert empty_value(T.DATETIME, API.enums) == EPOCH
    assert empty_value(T.Ref("VM"), API.enums) == NULL_REF
    assert empty_value(T.Enum("vm_power_state"), API.enums) == API.enums["vm_power_state"][0]
    assert empty_value(T.Set(T.STRING), API.enums) == []
    assert empty_value(T.Map(T.STRING, T.STRING), API.enums) == {}


def test_field_columns_use_double_underscores() -> None:
    vm = API.classes["VM"].field_map
    assert vm["name_label"].column == "name__label"
    assert vm["memory_static_max"].column == "memory__static_max"
    assert vm["power_state"].column == "power_state"


def test_messages() -> None:
    login = API.messages["session.login_with_password"]
    assert not login.session and not login.is_async
    assert [p.name for p in login.params] == ["uname", "pwd", "version", "originator"]
    assert login.required_count == 2
    assert [p.default for p in login.params[2:]] == ["1.1", ""]
    start = API.messages["VM.start"]
    assert start.session and start.is_async
    assert start.wire_name == "VM.start"
    assert API.message("VM.nope") is None


def test_db_classes() -> None:
    names = {c.name for c in API.db_classes()}
    assert "VM" in names and "session" in names
    assert "event" not in names and "data_source" not in names


def test_roles() -> None:
    assert {
        "pool-admin",
        "pool-operator",
        "vm-power-admin",
        "vm-admin",
        "vm-operator",
        "read-only",
    } <= set(API.roles)
    assert API.roles["pool-admin"].ref.startswith("OpaqueRef:")
