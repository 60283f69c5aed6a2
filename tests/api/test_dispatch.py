"""The dispatcher's order of checks, name forms, trailing defaults and async calls.

Expected behaviour: core-api.md §1.6 (order: name, arity, types, session, RBAC, behaviour;
Removed after the session check) and rulings §3 (FIELD_TYPE_ERROR names the parameter).
"""

from __future__ import annotations

import pytest

from openxapi.api.context import CallContext
from openxapi.api.registry import not_implemented
from openxapi.spec.model import NULL_REF
from tests.api.world import ROOT_PASSWORD, World, create_args, decode_xml_value, dummy

BAD_SESSION = "OpaqueRef:00000000-0000-0000-0000-000000000000"
VM_WRITERS = "pool-admin, pool-operator, vm-power-admin, vm-admin"


# ---- name lookup -----------------------------------------------------------------------------


async def test_unknown_name_without_params(world: World) -> None:
    assert await world.fail("VM.no_such_message") == [
        "MESSAGE_METHOD_UNKNOWN",
        "VM.no_such_message",
    ]


async def test_unknown_name_checks_the_first_param_as_a_session(world: World) -> None:
    assert await world.fail("VM.no_such_message", BAD_SESSION, 1) == [
        "SESSION_INVALID",
        BAD_SESSION,
    ]
    assert await world.fail("nonsense", 17) == ["SESSION_INVALID", "17"]


async def test_unknown_name_with_a_valid_session(world: World) -> None:
    assert await world.fail("VM.no_such_message", world.root) == [
        "MESSAGE_METHOD_UNKNOWN",
        "VM.no_such_message",
    ]


async def test_class_method_alias(world: World) -> None:
    assert await world.call("VM_get_all", world.root) == await world.call("VM.get_all", world.root)
    assert await world.call("host_get_all", world.root) == [world.state.host_ref]


async def test_no_alias_for_async(world: World) -> None:
    assert (await world.fail("Async.VM_create", world.root, {}))[0] == "MESSAGE_METHOD_UNKNOWN"
    assert (await world.fail("Async_VM_create", world.root, {}))[0] == "MESSAGE_METHOD_UNKNOWN"


async def test_system_list_methods(world: World) -> None:
    names = await world.call("system.listMethods")
    assert "VM.get_all" in names and "session.login_with_password" in names
    assert not any(n.startswith("Async.") for n in names)
    assert names == sorted(world.api.messages)


# ---- arity -----------------------------------------------------------------------------------


async def test_arity_counts_params_without_the_session(world: World) -> None:
    assert await world.fail("VM.get_record", world.root) == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH",
        "VM.get_record",
        "1",
        "0",
    ]
    assert await world.fail("VM.get_record", world.root, NULL_REF, "extra") == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH",
        "VM.get_record",
        "1",
        "2",
    ]


async def test_arity_of_a_message_with_defaults_counts_required_params(world: World) -> None:
    assert await world.fail("session.login_with_password", "root") == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH",
        "session.login_with_password",
        "2",
        "1",
    ]
    assert await world.fail("session.login_with_password", "a", "b", "c", "d", "e") == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH",
        "session.login_with_password",
        "2",
        "5",
    ]


async def test_arity_before_types_and_session(world: World) -> None:
    err = await world.fail("VM.get_record", 42, 1, 2)
    assert err[0] == "MESSAGE_PARAMETER_COUNT_MISMATCH"


async def test_arity_error_names_the_message_without_async(world: World) -> None:
    assert await world.fail("Async.VM.create", world.root) == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH",
        "VM.create",
        "1",
        "0",
    ]


async def test_no_params_at_all_for_a_session_message(world: World) -> None:
    assert await world.fail("VM.get_all") == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH",
        "VM.get_all",
        "0",
        "0",
    ]


# ---- types, then session, then RBAC ---------------------------------------------------------


async def test_types_before_session(world: World) -> None:
    assert await world.fail("VM.get_record", BAD_SESSION, 12) == ["FIELD_TYPE_ERROR", "self"]
    assert await world.fail("VM.set_name_label", BAD_SESSION, NULL_REF, None) == [
        "FIELD_TYPE_ERROR",
        "value",
    ]


async def test_session_after_types(world: World) -> None:
    assert await world.fail("VM.get_record", BAD_SESSION, NULL_REF) == [
        "SESSION_INVALID",
        BAD_SESSION,
    ]


async def test_non_string_session(world: World) -> None:
    assert await world.fail("VM.get_all", 5) == ["SESSION_INVALID", "5"]


async def test_deeply_nested_session_param(world: World) -> None:
    deep: list[object] = []
    for _ in range(5000):
        deep = [deep]
    assert await world.fail("VM.get_all", deep) == ["SESSION_INVALID", ""]
    assert await world.fail("no.such.method", deep) == ["SESSION_INVALID", ""]


async def test_rbac_after_session(world: World) -> None:
    await world.add_user("reader", ["read-only"])
    s = await world.login_user("reader")
    assert await world.call("VM.get_all", s) == await world.call("VM.get_all", world.root)
    err = await world.fail("VM.create", s, create_args(world.api, "VM"))
    assert err == [
        "RBAC_PERMISSION_DENIED",
        "VM.create",
        f"No permission in user session. (Roles with this permission: {VM_WRITERS})",
    ]
    # A bad session still wins over a denied permission.
    assert (await world.fail("VM.create", BAD_SESSION, {}))[0] == "SESSION_INVALID"


async def test_rbac_denies_root_only_messages_to_pool_admin(world: World) -> None:
    await world.add_user("admin", ["pool-admin"])
    s = await world.login_user("admin")
    root_only = next(
        w
        for w, m in world.api.messages.items()
        if not m.roles and m.session and m.lifecycle != "removed" and not m.params
    )
    assert (await world.fail(root_only, s))[0] == "RBAC_PERMISSION_DENIED"


# ---- removed and not implemented ------------------------------------------------------------


async def test_removed_message_checks_the_session_first(world: World) -> None:
    msg = world.api.messages["VM.get_is_snapshot_from_vmpp"]
    assert msg.lifecycle == "removed"
    assert await world.fail(msg.wire_name, BAD_SESSION, NULL_REF) == [
        "SESSION_INVALID",
        BAD_SESSION,
    ]
    assert await world.fail(msg.wire_name, world.root, NULL_REF) == ["MESSAGE_REMOVED"]


async def test_removed_message_checks_rbac_first(world: World) -> None:
    await world.add_user("reader", ["read-only"])
    s = await world.login_user("reader")
    assert world.api.messages["VM.set_protection_policy"].lifecycle == "removed"
    err = await world.fail("VM.set_protection_policy", s, NULL_REF, NULL_REF)
    assert err[0] == "RBAC_PERMISSION_DENIED"


async def test_unbuilt_custom_message_is_not_implemented(world: World) -> None:
    for wire in sorted(not_implemented())[:20]:
        msg = world.api.messages[wire]
        args = [dummy(p.type, world.api) for p in msg.params if not p.has_default]
        params = [world.root, *args] if msg.session else args
        assert await world.fail(wire, *params) == ["NOT_IMPLEMENTED", wire], wire


# ---- trailing defaults ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "originator"),
    [((), ""), (("1.0",), ""), (("1.0", "my-tool"), "my-tool")],
)
async def test_login_with_two_three_and_four_params(
    world: World, extra: tuple[str, ...], originator: str
) -> None:
    s = await world.call("session.login_with_password", "root", ROOT_PASSWORD, *extra)
    rec = world.store.get("session", s)
    assert rec is not None
    assert rec["originator"] == originator
    assert rec["is_local_superuser"] is True
    assert await world.call("session.get_originator", s, s) == originator


async def test_login_with_a_wrong_password(world: World) -> None:
    assert await world.fail("session.login_with_password", "root", "wrong") == [
        "SESSION_AUTHENTICATION_FAILED",
        "root",
        "Authentication failure",
    ]


# ---- async ----------------------------------------------------------------------------------


async def test_async_of_a_sync_only_message_is_a_fault(world: World) -> None:
    assert await world.fail("Async.VM.get_all", world.root) == [
        "Fault",
        "No async mode for this operation (rpc: VM.get_all)",
    ]
    assert await world.fail("Async.session.logout", world.root) == [
        "Fault",
        "No async mode for this operation (rpc: session.logout)",
    ]


async def test_async_success_records_an_xml_value_fragment(world: World) -> None:
    args = create_args(world.api, "VM", name_label="async-vm")
    task = await world.call("Async.VM.create", world.root, args)
    assert world.store.get("task", task) is not None
    rec = await world.wait_task(task)
    assert rec["status"] == "success"
    assert rec["name_label"] == "Async.VM.create"
    assert rec["progress"] == 1.0
    assert rec["result"].startswith("<value>") and rec["result"].endswith("</value>")
    vm = decode_xml_value(rec["result"])
    assert world.store.get("VM", vm)["name_label"] == "async-vm"  # type: ignore[index]
    assert await world.call("task.get_result", world.root, task) == rec["result"]
    session = world.store.get("session", world.root)
    assert session is not None and task in session["tasks"]


async def test_async_failure_records_error_info(world: World) -> None:
    task = await world.call("Async.VM.destroy", world.root, NULL_REF)
    rec = await world.wait_task(task)
    assert rec["status"] == "failure"
    assert rec["error_info"] == ["HANDLE_INVALID", "VM", NULL_REF]
    assert rec["result"] == ""


async def test_async_checks_session_before_making_a_task(world: World) -> None:
    before = set(world.store.table("task"))
    assert (await world.fail("Async.VM.destroy", BAD_SESSION, NULL_REF))[0] == "SESSION_INVALID"
    assert set(world.store.table("task")) == before


async def test_internal_transport_context_is_not_root(world: World) -> None:
    err = await world.fail(
        "session.login_with_password", "root", "x", ctx=CallContext(transport="http")
    )
    assert err[0] == "SESSION_AUTHENTICATION_FAILED"
