"""VM.send_sysrq, VM.send_trigger and VM.call_plugin: lifecycle checks, then the
reference's answers for guests without agent control features, and the rate limit."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from openxapi.api.handlers.vm_plugins import ocaml_string_of_float
from openxapi.api.vm_domains import stop_domains
from tests.api.handlers.vm_kit import bad_power, new_vm, rec, running_vm
from tests.api.world import World

PLUGIN = "guest-agent-operation"


@pytest.fixture
async def w(world: World) -> AsyncIterator[World]:
    yield world
    await stop_domains(world.state)


def test_floats_print_as_ocaml_string_of_float() -> None:
    assert ocaml_string_of_float(10.0) == "10."
    assert ocaml_string_of_float(9.998731234567891) == "9.99873123457"
    assert ocaml_string_of_float(0.5) == "0.5"
    assert ocaml_string_of_float(1e-05) == "1e-05"


@pytest.mark.parametrize(("message", "arg"), [("send_sysrq", "b"), ("send_trigger", "nmi")])
async def test_sysrq_and_trigger_need_a_running_vm_then_are_not_implemented(
    w: World, message: str, arg: str
) -> None:
    halted = await new_vm(w)
    assert await w.fail(f"VM.{message}", w.root, halted, arg) == bad_power(
        halted, "running", "halted"
    )
    vm = await running_vm(w)
    assert await w.fail(f"VM.{message}", w.root, vm, arg) == ["NOT_IMPLEMENTED", message]
    assert rec(w, "VM", vm)["current_operations"] == {}


async def test_call_plugin_needs_a_running_vm_and_the_guest_agent_plugin(w: World) -> None:
    halted = await new_vm(w)
    assert await w.fail("VM.call_plugin", w.root, halted, PLUGIN, "request-rdp-on", {}) == (
        bad_power(halted, "running", "halted")
    )
    vm = await running_vm(w)
    assert await w.fail("VM.call_plugin", w.root, vm, "echo", "main", {}) == [
        "XENAPI_MISSING_PLUGIN",
        "echo",
    ]
    assert rec(w, "VM", vm)["current_operations"] == {}


@pytest.mark.parametrize("fn", ["request-rdp-on", "request-rdp-off"])
async def test_rdp_requests_need_the_guest_feature(w: World, fn: str) -> None:
    vm = await running_vm(w)
    msg = (
        f'The requested fn "{fn}" of plugin "{PLUGIN}" could not be executed for lack of '
        "guest agent control feature."
    )
    assert await w.fail("VM.call_plugin", w.root, vm, PLUGIN, fn, {}) == [
        "XENAPI_PLUGIN_FAILURE",
        "failed to execute fn",
        msg,
        msg,
    ]


async def test_unknown_function_is_a_plugin_failure(w: World) -> None:
    vm = await running_vm(w)
    msg = f'The requested fn "reboot" could not be found in plugin "{PLUGIN}".'
    assert await w.fail("VM.call_plugin", w.root, vm, PLUGIN, "reboot", {}) == [
        "XENAPI_PLUGIN_FAILURE",
        "failed to find fn",
        msg,
        msg,
    ]


async def test_calls_on_one_vm_are_rate_limited(w: World) -> None:
    vm = await running_vm(w)
    other = await running_vm(w)
    await w.fail("VM.call_plugin", w.root, vm, PLUGIN, "request-rdp-on", {})
    err = await w.fail("VM.call_plugin", w.root, vm, PLUGIN, "request-rdp-off", {})
    assert err[:3] == ["VM_CALL_PLUGIN_RATE_LIMIT", vm, "10."]
    assert re.fullmatch(r"[0-9]+\.[0-9]*(e-[0-9]+)?", err[3]) and 0 < float(err[3]) <= 10
    assert (await w.fail("VM.call_plugin", w.root, other, PLUGIN, "x", {}))[0] == (
        "XENAPI_PLUGIN_FAILURE"
    )


async def test_run_script_checks_in_the_reference_order(w: World) -> None:
    pool = next(iter(w.store.table("pool")))
    script = {"username": "u", "password": "p", "script": "echo hi"}
    vm = await running_vm(w)
    assert await w.fail("VM.call_plugin", w.root, vm, PLUGIN, "run-script", script) == [
        "FEATURE_RESTRICTED"
    ]
    await w.call("pool.add_to_other_config", w.root, pool, "allow_guest_agent_run_script", "true")
    vm = await running_vm(w)
    assert await w.fail("VM.call_plugin", w.root, vm, PLUGIN, "run-script", {"username": "u"}) == [
        "XENAPI_PLUGIN_FAILURE",
        "missing argument",
        "",
        "Argument password is required.",
    ]
    await w.add_user("operator", ["vm-operator"])
    user = await w.login_user("operator")
    vm = await running_vm(w)
    assert await w.fail("VM.call_plugin", user, vm, PLUGIN, "run-script", script) == [
        "RBAC_PERMISSION_DENIED",
        "vm.call_plugin",
        "No permission to run script, must have VM power admin role or higher.",
    ]
    vm = await running_vm(w)
    long = {**script, "script": "x" * 1025}
    assert await w.fail("VM.call_plugin", w.root, vm, PLUGIN, "run-script", long) == [
        "XENAPI_PLUGIN_FAILURE",
        "length restriction",
        "",
        "The script length must not exceed 1024 bytes",
    ]
    vm = await running_vm(w)
    assert await w.fail("VM.call_plugin", w.root, vm, PLUGIN, "run-script", script) == [
        "NOT_IMPLEMENTED",
        "run-script is not supported on the given VM (or it is still booting)",
    ]
    assert rec(w, "VM", vm)["current_operations"] == {}
