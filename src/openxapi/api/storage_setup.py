"""Storage at server start: SM records, the first start's SRs, and attaching the SRs.

A fresh server gets "Local storage" (a directory of qcow2 files under
``<data-dir>/sr/<uuid>``, or a simulated SR with ``--sim-storage``) as the pool's default
SR, and an "ISO library" reading ``--iso-dir`` (default ``<data-dir>/iso``). Operations
interrupted by a restart are cleared from ``current_operations``.
"""

from __future__ import annotations

import logging

from openxapi.api.context import CallContext
from openxapi.api.handlers.pbd import plug_pbd
from openxapi.api.handlers.sm import ensure_sm_records
from openxapi.api.handlers.sr import introduce_record
from openxapi.api.state import ServerState, new_uuid
from openxapi.api.storage_access import storage_of
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF

log = logging.getLogger("openxapi.storage")

LOCAL_SR_NAME = "Local storage"
ISO_SR_NAME = "ISO library"


def ensure_storage(state: ServerState) -> None:
    """Create what storage a fresh server has; tidy what a restart left (not awaited)."""
    storage = storage_of(state)
    store = state.store
    ensure_sm_records(state)
    for cls in ("SR", "VDI", "VBD"):
        for ref, rec in store.table(cls).items():
            if rec["current_operations"]:
                store.update(cls, ref, {"current_operations": {}})
    if not store.table("SR"):
        _first_srs(state)
    for sr in list(store.table("SR")):
        storage.refresh_sr(sr)


def _first_srs(state: ServerState) -> None:
    storage = storage_of(state)
    cfg = state.config
    sim = bool(getattr(cfg, "sim_storage", False))
    uuid = new_uuid()
    if sim:
        local_type, local_config = "dummy", {}
    else:
        local_type, local_config = "file", {"location": str(storage.ctx.sr_root / uuid)}
    local = introduce_record(
        storage,
        uuid,
        LOCAL_SR_NAME,
        "",
        local_type,
        "user",
        False,
        {},
        {"i18n-key": "local-storage", "i18n-original-value-name_label": LOCAL_SR_NAME},
    )
    storage.insert(
        "PBD",
        {
            "host": state.host_ref,
            "SR": local,
            "device_config": local_config,
            "currently_attached": True,
        },
    )
    iso_root = storage.ctx.iso_roots[0]
    iso = introduce_record(
        storage,
        "",
        ISO_SR_NAME,
        f"ISO images in {iso_root}",
        "iso",
        "iso",
        False,
        {},
    )
    storage.insert(
        "PBD",
        {
            "host": state.host_ref,
            "SR": iso,
            "device_config": {"location": str(iso_root)},
            "currently_attached": True,
        },
    )
    pool = state.pool_ref
    if pool != NULL_REF and state.store.get("pool", pool) is not None:
        state.store.update(
            "pool", pool, {"default_SR": local, "suspend_image_SR": local, "crash_dump_SR": local}
        )
    state.store.update("host", state.host_ref, {"suspend_image_sr": local, "crash_dump_sr": local})


async def start_storage(state: ServerState) -> None:
    """Attach (and scan) every SR whose PBD on this host was plugged; an SR that cannot be
    attached is left unplugged and logged, so the server still starts."""
    storage = storage_of(state)
    for pbd, rec in list(state.store.table("PBD").items()):
        if rec["host"] != state.host_ref or not rec["currently_attached"]:
            continue
        state.store.update("PBD", pbd, {"currently_attached": False})
        try:
            await plug_pbd(storage, pbd, CallContext())
        except ApiError as e:
            log.warning("SR %s could not be attached: %s", rec["SR"], e.description())
    await state.store.sync()
