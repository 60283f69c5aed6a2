"""VDI: create, destroy, clone, snapshot, copy, resize, introduce, forget, the setters."""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.handlers.pbd import constructor_args
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.storage_access import Storage, live_hook, storage_of
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF
from openxapi.spec.values import DateTime, now
from openxapi.storage.paths import UUID_RE
from openxapi.storage.transfer import copy_disk

#: Fields a clone or snapshot takes from its source.
INHERITED = (
    "name_label",
    "name_description",
    "type",
    "sharable",
    "other_config",
    "xenstore_data",
    "on_boot",
    "allow_caching",
    "tags",
)
#: Fields VDI.copy takes from its source.
COPIED = (
    "name_label",
    "name_description",
    "type",
    "sharable",
    "other_config",
    "xenstore_data",
    "tags",
)


def _copy(v: Any) -> Any:
    return v.copy() if isinstance(v, (dict, list)) else v


async def create_vdi(
    storage: Storage, ctx: CallContext, sr: str, size: int, values: dict[str, Any]
) -> str:
    """A new disk in ``sr`` and its record (``values`` are the record's other fields)."""
    state = storage.state
    state.record("SR", sr)
    drv = await storage.driver(sr)
    async with storage.operation(
        "SR", sr, "vdi_create", ctx, lambda: storage.check_sr(sr, "vdi_create")
    ):
        with storage.errors(sr):
            info = await drv.vdi_create(size, values.get("name_label", ""))
        ref = storage.new_vdi(sr, info, **values)
        storage.add_allocation(sr, info.virtual_size)
        await storage.refresh_capacity(sr, drv)
    return ref


@handler("VDI.create")
async def create(state: ServerState, ctx: CallContext, args: dict[str, Any]) -> Any:
    storage = storage_of(state)
    values = constructor_args(state, "VDI", args)
    if values["type"] == "cbt_metadata":
        raise ApiError("VDI_INCOMPATIBLE_TYPE", "", "cbt_metadata")
    sr = values.pop("SR")
    size = values.pop("virtual_size")
    if size < 0:
        raise ApiError("INVALID_VALUE", "virtual_size", str(size))
    ref = await create_vdi(storage, ctx, sr, size, values)
    await state.store.sync()
    return ref


async def delete_vdi(storage: Storage, ctx: CallContext, vdi: str) -> None:
    """Delete the disk and its record (with the VBDs that point at it)."""
    state = storage.state
    rec = state.record("VDI", vdi)
    sr = rec["SR"]
    if not rec["managed"]:
        raise ApiError("VDI_NOT_MANAGED", vdi)
    drv = await storage.driver(sr)
    async with (
        storage.operation("VDI", vdi, "destroy", ctx, lambda: storage.check_vdi(vdi, "destroy")),
        storage.operation(
            "SR", sr, "vdi_destroy", ctx, lambda: storage.check_sr(sr, "vdi_destroy")
        ),
    ):
        with storage.errors(sr, vdi):
            await drv.vdi_delete(rec["location"])
        size = rec["virtual_size"]
        storage.destroy_vdi_record(vdi)
        storage.add_allocation(sr, -size)
        await storage.refresh_capacity(sr, drv)


@handler("VDI.destroy")
async def destroy(state: ServerState, ctx: CallContext, self: str) -> Any:
    await delete_vdi(storage_of(state), ctx, self)
    await state.store.sync()
    return ""


@handler("VDI.forget")
async def forget(state: ServerState, ctx: CallContext, vdi: str) -> Any:
    storage = storage_of(state)
    rec = state.record("VDI", vdi)
    async with storage.operation(
        "VDI", vdi, "forget", ctx, lambda: storage.check_vdi(vdi, "forget")
    ):
        storage.destroy_vdi_record(vdi)
    if state.store.get("SR", rec["SR"]) is not None:
        storage.recount_allocation(rec["SR"])
        storage.refresh_sr(rec["SR"])
    await state.store.sync()
    return ""


async def fork_vdi(storage: Storage, ctx: CallContext, vdi: str, op: str) -> str:
    """Clone or snapshot: a new VDI sharing no writes with the source from now on."""
    state = storage.state
    rec = state.record("VDI", vdi)
    sr = rec["SR"]
    drv = await storage.driver(sr)
    async with storage.operation("VDI", vdi, op, ctx, lambda: storage.check_vdi(vdi, op)):
        rec = state.record("VDI", vdi)
        feature = "VDI_CLONE" if op == "clone" else "VDI_SNAPSHOT"
        values: dict[str, Any] = {f: _copy(rec[f]) for f in INHERITED}
        if op == "snapshot":
            values.update(is_a_snapshot=True, snapshot_of=vdi, snapshot_time=now())
        if not drv.has(feature):
            new = await _clone_by_copy(storage, ctx, vdi, sr, values)
        else:
            with storage.errors(sr, vdi):
                method = drv.vdi_clone if op == "clone" else drv.vdi_snapshot
                info = await method(rec["location"], live_hook(storage, vdi))
                source = await drv.vdi_stat(rec["location"])
            new = storage.new_vdi(sr, info, **values)
            storage.put("VDI", vdi, physical_utilisation=source.physical_utilisation)
            storage.add_allocation(sr, info.virtual_size)
        await storage.refresh_capacity(sr, drv)
        storage.refresh_sr(sr)
    return new


async def _clone_by_copy(
    storage: Storage, ctx: CallContext, vdi: str, sr: str, values: dict[str, Any]
) -> str:
    """The reference's fallback for backends that cannot clone: create, then copy."""
    rec = storage.state.record("VDI", vdi)
    new = await create_vdi(storage, ctx, sr, rec["virtual_size"], values)
    try:
        await _copy_data(storage, ctx, vdi, new)
    except BaseException:
        await delete_vdi(storage, CallContext(), new)
        raise
    return new


@handler("VDI.clone")
async def clone(
    state: ServerState, ctx: CallContext, vdi: str, driver_params: dict[str, str]
) -> Any:
    ref = await fork_vdi(storage_of(state), ctx, vdi, "clone")
    await state.store.sync()
    return ref


@handler("VDI.snapshot")
async def snapshot(
    state: ServerState, ctx: CallContext, vdi: str, driver_params: dict[str, str]
) -> Any:
    ref = await fork_vdi(storage_of(state), ctx, vdi, "snapshot")
    await state.store.sync()
    return ref


async def _copy_data(
    storage: Storage,
    ctx: CallContext,
    src: str,
    dst: str,
    base: str | None = None,
    existing: bool = False,
) -> None:
    """Write ``src``'s contents into ``dst``; into an ``existing`` disk, what lies beyond
    the source's end is kept, and with ``base`` only the blocks src changed are written."""
    state = storage.state
    srec, drec = state.record("VDI", src), state.record("VDI", dst)
    sdrv = await storage.driver(srec["SR"])
    ddrv = await storage.driver(drec["SR"])
    total = max(srec["virtual_size"], 1)

    def progress(done: int) -> None:
        storage.progress(ctx, min(done / total, 1.0) * 0.99)

    readers = []
    with storage.errors(drec["SR"], dst):
        reader = await sdrv.open_reader(srec["location"])
        readers.append(reader)
        base_reader = into_reader = None
        if existing:
            into_reader = await ddrv.open_reader(drec["location"])
            readers.append(into_reader)
        if existing and base is not None:
            brec = state.record("VDI", base)
            base_reader = await (await storage.driver(brec["SR"])).open_reader(brec["location"])
            readers.append(base_reader)
        writer = await ddrv.open_writer(drec["location"])
        try:
            await copy_disk(reader, writer, base=base_reader, into=into_reader, progress=progress)
            info = await writer.commit()
        except BaseException:
            await writer.abort()
            raise
        finally:
            for r in readers:
                await r.close()
    storage.put("VDI", dst, physical_utilisation=info.physical_utilisation)


@handler("VDI.copy")
async def copy(
    state: ServerState, ctx: CallContext, vdi: str, sr: str, base_vdi: str, into_vdi: str
) -> Any:
    storage = storage_of(state)
    rec = state.record("VDI", vdi)
    into = into_vdi if into_vdi != NULL_REF and state.store.get("VDI", into_vdi) else ""
    base = base_vdi if base_vdi != NULL_REF and state.store.get("VDI", base_vdi) else None
    async with storage.operation("VDI", vdi, "copy", ctx, lambda: storage.check_vdi(vdi, "copy")):
        if into:
            irec = state.record("VDI", into)
            if irec["read_only"]:
                raise ApiError("VDI_READONLY", into)
            if irec["virtual_size"] < rec["virtual_size"]:
                raise ApiError("VDI_TOO_SMALL", into, str(rec["virtual_size"]))
            async with storage.operation(
                "VDI", into, "copy", ctx, lambda: storage.check_vdi(into, "copy")
            ):
                await _copy_data(storage, ctx, vdi, into, base, existing=True)
            result = into
        else:
            try:
                result = await _copy_to_new(storage, ctx, vdi, sr)
            except BaseException:
                await state.store.sync()
                raise
    await state.store.sync()
    return result


async def _copy_to_new(storage: Storage, ctx: CallContext, vdi: str, sr: str) -> str:
    state = storage.state
    rec = state.record("VDI", vdi)
    target = sr if sr != NULL_REF else rec["SR"]
    state.record("SR", target)
    values: dict[str, Any] = {f: _copy(rec[f]) for f in COPIED}
    values.update(read_only=False, sm_config={})
    result = await create_vdi(storage, ctx, target, rec["virtual_size"], values)
    try:
        await _copy_data(storage, ctx, vdi, result)
    except BaseException:
        await delete_vdi(storage, CallContext(), result)
        raise
    return result


async def copy_vdi(storage: Storage, ctx: CallContext, vdi: str, sr: str) -> str:
    """A full copy of ``vdi`` as a new disk on ``sr`` (NULL: its own SR), as VM.copy needs."""
    async with storage.operation("VDI", vdi, "copy", ctx, lambda: storage.check_vdi(vdi, "copy")):
        return await _copy_to_new(storage, ctx, vdi, sr)


async def _resize(state: ServerState, ctx: CallContext, vdi: str, size: int, op: str) -> Any:
    storage = storage_of(state)
    rec = state.record("VDI", vdi)
    sr = rec["SR"]
    drv = await storage.driver(sr)
    async with (
        storage.operation("VDI", vdi, op, ctx, lambda: storage.check_vdi(vdi, op)),
        storage.operation("SR", sr, "vdi_resize", ctx, lambda: storage.check_sr(sr, "vdi_resize")),
    ):
        with storage.errors(sr, vdi):
            info = await drv.vdi_resize(rec["location"], size)
        storage.add_allocation(sr, info.virtual_size - rec["virtual_size"])
        storage.put(
            "VDI",
            vdi,
            virtual_size=info.virtual_size,
            physical_utilisation=info.physical_utilisation,
        )
        await storage.refresh_capacity(sr, drv)
    await state.store.sync()
    return ""


@handler("VDI.resize")
async def resize(state: ServerState, ctx: CallContext, vdi: str, size: int) -> Any:
    return await _resize(state, ctx, vdi, size, "resize")


@handler("VDI.resize_online")
async def resize_online(state: ServerState, ctx: CallContext, vdi: str, size: int) -> Any:
    return await _resize(state, ctx, vdi, size, "resize_online")


@handler("VDI.introduce")
async def introduce(
    state: ServerState,
    ctx: CallContext,
    uuid: str,
    name_label: str,
    name_description: str,
    sr: str,
    vdi_type: str,
    sharable: bool,
    read_only: bool,
    other_config: dict[str, str],
    location: str,
    xenstore_data: dict[str, str],
    sm_config: dict[str, str],
    managed: bool,
    virtual_size: int,
    physical_utilisation: int,
    metadata_of_pool: str,
    is_a_snapshot: bool,
    snapshot_time: DateTime,
    snapshot_of: str,
) -> Any:
    storage = storage_of(state)
    state.record("SR", sr)
    if uuid and not UUID_RE.match(uuid.lower()):
        raise ApiError("UUID_INVALID", "VDI", uuid)
    drv = await storage.driver(sr)
    async with storage.operation(
        "SR", sr, "vdi_introduce", ctx, lambda: storage.check_sr(sr, "vdi_introduce")
    ):
        existing = None
        for v in state.record("SR", sr)["VDIs"]:
            vrec = state.store.get("VDI", v)
            if vrec is not None and vrec["location"] == location:
                if uuid and vrec["uuid"] != uuid:
                    raise ApiError("LOCATION_NOT_UNIQUE", sr, location)
                existing = v
        if uuid and existing is None and state.store.ref_of_uuid("VDI", uuid) is not None:
            raise ApiError("UUID_INVALID", "VDI", uuid)
        with storage.errors(sr):
            info = await drv.vdi_introduce(location)
        fields: dict[str, Any] = {
            "type": vdi_type,
            "sharable": sharable,
            "read_only": read_only or info.read_only,
            "other_config": dict(other_config),
            "xenstore_data": dict(xenstore_data),
            "sm_config": dict(sm_config),
            "managed": managed,
            "metadata_of_pool": metadata_of_pool,
            "is_a_snapshot": is_a_snapshot,
            "snapshot_time": snapshot_time,
            "snapshot_of": snapshot_of,
        }
        if name_label:
            fields["name_label"] = name_label
        if name_description:
            fields["name_description"] = name_description
        if existing is not None:
            storage.put(
                "VDI",
                existing,
                virtual_size=info.virtual_size,
                physical_utilisation=info.physical_utilisation,
                **fields,
            )
            ref = existing
        else:
            ref = storage.new_vdi(sr, info, uuid=uuid.lower(), **fields)
        storage.recount_allocation(sr)
        await storage.refresh_capacity(sr, drv)
    await state.store.sync()
    return ref


@handler("VDI.update")
async def update(state: ServerState, ctx: CallContext, vdi: str) -> Any:
    storage = storage_of(state)
    rec = state.record("VDI", vdi)
    sr = rec["SR"]
    drv = await storage.driver(sr)
    async with storage.operation(
        "VDI", vdi, "update", ctx, lambda: storage.check_vdi(vdi, "update")
    ):
        with storage.errors(sr, vdi):
            info = await drv.vdi_stat(rec["location"])
        storage.put(
            "VDI",
            vdi,
            virtual_size=info.virtual_size,
            physical_utilisation=info.physical_utilisation,
        )
        storage.recount_allocation(sr)
    await state.store.sync()
    return ""


async def _set(state: ServerState, vdi: str, **values: Any) -> Any:
    state.record("VDI", vdi)
    storage = storage_of(state)
    storage.put("VDI", vdi, **values)
    storage.refresh_vdi(vdi)
    for vbd in state.record("VDI", vdi)["VBDs"]:
        storage.refresh_vbd(vbd)
    await state.store.sync()
    return ""


@handler("VDI.set_sharable")
async def set_sharable(state: ServerState, ctx: CallContext, self: str, value: bool) -> Any:
    return await _set(state, self, sharable=value)


@handler("VDI.set_read_only")
async def set_read_only(state: ServerState, ctx: CallContext, self: str, value: bool) -> Any:
    return await _set(state, self, read_only=value)


@handler("VDI.set_allow_caching")
async def set_allow_caching(state: ServerState, ctx: CallContext, self: str, value: bool) -> Any:
    return await _set(state, self, allow_caching=value)


@handler("VDI.set_on_boot")
async def set_on_boot(state: ServerState, ctx: CallContext, self: str, value: str) -> Any:
    """Only ``persist`` is offered: no driver here resets a disk at VM boot."""
    storage = storage_of(state)
    rec = state.record("VDI", self)
    if value == "reset":
        storage.check_vdi(self, "set_on_boot")
    return await _set(state, self, on_boot=value) if rec["on_boot"] != value else ""
