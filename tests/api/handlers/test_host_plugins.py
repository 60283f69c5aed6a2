"""host.call_plugin, VM.call_host_plugin and extensions: real programs run from the plugin
and extension directories, answered and failed as the reference answers and fails."""

from __future__ import annotations

import asyncio
import os
import time
import xmlrpc.client
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from openxapi.api import plugin_exec
from openxapi.api.context import CallContext
from openxapi.api.plugin_exec import SpawnFailure, run
from openxapi.api.plugin_xml import ocaml_escaped, plugin_call
from openxapi.api.vm_domains import stop_domains
from tests.api.handlers.vm_kit import bad_power, new_vm, rec, running_vm
from tests.api.world import World, open_world
from tests.plugin_scripts import ECHO, EXT_ECHO, EXT_FAIL, write_python, write_shell


@pytest.fixture
async def w(data_dir: Path, tmp_path: Path) -> AsyncIterator[World]:
    world = await open_world(
        data_dir, plugin_dir=tmp_path / "plugins", extension_dir=tmp_path / "extensions"
    )
    yield world
    await stop_domains(world.state)
    await world.close()


def plugins(w: World) -> Path:
    return w.config.plugins_path


def extensions(w: World) -> Path:
    return w.config.extensions_path


def host(w: World) -> str:
    return w.state.host_ref


async def plugin(w: World, name: str, fn: str, args: dict[str, str] | None = None) -> Any:
    return await w.call("host.call_plugin", w.root, host(w), name, fn, args or {})


async def plugin_fails(w: World, name: str, fn: str, args: dict[str, str] | None = None) -> Any:
    return await w.fail("host.call_plugin", w.root, host(w), name, fn, args or {})


# ---- the call a plugin receives -----------------------------------------------------------


def test_the_call_is_xmlrpc_with_the_session_and_a_struct_of_strings() -> None:
    assert plugin_call("main", "OpaqueRef:s", {"a": "1", "b": ""}) == (
        "<methodCall><methodName>main</methodName><params>"
        "<param><value>OpaqueRef:s</value></param>"
        "<param><value><struct><member><name>a</name><value>1</value></member>"
        "<member><name>b</name><value/></member></struct></value></param>"
        "</params></methodCall>"
    )
    assert "<value><struct/></value>" in plugin_call("f", "s", {})
    assert "<name>&lt;&amp;&gt;&quot;</name><value>x\ty</value>" in plugin_call(
        "f", "s", {'<&>"': "x\ty\x01"}
    )
    params, name = xmlrpc.client.loads(plugin_call("f", "s", {"k": "v", "e": ""}))
    assert (name, params) == ("f", ("s", {"k": "v", "e": ""}))


async def test_plugin_gets_the_call_the_callers_session_and_a_bare_environment(
    w: World,
) -> None:
    write_python(plugins(w), "echo", ECHO)
    assert await plugin(w, "echo", "main", {"a": "b"}) == "args were: {'a': 'b'}"
    assert await plugin(w, "echo", "session") == w.root
    assert await plugin(w, "echo", "call", {"k": "v"}) == plugin_call("call", w.root, {"k": "v"})
    assert await plugin(w, "echo", "env") == repr([("PATH", "/sbin:/usr/sbin:/bin:/usr/bin")])


def test_error_texts_escape_strings_as_the_reference_prints_them() -> None:
    assert ocaml_escaped('a"b\\c\né\x01\x7f') == 'a\\"b\\\\c\\n\\195\\169\\001\\127'


# ---- answers and failures -----------------------------------------------------------------


async def test_plugin_failures_are_relayed_as_the_dispatcher_reports_them(w: World) -> None:
    write_python(plugins(w), "echo", ECHO)
    assert await plugin_fails(w, "echo", "fail") == ["SR_BACKEND_FAILURE_1", "one", "two"]
    assert await plugin_fails(w, "echo", "boom") == [
        "XENAPI_PLUGIN_FAILURE",
        "boom",
        "ValueError",
        "no good",
    ]
    assert await plugin_fails(w, "echo", "nope") == ["UNKNOWN_XENAPI_PLUGIN_FUNCTION", "nope"]
    assert await plugin_fails(w, "echo", "number") == [
        "INTERNAL_ERROR",
        "XMLRPC.RunTimeTypeError(\"unbox: Element=int should contain 'string'\", _)",
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("missing", ["XENAPI_MISSING_PLUGIN", "missing"]),
        ("../plugins/echo", ["XENAPI_MISSING_PLUGIN", "../plugins/echo"]),
        ("sub/echo", ["XENAPI_MISSING_PLUGIN", "sub/echo"]),
        ("..", ["XENAPI_MISSING_PLUGIN", ".."]),
        ("", ["XENAPI_MISSING_PLUGIN", ""]),
        ("a\x00b", ["XENAPI_MISSING_PLUGIN", "a\x00b"]),
        ("sub", ["XENAPI_PLUGIN_FAILURE", "non-zero exit", "", ""]),
        ("plain", ["XENAPI_PLUGIN_FAILURE", "non-zero exit", "", ""]),
        ("no-interpreter", ["XENAPI_PLUGIN_FAILURE", "non-zero exit", "", ""]),
    ],
)
async def test_only_programs_listed_in_the_directory_run(
    w: World, name: str, expected: list[str]
) -> None:
    write_python(plugins(w), "echo", ECHO)
    write_python(plugins(w) / "sub", "echo", ECHO)
    (plugins(w) / "plain").write_text("#!/bin/sh\necho hi\n")  # not executable
    (plugins(w) / "no-interpreter").write_text("#!/nonexistent/python\n")
    (plugins(w) / "no-interpreter").chmod(0o755)
    assert await plugin_fails(w, name, "main") == expected


async def test_exit_status_and_output_are_reported_in_the_reference_order(w: World) -> None:
    write_shell(plugins(w), "exit3", "echo out; echo err >&2; exit 3\n")
    write_shell(plugins(w), "killed", "echo partial; kill -TERM $$\n")
    assert await plugin_fails(w, "exit3", "f") == [
        "XENAPI_PLUGIN_FAILURE",
        "non-zero exit",
        "out\n",
        "err\n",
    ]
    assert await plugin_fails(w, "killed", "f") == [
        "XENAPI_PLUGIN_FAILURE",
        "signal: SIGTERM",
        "partial\n",
        "",
    ]


async def test_unreadable_answers(w: World) -> None:
    write_shell(plugins(w), "text", "echo hello\n")
    write_shell(plugins(w), "silent", "exit 0\n")
    fault = (
        "<methodResponse><fault><value><struct>"
        "<member><name>faultCode</name><value><int>7</int></value></member>"
        "<member><name>faultString</name><value><string>bad</string></value></member>"
        "</struct></value></fault></methodResponse>"
    )
    write_shell(plugins(w), "fault", f"echo '{fault}'\n")
    write_shell(
        plugins(w),
        "bare",
        "echo '<methodResponse><params><param><value>x</value>"
        "</param></params></methodResponse>'\n",
    )
    assert await plugin_fails(w, "text", "f") == [
        "XENAPI_PLUGIN_FAILURE",
        "failed to parse plugin output",
        "hello\n",
        "expected root element line 1",
    ]
    assert await plugin_fails(w, "silent", "f") == [
        "XENAPI_PLUGIN_FAILURE",
        "failed to parse plugin output",
        "",
        "unexpected end of input line 1",
    ]
    assert await plugin_fails(w, "fault", "f") == ["XENAPI_PLUGIN_FAILURE", "fault", "7", "bad"]
    assert await plugin_fails(w, "bare", "f") == [
        "INTERNAL_ERROR",
        "XMLRPC.RunTimeTypeError(\"unbox: PCData=x should contain 'struct'\", _)",
    ]


async def test_a_plugin_is_called_with_bad_input_gets_xenapi_errors(w: World) -> None:
    assert (await w.fail("host.call_plugin", w.root, host(w), "echo", "main", {"a": 1}))[0] == (
        "FIELD_TYPE_ERROR"
    )
    assert await w.fail("host.call_plugin", w.root, "OpaqueRef:nope", "echo", "main", {}) == [
        "HANDLE_INVALID",
        "host",
        "OpaqueRef:nope",
    ]


async def test_call_plugin_is_for_pool_admins(w: World) -> None:
    await w.add_user("reader", ["read-only"])
    reader = await w.login_user("reader")
    err = await w.fail("host.call_plugin", reader, host(w), "echo", "main", {})
    assert err[:2] == ["RBAC_PERMISSION_DENIED", "host.call_plugin"]


# ---- running ------------------------------------------------------------------------------


async def test_plugins_run_concurrently_without_blocking_other_calls(w: World) -> None:
    write_python(plugins(w), "echo", ECHO)
    t0 = time.monotonic()
    slow = [asyncio.ensure_future(plugin(w, "echo", "main", {"sleep": "1"})) for _ in range(3)]
    await asyncio.sleep(0.2)
    quick = time.monotonic()
    await w.call("host.get_servertime", w.root, host(w))
    assert time.monotonic() - quick < 0.5
    assert await asyncio.gather(*slow) == ["args were: {'sleep': '1'}"] * 3
    assert time.monotonic() - t0 < 2.8


async def test_runaway_output_is_capped_and_the_plugin_killed(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plugin_exec, "STDOUT_LIMIT", 1 << 16)
    write_shell(plugins(w), "flood", "yes\n")
    err = await plugin_fails(w, "flood", "f")
    assert err[:2] == ["XENAPI_PLUGIN_FAILURE", "signal: SIGKILL"]
    assert len(err[2]) == 1 << 16
    assert "killed" in err[3]


async def test_a_flood_that_fills_every_buffer_still_ends(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Megabytes at once, then a long sleep: the program is killed past the cap, and the
    # call must still end (the rest of its output is read and dropped, so the pipe ends).
    monkeypatch.setattr(plugin_exec, "STDOUT_LIMIT", 1 << 12)
    write_shell(plugins(w), "burst", "head -c 8388608 /dev/zero; exec sleep 60\n")
    err = await asyncio.wait_for(plugin_fails(w, "burst", "f"), 20)
    assert err[:2] == ["XENAPI_PLUGIN_FAILURE", "signal: SIGKILL"]
    assert len(err[2]) == 1 << 12


async def test_a_cancelled_call_kills_the_program(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = write_shell(tmp_path, "sleeper", f"echo $$ > {pidfile}; exec sleep 30\n")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(run([str(script)]), 1.0)
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_a_program_that_cannot_start_is_a_non_zero_exit(tmp_path: Path) -> None:
    with pytest.raises(SpawnFailure) as e:
        await run([str(tmp_path / "absent")])
    assert (e.value.status, e.value.stdout, e.value.stderr) == ("non-zero exit", "", "")


# ---- shipped plugins ----------------------------------------------------------------------


async def test_disk_space_plugin_ships_and_a_local_plugin_of_that_name_wins(w: World) -> None:
    free = await plugin(w, "disk-space", "get_avail_host_disk_space")
    assert free.isdigit() and int(free) > 0
    assert await plugin(w, "disk-space", "check_patch_upload", {"size": "1"}) == "True"
    assert await plugin(w, "disk-space", "get_required_space", {"size": "5"}) == "5"
    assert await plugin_fails(w, "disk-space", "check_patch_upload") == [
        "XENAPI_PLUGIN_FAILURE",
        "check_patch_upload",
        "Exception",
        "MISSING_SIZE",
    ]
    assert await plugin_fails(w, "disk-space", "reboot") == [
        "UNKNOWN_XENAPI_PLUGIN_FUNCTION",
        "reboot",
    ]
    assert await plugin_fails(w, "disk_space", "get_avail_host_disk_space") == [
        "XENAPI_MISSING_PLUGIN",
        "disk_space",
    ]
    write_python(plugins(w), "disk-space", ECHO)
    assert await plugin(w, "disk-space", "main") == "args were: {}"


async def test_extauth_hook_calls_run_one_at_a_time(w: World) -> None:
    write_python(plugins(w), "extauth-hook", ECHO)
    t0 = time.monotonic()
    calls = [plugin(w, "extauth-hook", "main", {"sleep": "0.5"}) for _ in range(2)]
    await asyncio.gather(*calls)
    assert time.monotonic() - t0 >= 1.0


# ---- VM.call_host_plugin ------------------------------------------------------------------


async def test_call_host_plugin_runs_on_a_running_vms_host_with_args_as_given(w: World) -> None:
    write_python(plugins(w), "echo", ECHO)
    halted = await new_vm(w)
    assert await w.fail("VM.call_host_plugin", w.root, halted, "echo", "main", {}) == bad_power(
        halted, "Running", "Halted"
    )
    vm = await running_vm(w)
    got = await w.call("VM.call_host_plugin", w.root, vm, "echo", "main", {"x": "1"})
    assert got == "args were: {'x': '1'}"
    assert await w.call("VM.call_host_plugin", w.root, vm, "echo", "session", {}) == w.root
    assert await w.fail("VM.call_host_plugin", w.root, vm, "gone", "main", {}) == [
        "XENAPI_MISSING_PLUGIN",
        "gone",
    ]
    assert rec(w, "VM", vm)["current_operations"] == {}


async def test_call_host_plugin_holds_the_call_plugin_operation(w: World) -> None:
    write_python(plugins(w), "echo", ECHO)
    vm = await running_vm(w)
    task = await w.call("Async.VM.call_host_plugin", w.root, vm, "echo", "main", {"sleep": "1"})
    await asyncio.sleep(0.3)
    assert list(rec(w, "VM", vm)["current_operations"].values()) == ["call_plugin"]
    done = await w.wait_task(task)
    assert done["status"] == "success"
    assert "args were" in done["result"]
    assert rec(w, "VM", vm)["current_operations"] == {}


# ---- extensions ---------------------------------------------------------------------------


async def test_has_extension_follows_the_directory(w: World) -> None:
    pool = w.state.pool_ref
    assert await w.call("host.has_extension", w.root, host(w), "Test.echo") is False
    assert await w.call("pool.has_extension", w.root, pool, "Test.echo") is False
    write_python(extensions(w), "Test.echo", EXT_ECHO, plugin=False)
    assert await w.call("host.has_extension", w.root, host(w), "Test.echo") is True
    assert await w.call("pool.has_extension", w.root, pool, "Test.echo") is True
    assert await w.call("host.has_extension", w.root, host(w), "../extensions/Test.echo") is False


async def test_call_extension_hands_the_call_over_as_xmlrpc(w: World) -> None:
    write_python(extensions(w), "Test.echo", EXT_ECHO, plugin=False)
    call = '{"method": "Test.echo", "params": ["s", 5, true, null, {"k": [1.5]}], "id": 1}'
    got = await w.call("host.call_extension", w.root, host(w), call)
    assert got["argv"] == ["--xmlrpc"]
    assert got["name"] == "Test.echo"
    assert got["params"] == ["s", "5", True, None, {"k": [1.5]}]
    assert got["xml"] == (
        '<?xml version="1.0"?><methodCall><methodName>Test.echo</methodName><params>'
        "<param><value>s</value></param><param><value>5</value></param>"
        "<param><value><boolean>1</boolean></value></param>"
        "<param><value><nil/></value></param>"
        "<param><value><struct><member><name>k</name><value><array><data>"
        "<value><double>1.5</double></value></data></array></value></member></struct>"
        "</value></param></params></methodCall>"
    )


async def test_call_extension_failures(w: World) -> None:
    write_python(extensions(w), "Test.test", EXT_FAIL, plugin=False)
    write_shell(extensions(w), "Test.exit", "echo out; echo err >&2; exit 1\n")
    write_shell(extensions(w), "Test.text", "cat >/dev/null; echo hello\n")
    fault = (
        "<methodResponse><fault><value><struct>"
        "<member><name>faultCode</name><value><int>1</int></value></member>"
        "<member><name>faultString</name><value>oops</value></member>"
        "</struct></value></fault></methodResponse>"
    )
    write_shell(extensions(w), "Test.fault", f"cat >/dev/null; echo '{fault}'\n")

    async def ext_fails(call: str) -> list[str]:
        return await w.fail("host.call_extension", w.root, host(w), call)

    def call(name: str) -> str:
        return f'{{"method": "{name}", "params": [], "id": 0}}'

    assert await ext_fails(call("Test.test")) == ["CODE", "a", "b"]
    assert await ext_fails(call("Test.none")) == ["MESSAGE_METHOD_UNKNOWN", "Test.none"]
    path = str(extensions(w))
    assert await ext_fails(call("Test.exit")) == [
        "INTERNAL_ERROR",
        f"{path}/Test.exit",
        "non-zero exit",
        "out\n",
        "err\n",
    ]
    err = await ext_fails(call("Test.text"))
    assert err[:4] == [
        "INTERNAL_ERROR",
        f"{path}/Test.text",
        "failed to parse extension output",
        "hello\n",
    ]
    assert await ext_fails(call("Test.fault")) == [
        "EXTENSION_PROTOCOL_FAILURE",
        '["fault",1,"oops"]',
    ]


@pytest.mark.parametrize(
    ("call", "text"),
    [
        ("", 'Yojson.Json_error("Blank input data")'),
        ("[1]", 'Jsonrpc.Malformed_method_request("Invalid request body")'),
        ('{"params": []}', 'Jsonrpc.Malformed_method_request("Required field method is missing")'),
        (
            '{"method": "x", "params": []}',
            "Jsonrpc.Malformed_method_request(\"Invalid field 'id' in request body\")",
        ),
        (
            '{"method": "x", "params": 3, "id": 1}',
            "Jsonrpc.Malformed_method_request(\"Invalid field 'params' in request body\")",
        ),
        (
            '{"method": "x", "id": 1}',
            'Jsonrpc.Malformed_method_request("Required field params is missing")',
        ),
    ],
)
async def test_call_extension_refuses_malformed_calls(w: World, call: str, text: str) -> None:
    assert await w.fail("host.call_extension", w.root, host(w), call) == ["INTERNAL_ERROR", text]


async def test_unparseable_json_is_an_internal_error(w: World) -> None:
    err = await w.fail("host.call_extension", w.root, host(w), "{nope")
    assert err[0] == "INTERNAL_ERROR" and err[1].startswith("Yojson.Json_error(")


async def test_unknown_messages_go_to_the_extension_of_that_name(w: World) -> None:
    write_python(extensions(w), "Test.echo", EXT_ECHO, plugin=False)
    got = await w.call("Test.echo", w.root, "a", {"b": 2})
    assert got["name"] == "Test.echo"
    assert got["params"] == [w.root, "a", {"b": "2"}]
    assert await w.fail("Test.missing", w.root) == ["MESSAGE_METHOD_UNKNOWN", "Test.missing"]
    assert await w.fail("Test.echo", "OpaqueRef:bad") == ["SESSION_INVALID", "OpaqueRef:bad"]
    await w.add_user("reader", ["read-only"])
    reader = await w.login_user("reader")
    err = await w.fail("Test.echo", reader)
    assert err[:2] == ["RBAC_PERMISSION_DENIED", "host.call_extension"]


async def test_unix_socket_root_may_call_plugins(w: World) -> None:
    write_python(plugins(w), "echo", ECHO)
    ctx = CallContext(transport="unix")
    assert await w.call("host.call_plugin", w.root, host(w), "echo", "main", {}, ctx=ctx) == (
        "args were: {}"
    )
