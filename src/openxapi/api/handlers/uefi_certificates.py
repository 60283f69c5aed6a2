"""The pool's and hosts' UEFI certificates (the auth files VMs' Secure Boot keys come from).

As in the reference, the certificates are set only as the pool's custom certificates, and
only when the server allows custom certificates; the older setters refuse.
"""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.uefi import active_auth_files, custom_allowed, sync_certificates
from openxapi.errors import ApiError


@handler("host.set_uefi_certificates")
async def host_set_uefi_certificates(
    state: ServerState, ctx: CallContext, host: str, value: str
) -> Any:
    state.record("host", host)
    raise ApiError(
        "OPERATION_NOT_ALLOWED",
        "To set UEFI certificates use: `Pool.set_custom_uefi_certificates`",
    )


@handler("pool.set_uefi_certificates")
async def pool_set_uefi_certificates(
    state: ServerState, ctx: CallContext, self: str, value: str
) -> Any:
    state.record("pool", self)
    raise ApiError(
        "OPERATION_NOT_ALLOWED",
        "Setting UEFI certificates is deprecated, please use `set_custom_uefi_certificates`",
    )


@handler("pool.set_custom_uefi_certificates")
async def pool_set_custom_uefi_certificates(
    state: ServerState, ctx: CallContext, self: str, value: str
) -> Any:
    """Custom certificates replace the defaults for VMs (empty: back to the defaults)."""
    state.record("pool", self)
    if not custom_allowed(state):
        raise ApiError(
            "OPERATION_NOT_ALLOWED",
            "Setting UEFI certificates is not possible when allow_custom_uefi_certs is false",
        )
    state.store.update("pool", self, {"custom_uefi_certificates": value})
    sync_certificates(state)
    await state.store.sync()
    return ""


@handler("pool.get_guest_secureboot_readiness")
async def pool_get_guest_secureboot_readiness(
    state: ServerState, ctx: CallContext, self: str
) -> Any:
    """Which auth files VMs would get: all four, all but dbx, or not enough."""
    state.record("pool", self)
    files = active_auth_files(state)
    if all(f"{n}.auth" in files for n in ("PK", "KEK", "db")):
        return "ready" if "dbx.auth" in files else "ready_no_dbx"
    return "not_ready"
