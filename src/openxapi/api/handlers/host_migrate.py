"""host.migrate_receive: the dest map a sender's VM.migrate_send needs to reach this host.

As the reference: a new session for the caller (same identity, no password), the host's
PIF on the named network and its address (HOST_CANNOT_ATTACH_NETWORK,
PIF_HAS_NO_NETWORK_CONFIGURATION, INTERFACE_HAS_NO_IP), and the map
``SM`` / ``xenops`` (``http://ADDR/services/SM|xenops?session_id=S``), ``host``,
``session_id`` and ``master`` (``http://ADDR``). The URLs carry the port this server's
plain HTTP listens on; when that listener is bound to one address (loopback by default)
the URLs use that address, since the PIF's would not reach it.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.sessions import sessions_of
from openxapi.api.state import ServerState
from openxapi.errors import ApiError

WILDCARDS = ("", "*", "0.0.0.0", "::")


def _pif_address(state: ServerState, host: str, network: str) -> str:
    rec = state.record("network", network)
    pif = next((p for p in rec["PIFs"] if state.record("PIF", p)["host"] == host), None)
    if pif is None:
        raise ApiError("HOST_CANNOT_ATTACH_NETWORK", host, network)
    prec = state.record("PIF", pif)
    if prec["primary_address_type"] == "IPv6":
        mode = prec["ipv6_configuration_mode"]
        ips = [a.split("/")[0] for a in prec["IPv6"] if not a.lower().startswith("fe80")]
        ip = ips[0] if ips else ""
    else:
        mode, ip = prec["ip_configuration_mode"], prec["IP"]
    if not ip:
        if mode == "None":
            raise ApiError("PIF_HAS_NO_NETWORK_CONFIGURATION", pif)
        raise ApiError("INTERFACE_HAS_NO_IP", pif)
    return str(ip)


def _base_url(state: ServerState, pif_ip: str) -> str:
    """Where this server's API is reached: scheme, address and port."""
    cfg = state.config
    if cfg.http_port:
        scheme, port = "http", cfg.http_port
        bound = cfg.http_listen if cfg.http_listen is not None else (cfg.listen or "127.0.0.1")
    else:
        scheme, port = "https", cfg.https_port
        bound = cfg.listen
    address = pif_ip if bound in WILDCARDS else bound
    if ":" in address:
        address = f"[{address}]"
    default = 80 if scheme == "http" else 443
    return f"{scheme}://{address}" + ("" if port == default else f":{port}")


def _session_for(state: ServerState, ctx: CallContext) -> str:
    """A session as the caller, made without a password (the reference's login_no_password)."""
    rec = state.record("session", ctx.session) if ctx.session else {}
    sessions = sessions_of(state)
    return sessions.open(
        uname=str(rec.get("auth_user_name", "root")),
        originator=str(rec.get("originator", "")),
        is_superuser=bool(rec.get("is_local_superuser", ctx.is_superuser)),
        subject=str(rec.get("subject", "OpaqueRef:NULL")),
        sid=str(rec.get("auth_user_sid", "")),
        roles=ctx.roles,
        pool=bool(rec.get("pool", False)),
    )


@handler("host.migrate_receive")
async def migrate_receive(
    state: ServerState, ctx: CallContext, host: str, network: str, options: dict[str, str]
) -> Any:
    state.record("host", host)
    state.record("network", network)
    session = _session_for(state, ctx)
    try:
        base = _base_url(state, _pif_address(state, host, network))
    except ApiError:
        sessions_of(state).close(session)
        raise
    query = urllib.parse.urlencode({"session_id": session}, safe=":")
    await state.store.sync()
    return {
        "SM": f"{base}/services/SM?{query}",
        "host": host,
        "xenops": f"{base}/services/xenops?{query}",
        "session_id": session,
        "master": base,
    }
