"""A VM's console records follow its domain, as the reference keeps them from xenopsd.

A guest with a domain whose graphical console listens somewhere has exactly one ``rfb``
console, located at ``https://<host address>/console?uuid=<console uuid>``; a guest
without one has none. Consoles are matched by protocol and location up to the ``?``, so a
changed host address replaces them. The control domain's consoles are not touched here.
"""

from __future__ import annotations

from typing import Any

from openxapi.api.generic import Generic
from openxapi.api.state import ServerState, new_uuid
from openxapi.spec.model import NULL_REF
from openxapi.xenops.backend import DomainInfo

CONSOLE_PATH = "/console"


def console_base(state: ServerState) -> str:
    """``https://<host address>/console``: the guest console location without its query."""
    host = state.store.get("host", state.host_ref) if state.host_ref != NULL_REF else None
    address = str(host["address"]) if host is not None else ""
    if ":" in address and not address.startswith("["):
        address = f"[{address}]"  # an IPv6 literal
    return f"https://{address}{CONSOLE_PATH}"


def _generic(state: ServerState) -> Generic:
    g = state.extras["generic"]
    assert isinstance(g, Generic)
    return g


def _consoles(state: ServerState, vm: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for ref in vm["consoles"]:
        rec = state.store.get("console", ref)
        if rec is not None:
            out.append((ref, rec))
    return out


def sync_consoles(state: ServerState, vm_ref: str, info: DomainInfo | None) -> None:
    """Make the VM's console records match its domain (``info``; None when it has none).

    Writes nothing when they already match.
    """
    vm = state.store.get("VM", vm_ref)
    if vm is None or vm["is_control_domain"]:
        return
    base = console_base(state)
    wanted = info is not None and bool(info.vnc)
    kept = ""
    for ref, rec in _consoles(state, vm):
        matches = rec["protocol"] == "rfb" and rec["location"].split("?", 1)[0] == base
        if wanted and matches and not kept:
            kept = ref
        else:
            _generic(state).destroy_object(state, "console", ref)
    if wanted and not kept:
        uuid = new_uuid()
        ref = state.create(
            "console",
            {
                "uuid": uuid,
                "protocol": "rfb",
                "location": f"{base}?uuid={uuid}",
                "VM": vm_ref,
            },
        )
        Generic._link(state, "VM", "consoles", vm_ref, ref)
    listed = state.record("VM", vm_ref)["consoles"]
    live = [c for c in listed if state.store.get("console", c) is not None]
    if live != listed:  # refs to consoles that no longer exist
        state.store.update("VM", vm_ref, {"consoles": live})


def default_console(state: ServerState, vm_ref: str) -> str:
    """The VM's ``rfb`` console (the one a VM-addressed tunnel uses), or ""."""
    vm = state.store.get("VM", vm_ref)
    if vm is None:
        return ""
    for ref, rec in _consoles(state, vm):
        if rec["protocol"] == "rfb":
            return ref
    return ""


async def console_target(state: ServerState, console_ref: str) -> str:
    """Where the console's RFB server listens (``unix:PATH`` or ``HOST:PORT``), asked of
    the VM's domain; "" when the console, its VM or its domain is gone."""
    from openxapi.api.vm_domains import domains_of

    rec = state.store.get("console", console_ref)
    if rec is None or rec["protocol"] != "rfb":
        return ""
    vm = state.store.get("VM", rec["VM"])
    if vm is None or vm["is_control_domain"]:
        return ""
    backend = await domains_of(state).ready()
    info = await backend.info(vm["uuid"])
    if info is None or info.state not in ("running", "paused"):
        return ""
    return await backend.console(vm["uuid"])
