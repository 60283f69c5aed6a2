"""Disaster recovery: database replication to metadata VDIs and opening such databases.

SR.enable_database_replication keeps a copy of this pool's database on a metadata VDI of
the SR (found or made); VDI.open_database reads a copy back as a separate read-only
database and returns a session that reads it (see :mod:`openxapi.api.foreign_db`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.dr_replication import METADATA_VDI_SIZE, destroy_all_vbds, replication_of
from openxapi.api.dr_vdi import NoCopy, read_copy
from openxapi.api.foreign_db import foreign_databases
from openxapi.api.handlers.pool_features import assert_feature_enabled
from openxapi.api.handlers.vdi import create_vdi, delete_vdi
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.storage_access import storage_of
from openxapi.db import image
from openxapi.errors import ApiError

_CACHE = "dr_pool_uuids"


def _assert_supports_replication(state: ServerState, sr: str) -> None:
    """Every host has a plugged PBD of the SR (SR_NO_PBDS), and its driver keeps metadata
    (SR_OPERATION_NOT_SUPPORTED), as the reference checks."""
    rec = state.record("SR", sr)
    pbds = [p for p in rec["PBDs"] if state.store.get("PBD", p) is not None]
    hosts = {state.record("PBD", p)["host"] for p in pbds}
    if len(hosts) < len(state.store.table("host")):
        raise ApiError("SR_NO_PBDS", sr)
    for pbd in pbds:
        if not state.record("PBD", pbd)["currently_attached"]:
            raise ApiError("SR_NO_PBDS", sr)
    sms = [sm for sm in state.store.table("SM").values() if sm["type"] == rec["type"]]
    if not sms:
        raise ApiError("INTERNAL_ERROR", f"SR does not have corresponding SM record: {sr}")
    if "SR_METADATA" not in sms[0]["features"]:
        raise ApiError("SR_OPERATION_NOT_SUPPORTED", sr)


def _pool_metadata_vdis(state: ServerState, sr: str) -> list[str]:
    out = []
    for vdi in state.record("SR", sr)["VDIs"]:
        rec = state.store.get("VDI", vdi)
        if rec is not None and (rec["type"], rec["metadata_of_pool"]) == (
            "metadata",
            state.pool_ref,
        ):
            out.append(vdi)
    return out


async def _metadata_vdi(state: ServerState, ctx: CallContext, sr: str) -> str:
    """This pool's metadata VDI in the SR if one is big enough, else a new one."""
    for vdi in _pool_metadata_vdis(state, sr):
        if state.record("VDI", vdi)["virtual_size"] >= METADATA_VDI_SIZE:
            return vdi
    values = {
        "name_label": "Metadata for DR",
        "name_description": "Used for disaster recovery",
        "type": "metadata",
        "sm_config": {"type": "raw"},
        "metadata_latest": False,
        "metadata_of_pool": state.pool_ref,
    }
    return await create_vdi(storage_of(state), ctx, sr, METADATA_VDI_SIZE, values)


@handler("SR.assert_supports_database_replication")
async def assert_supports_database_replication(
    state: ServerState, ctx: CallContext, sr: str
) -> Any:
    _assert_supports_replication(state, sr)
    return ""


@handler("SR.enable_database_replication")
async def enable_database_replication(state: ServerState, ctx: CallContext, sr: str) -> Any:
    assert_feature_enabled(state, "DR")
    _assert_supports_replication(state, sr)
    vdi = await _metadata_vdi(state, ctx, sr)
    await state.store.sync()
    await replication_of(state).enable(vdi)
    return ""


@handler("SR.disable_database_replication")
async def disable_database_replication(state: ServerState, ctx: CallContext, sr: str) -> Any:
    """Stop replicating to this pool's metadata VDIs in the SR, and destroy them."""
    storage = storage_of(state)
    for vdi in _pool_metadata_vdis(state, sr):
        await replication_of(state).disable(vdi)
        await destroy_all_vbds(state, vdi)
        await delete_vdi(storage, ctx, vdi)
    await state.store.sync()
    return ""


def _remember(state: ServerState, vdi: str, generation: int, loaded: image.Loaded) -> str:
    """Cache the pool uuid of the database read from ``vdi``; returns it."""
    pools = [rec for cls, _ref, rec in loaded.objects if cls == "pool"]
    pool_uuid = str(pools[0]["uuid"]) if pools else ""
    cache = state.extras.setdefault(_CACHE, {})
    cache[vdi] = (generation, pool_uuid)
    return pool_uuid


async def _load_vdi(state: ServerState, vdi: str) -> tuple[int, image.Loaded]:
    """The database in a metadata VDI; COULD_NOT_IMPORT_DATABASE [reason] when unreadable."""
    try:
        header, data = await read_copy(storage_of(state), vdi)
        loaded = await asyncio.to_thread(image.read_bytes, state.api, data)
    except (NoCopy, image.ImageError) as e:
        raise ApiError("COULD_NOT_IMPORT_DATABASE", str(e)) from None
    except ApiError as e:
        raise ApiError("COULD_NOT_IMPORT_DATABASE", " ".join(e.description())) from None
    return header.generation, loaded


@handler("VDI.open_database")
async def open_database(state: ServerState, ctx: CallContext, self: str) -> Any:
    """A read-only session on the database stored in a metadata VDI."""
    rec = state.record("VDI", self)
    if rec["type"] != "metadata":
        raise ApiError("VDI_INCOMPATIBLE_TYPE", self, rec["type"])
    generation, loaded = await _load_vdi(state, self)
    _remember(state, self, generation, loaded)
    store = await image.read_only_store(state.api, loaded)
    session = foreign_databases(state).open_session(store, "disaster-recovery")
    await state.store.sync()
    return session


@handler("VDI.read_database_pool_uuid")
async def read_database_pool_uuid(state: ServerState, ctx: CallContext, self: str) -> Any:
    """The pool uuid of the database in a metadata VDI of another pool, from the cache
    (filled when such a database is read); "" when not known, as the reference."""
    rec = state.record("VDI", self)
    cache = state.extras.get(_CACHE, {})
    if self in cache:
        return cache[self][1]
    if rec["type"] != "metadata" or rec["metadata_of_pool"] == state.pool_ref:
        return ""
    try:
        generation, loaded = await _load_vdi(state, self)
    except ApiError:
        return ""
    return _remember(state, self, generation, loaded)


@handler("session.create_from_db_file")
async def create_from_db_file(state: ServerState, ctx: CallContext, filename: str) -> Any:
    """A read-only session on a database file (a store file of this server's format)."""
    path = Path(filename)
    if not filename or not path.is_file():
        raise ApiError("COULD_NOT_IMPORT_DATABASE", f"{filename}: no such file")
    try:
        loaded = await asyncio.to_thread(image.read_file, state.api, path)
    except image.ImageError as e:
        raise ApiError("COULD_NOT_IMPORT_DATABASE", str(e)) from None
    store = await image.read_only_store(state.api, loaded)
    session = foreign_databases(state).open_session(store, "db-from-file")
    await state.store.sync()
    return session
