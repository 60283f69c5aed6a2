"""VM.send_sysrq, VM.send_trigger and VM.call_plugin: requests passed to a running guest.

Each runs its lifecycle operation first, as the reference's forwarding layer does. The
reference answers NOT_IMPLEMENTED for sysrq and triggers; call_plugin knows one plugin,
"guest-agent-operation", is rate limited per VM, and needs guest agent features
(``feature-ts2`` for RDP, a xenstore batch-command channel for scripts) that the guests
of this server's backends do not offer, so its known functions fail as the reference's
do for such guests.
"""

from __future__ import annotations

import time
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF

#: The one plugin the reference serves through VM.call_plugin.
GUEST_AGENT_PLUGIN = "guest-agent-operation"
#: Seconds between two calls of VM.call_plugin on one VM (the reference's default).
CALL_PLUGIN_INTERVAL = 10.0
#: The longest script run-script accepts, in bytes.
SCRIPT_LIMIT = 1024
#: The pool other_config key that lets run-script through.
RUN_SCRIPT_KEY = "allow_guest_agent_run_script"


def ocaml_string_of_float(value: float) -> str:
    """A float as OCaml's ``string_of_float`` prints it: 12 significant digits, and a
    trailing "." when that leaves an integer ("10.", "9.99873123457")."""
    text = f"{value:.12g}"
    if all(c.isdigit() or c == "-" for c in text):
        text += "."
    return text


@handler("VM.send_sysrq")
async def send_sysrq(state: ServerState, ctx: CallContext, vm: str, key: str) -> Any:
    async with domains_of(state).operation(vm, "send_sysrq", ctx):
        pass
    await state.store.sync()
    raise ApiError("NOT_IMPLEMENTED", "send_sysrq")


@handler("VM.send_trigger")
async def send_trigger(state: ServerState, ctx: CallContext, vm: str, trigger: str) -> Any:
    async with domains_of(state).operation(vm, "send_trigger", ctx):
        pass
    await state.store.sync()
    raise ApiError("NOT_IMPLEMENTED", "send_trigger")


def _throttle(state: ServerState, vm: str) -> None:
    """At most one call per VM and interval; a call too soon says how long to wait."""
    latest: dict[str, int] = state.extras.setdefault("vm_call_plugin_latest", {})
    interval = int(CALL_PLUGIN_INTERVAL * 1e9)
    now = time.monotonic_ns()
    for old in [v for v, t in latest.items() if now - t > interval]:
        del latest[old]
    last = latest.get(vm)
    wait = last + interval - now if last is not None else 0
    if wait > 0:
        raise ApiError(
            "VM_CALL_PLUGIN_RATE_LIMIT",
            vm,
            ocaml_string_of_float(CALL_PLUGIN_INTERVAL),
            ocaml_string_of_float(wait / 1e9),
        )
    latest[vm] = now


def _plugin_failure(reason: str, msg: str) -> ApiError:
    return ApiError("XENAPI_PLUGIN_FAILURE", reason, msg, msg)


class _NoControlFeature(Exception):
    """The guest does not offer what the function needs."""


def _request_rdp(state: ServerState, vm: str, enabled: bool) -> str:
    """Needs the guest to have announced ``feature-ts2``; no backend here can then pass
    the request on, so such a guest gets the answer of a backend without it."""
    gm = state.record("VM", vm)["guest_metrics"]
    grec = state.store.get("VM_guest_metrics", gm) if gm != NULL_REF else None
    if grec is None or grec["other"].get("feature-ts2", "") in ("", "0"):
        raise _NoControlFeature
    raise ApiError("NOT_IMPLEMENTED", "request_rdp")


def _run_script(state: ServerState, ctx: CallContext, args: dict[str, str]) -> str:
    """The reference's checks in its order; the guest then lacks the batch-command
    channel, which the reference reports as NOT_IMPLEMENTED."""
    pool = state.record("pool", state.pool_ref)
    if pool["other_config"].get(RUN_SCRIPT_KEY) != "true":
        raise ApiError("FEATURE_RESTRICTED")
    for name in ("username", "password", "script"):
        if name not in args:
            raise ApiError(
                "XENAPI_PLUGIN_FAILURE", "missing argument", "", f"Argument {name} is required."
            )
    checkpoint_roles = state.api.messages["VM.checkpoint"].roles
    if not ctx.is_superuser and not ctx.roles.intersection(checkpoint_roles):
        raise ApiError(
            "RBAC_PERMISSION_DENIED",
            "vm.call_plugin",
            "No permission to run script, must have VM power admin role or higher.",
        )
    if len(args["script"].encode()) > SCRIPT_LIMIT:
        raise ApiError(
            "XENAPI_PLUGIN_FAILURE",
            "length restriction",
            "",
            "The script length must not exceed 1024 bytes",
        )
    raise ApiError(
        "NOT_IMPLEMENTED", "run-script is not supported on the given VM (or it is still booting)"
    )


def _dispatch(
    state: ServerState, ctx: CallContext, vm: str, plugin: str, fn: str, args: dict[str, str]
) -> str:
    """The reference's plugin call once the operation is running."""
    if plugin != GUEST_AGENT_PLUGIN:
        raise ApiError("XENAPI_MISSING_PLUGIN", plugin)
    _throttle(state, vm)
    try:
        if fn == "request-rdp-on":
            return _request_rdp(state, vm, True)
        if fn == "request-rdp-off":
            return _request_rdp(state, vm, False)
        if fn == "run-script":
            return _run_script(state, ctx, args)
        msg = f'The requested fn "{fn}" could not be found in plugin "{plugin}".'
        raise _plugin_failure("failed to find fn", msg)
    except _NoControlFeature:
        msg = (
            f'The requested fn "{fn}" of plugin "{plugin}" could not be executed for '
            "lack of guest agent control feature."
        )
        raise _plugin_failure("failed to execute fn", msg) from None


@handler("VM.call_plugin")
async def call_plugin(
    state: ServerState, ctx: CallContext, vm: str, plugin: str, fn: str, args: dict[str, str]
) -> Any:
    try:
        async with domains_of(state).operation(vm, "call_plugin", ctx):
            return _dispatch(state, ctx, vm, plugin, fn, args)
    finally:
        await state.store.sync()
