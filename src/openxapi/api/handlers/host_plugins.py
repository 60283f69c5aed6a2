"""Host plugins and API extensions: programs an administrator drops on the host.

``host.call_plugin`` runs ``<plugin dir>/<plugin>`` with the XML-RPC call (function,
caller's session, string arguments) as its one argument and reads a XenAPI-style answer
from its stdout, as the reference does with /etc/xapi.d/plugins; plugins shipped with the
server are found after the directory's own. ``VM.call_host_plugin`` does the same on the
host a running VM is on. Extensions in ``<extension dir>`` answer ``host.call_extension``
(a JSON-RPC call handed over as XML-RPC on stdin) and, for a pool admin, any message the
API does not know.
"""

from __future__ import annotations

import asyncio
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.extension_rpc import (
    ReadError,
    parse_json_call,
    raise_failure,
    read_response,
    xml_call,
)
from openxapi.api.plugin_exec import (
    SpawnFailure,
    builtin_plugin,
    find_program,
    python_argv,
    run,
)
from openxapi.api.plugin_xml import plugin_call, plugin_result
from openxapi.api.registry import handler
from openxapi.api.sessions import sessions_of
from openxapi.api.state import ServerState
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError

#: The external-authentication hook, whose calls the reference runs one at a time.
EXTAUTH_HOOK = "extauth-hook"


async def run_plugin(
    state: ServerState, session: str, plugin: str, fn: str, args: dict[str, str]
) -> str:
    """The reference's plugin call: find, run, read the answer."""
    path = find_program(state.config.plugins_path, plugin)
    call = plugin_call(fn, session, args)
    if path is not None:
        argv = [str(path), call]
    else:
        shipped = builtin_plugin(plugin)
        if shipped is None:
            raise ApiError("XENAPI_MISSING_PLUGIN", plugin)
        argv = python_argv(shipped, call)
    try:
        stdout, _ = await run(argv)
    except SpawnFailure as e:
        raise ApiError("XENAPI_PLUGIN_FAILURE", e.status, e.stdout, e.stderr) from None
    return plugin_result(stdout)


@handler("host.call_plugin")
async def call_plugin(
    state: ServerState, ctx: CallContext, host: str, plugin: str, fn: str, args: dict[str, str]
) -> Any:
    state.record("host", host)
    if plugin == EXTAUTH_HOOK:
        lock: asyncio.Lock = state.extras.setdefault("extauth_hook_lock", asyncio.Lock())
        async with lock:
            return await run_plugin(state, ctx.session, plugin, fn, args)
    return await run_plugin(state, ctx.session, plugin, fn, args)


@handler("VM.call_host_plugin")
async def call_host_plugin(
    state: ServerState, ctx: CallContext, vm: str, plugin: str, fn: str, args: dict[str, str]
) -> Any:
    """A running VM only; the plugin gets the arguments exactly as given."""
    rec = state.record("VM", vm)
    if rec["power_state"] != "Running":
        raise ApiError("VM_BAD_POWER_STATE", vm, "Running", rec["power_state"])
    try:
        async with domains_of(state).operation(vm, "call_plugin", ctx):
            return await run_plugin(state, ctx.session, plugin, fn, args)
    finally:
        await state.store.sync()


async def run_extension(state: ServerState, name: str, params: list[Any]) -> tuple[bool, Any]:
    """(True, value) or (False, error contents), as the reference's extension runner."""
    path = find_program(state.config.extensions_path, name)
    if path is None:
        return False, ["MESSAGE_METHOD_UNKNOWN", name]
    try:
        stdout, _ = await run([str(path), "--xmlrpc"], xml_call(name, params).encode())
    except SpawnFailure as e:
        return False, ["INTERNAL_ERROR", str(path), e.status, e.stdout, e.stderr]
    try:
        return read_response(stdout)
    except ReadError as e:
        return False, [
            "INTERNAL_ERROR",
            str(path),
            "failed to parse extension output",
            stdout,
            str(e),
        ]


@handler("host.call_extension")
async def call_extension(state: ServerState, ctx: CallContext, host: str, call: str) -> Any:
    state.record("host", host)
    name, params = parse_json_call(call)
    ok, contents = await run_extension(state, name, params)
    if ok:
        return contents
    raise raise_failure(contents)


@handler("host.has_extension")
async def has_extension(state: ServerState, ctx: CallContext, host: str, name: str) -> Any:
    state.record("host", host)
    return find_program(state.config.extensions_path, name) is not None


@handler("pool.has_extension")
async def pool_has_extension(state: ServerState, ctx: CallContext, self: str, name: str) -> Any:
    """Every host has it: here every host shares this server's extension directory."""
    state.record("pool", self)
    return find_program(state.config.extensions_path, name) is not None


async def call_unknown_message(
    state: ServerState, ctx: CallContext, name: str, params: list[Any]
) -> Any:
    """A message the API lacks, from a checked session: the extension of that name runs
    for callers allowed host.call_extension; without one, MESSAGE_METHOD_UNKNOWN."""
    sessions_of(state).authorise(
        state.api.messages["host.call_extension"], ctx, "host.call_extension"
    )
    ok, contents = await run_extension(state, name, params)
    if ok:
        return contents
    raise raise_failure(contents)
