"""Host plugins and extensions through the XenAPI SDK against a real server started with
--plugin-dir and --extension-dir: plugins that call back with the caller's session,
failures as the SDK raises them, async plugin calls, extensions by call_extension and by
plain unknown message names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import XenAPI

from tests.e2e.test_events_sdk import close, login, vm_args
from tests.e2e.test_tasks_sdk import follow, value_of
from tests.plugin_scripts import ECHO, EXT_ECHO, EXT_FAIL, write_python, write_shell
from tests.serverproc import ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed file <_io.TextIOWrapper:ResourceWarning"),
]

#: A plugin that uses the session it is given to call back into the server.
CALLBACK = """
import xmlrpc.client


def this_host(session, args):
    proxy = xmlrpc.client.ServerProxy(args["url"])
    reply = proxy.session.get_this_host(session, session)
    return reply["Value"] if reply["Status"] == "Success" else repr(reply)


dispatch({"this_host": this_host})
"""


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("host-plugins")
    plugins, extensions = base / "plugins", base / "extensions"
    write_python(plugins, "echo", ECHO)
    write_python(plugins, "callback", CALLBACK)
    write_shell(plugins, "exit3", "echo out; echo err >&2; exit 3\n")
    write_python(extensions, "Test.echo", EXT_ECHO, plugin=False)
    write_python(extensions, "Test.test", EXT_FAIL, plugin=False)
    return plugins, extensions


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, dirs: tuple[Path, Path]
) -> Iterator[ServerProcess]:
    plugins, extensions = dirs
    srv = ServerProcess(
        Path(tmp_path_factory.mktemp("srv")),
        extra_args=["--plugin-dir", str(plugins), "--extension-dir", str(extensions)],
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def sdk(server: ServerProcess) -> Iterator[Any]:
    session = login(server.http_url, "e2e-host-plugins")
    yield session
    close(session)


def failure(call: Any, *args: Any) -> list[str]:
    with pytest.raises(XenAPI.Failure) as e:
        call(*args)
    return list(e.value.details)


def test_call_plugin_runs_the_directorys_plugin(sdk: Any) -> None:
    x = sdk.xenapi
    host = x.host.get_all()[0]
    assert x.host.call_plugin(host, "echo", "main", {"a": "b"}) == "args were: {'a': 'b'}"
    assert x.host.call_plugin(host, "echo", "session", {}) == sdk._session


def test_a_plugin_calls_back_with_the_callers_session(sdk: Any, server: ServerProcess) -> None:
    x = sdk.xenapi
    host = x.host.get_all()[0]
    assert x.host.call_plugin(host, "callback", "this_host", {"url": server.http_url}) == host


def test_plugin_failures_reach_the_client(sdk: Any) -> None:
    x = sdk.xenapi
    host = x.host.get_all()[0]
    assert failure(x.host.call_plugin, host, "nope", "main", {}) == [
        "XENAPI_MISSING_PLUGIN",
        "nope",
    ]
    assert failure(x.host.call_plugin, host, "../plugins/echo", "main", {}) == [
        "XENAPI_MISSING_PLUGIN",
        "../plugins/echo",
    ]
    assert failure(x.host.call_plugin, host, "echo", "boom", {}) == [
        "XENAPI_PLUGIN_FAILURE",
        "boom",
        "ValueError",
        "no good",
    ]
    assert failure(x.host.call_plugin, host, "exit3", "f", {}) == [
        "XENAPI_PLUGIN_FAILURE",
        "non-zero exit",
        "out\n",
        "err\n",
    ]
    assert failure(x.host.call_plugin, host, "echo", "main", {"k": 1})[0] == "FIELD_TYPE_ERROR"


def test_async_call_plugin_records_the_result_in_the_task(sdk: Any) -> None:
    x = sdk.xenapi
    host = x.host.get_all()[0]
    task = x.Async.host.call_plugin(host, "echo", "main", {"sleep": "0.2"})
    final = follow(x, task)[-1]
    assert final["status"] == "success"
    assert value_of(final["result"]) == "args were: {'sleep': '0.2'}"


def test_shipped_disk_space_plugin(sdk: Any) -> None:
    x = sdk.xenapi
    host = x.host.get_all()[0]
    assert x.host.call_plugin(host, "disk-space", "get_avail_host_disk_space", {}).isdigit()


def test_vm_call_host_plugin(sdk: Any) -> None:
    x = sdk.xenapi
    vm = x.VM.create(vm_args("plugin-vm"))
    assert failure(x.VM.call_host_plugin, vm, "echo", "main", {}) == [
        "VM_BAD_POWER_STATE",
        vm,
        "Running",
        "Halted",
    ]
    x.VM.start(vm, False, False)
    try:
        assert x.VM.call_host_plugin(vm, "echo", "main", {"v": "1"}) == "args were: {'v': '1'}"
    finally:
        x.VM.hard_shutdown(vm)
        x.VM.destroy(vm)


def test_extensions(sdk: Any) -> None:
    x = sdk.xenapi
    host = x.host.get_all()[0]
    pool = x.pool.get_all()[0]
    assert x.host.has_extension(host, "Test.echo") is True
    assert x.host.has_extension(host, "Test.none") is False
    assert x.pool.has_extension(pool, "Test.test") is True
    got = x.host.call_extension(host, '{"method": "Test.echo", "params": ["a", 1], "id": 7}')
    assert (got["name"], got["params"], got["argv"]) == ("Test.echo", ["a", "1"], ["--xmlrpc"])
    call = '{"method": "Test.test", "params": [], "id": 1}'
    assert failure(x.host.call_extension, host, call) == ["CODE", "a", "b"]
    call = '{"method": "Test.none", "params": [], "id": 1}'
    assert failure(x.host.call_extension, host, call) == ["MESSAGE_METHOD_UNKNOWN", "Test.none"]


def test_unknown_messages_reach_extensions(sdk: Any) -> None:
    x = sdk.xenapi
    got = x.Test.echo("hello")
    assert got["params"] == [sdk._session, "hello"]
    assert failure(x.Test.test) == ["CODE", "a", "b"]
    assert failure(x.Test.missing) == ["MESSAGE_METHOD_UNKNOWN", "Test.missing"]
