"""SR: create, introduce, forget, destroy, scan, probe, update, and the SR setters."""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState, new_uuid
from openxapi.api.storage_access import Storage, storage_of
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF
from openxapi.storage.driver import ProbeResult
from openxapi.storage.registry import supported_types


def introduce_record(
    storage: Storage,
    uuid: str,
    name_label: str,
    name_description: str,
    sr_type: str,
    content_type: str,
    shared: bool,
    sm_config: dict[str, str],
    other_config: dict[str, str] | None = None,
) -> str:
    """The SR record SR.introduce makes: sizes unknown (-1) until the first scan."""
    st = storage.state
    uuid = uuid or new_uuid()
    if st.store.ref_of_uuid("SR", uuid) is not None:
        raise ApiError("SR_UUID_EXISTS", uuid)
    ref = storage.insert(
        "SR",
        {
            "uuid": uuid,
            "name_label": name_label,
            "name_description": name_description,
            "type": sr_type,
            "content_type": content_type,
            "shared": shared,
            "sm_config": dict(sm_config),
            "other_config": dict(other_config or {}),
            "physical_size": -1,
            "physical_utilisation": -1,
            "virtual_allocation": 0,
            "introduced_by": NULL_REF,
        },
    )
    storage.refresh_sr(ref)
    return ref


def forget_records(storage: Storage, sr: str) -> None:
    """Remove the SR, its PBDs and its VDIs (with their VBDs) from the store."""
    st = storage.state
    rec = st.record("SR", sr)
    for vdi in list(rec["VDIs"]):
        storage.destroy_vdi_record(vdi)
    for pbd in list(rec["PBDs"]):
        if st.store.get("PBD", pbd) is not None:
            storage.generic.destroy_object(st, "PBD", pbd)
    storage.generic.destroy_object(st, "SR", sr)
    storage.drivers.pop(sr, None)
    for field in ("default_SR", "suspend_image_SR", "crash_dump_SR"):
        if st.store.get("pool", st.pool_ref) and st.record("pool", st.pool_ref)[field] == sr:
            st.store.update("pool", st.pool_ref, {field: NULL_REF})
    for host, hrec in st.store.table("host").items():
        for field in ("suspend_image_sr", "crash_dump_sr"):
            if hrec[field] == sr:
                st.store.update("host", host, {field: NULL_REF})


@handler("SR.create")
async def create(
    state: ServerState,
    ctx: CallContext,
    host: str,
    device_config: dict[str, str],
    physical_size: int,
    name_label: str,
    name_description: str,
    sr_type: str,
    content_type: str,
    shared: bool,
    sm_config: dict[str, str],
) -> Any:
    """As the reference: record first, then the backend, then a plugged PBD; a backend
    failure removes the records again."""
    storage = storage_of(state)
    state.record("host", host)
    sr_type = sr_type.lower()
    storage.driver_class(sr_type)
    sr = introduce_record(
        storage, "", name_label, name_description, sr_type, content_type, shared, sm_config
    )
    pbd = ""
    try:
        drv = storage.make_driver(sr, device_config)
        with storage.errors(sr):
            await drv.create(physical_size)
        pbd = storage.insert(
            "PBD",
            {
                "host": state.host_ref,
                "SR": sr,
                "device_config": drv.pbd_device_config(),
                "currently_attached": False,
            },
        )
        from openxapi.api.handlers.pbd import plug_pbd

        await plug_pbd(storage, pbd, ctx)
    except BaseException:
        if state.store.get("SR", sr) is not None:
            if pbd and state.store.get("PBD", pbd) is not None:
                state.store.update("PBD", pbd, {"currently_attached": False})
            forget_records(storage, sr)
        await state.store.sync()
        raise
    await state.store.sync()
    return sr


@handler("SR.introduce")
async def introduce(
    state: ServerState,
    ctx: CallContext,
    uuid: str,
    name_label: str,
    name_description: str,
    sr_type: str,
    content_type: str,
    shared: bool,
    sm_config: dict[str, str],
) -> Any:
    ref = introduce_record(
        storage_of(state),
        uuid,
        name_label,
        name_description,
        sr_type,
        content_type,
        shared,
        sm_config,
    )
    await state.store.sync()
    return ref


@handler("SR.make")
async def make(state: ServerState, ctx: CallContext, *args: Any) -> Any:
    raise ApiError("MESSAGE_DEPRECATED")


@handler("SR.forget")
async def forget(state: ServerState, ctx: CallContext, sr: str) -> Any:
    storage = storage_of(state)
    state.record("SR", sr)
    async with storage.operation("SR", sr, "forget", ctx, lambda: storage.check_sr(sr, "forget")):
        forget_records(storage, sr)
    await state.store.sync()
    return ""


@handler("SR.destroy")
async def destroy(state: ServerState, ctx: CallContext, sr: str) -> Any:
    storage = storage_of(state)
    state.record("SR", sr)

    def check() -> None:
        storage.check_sr(sr, "destroy")
        if state.record("SR", sr)["other_config"].get("indestructible") == "true":
            raise ApiError("SR_INDESTRUCTIBLE", sr)
        if "SR_DELETE" not in storage.features(sr):
            raise ApiError("SR_OPERATION_NOT_SUPPORTED", sr)

    async with storage.operation("SR", sr, "destroy", ctx, check):
        pbd = storage.local_pbd(sr)
        config = pbd.record["device_config"] if pbd is not None else {}
        drv = storage.make_driver(sr, config)
        with storage.errors(sr):
            await drv.delete()
        forget_records(storage, sr)
    await state.store.sync()
    return ""


async def scan_sr(storage: Storage, sr: str, ctx: CallContext) -> None:
    """Match the SR's VDI records to its disks and refresh its sizes."""
    drv = await storage.driver(sr)
    async with storage.operation("SR", sr, "scan", ctx):
        with storage.errors(sr):
            infos = await drv.scan()
        storage.reconcile(sr, infos)
        await storage.refresh_capacity(sr, drv)
        rec = storage.state.record("SR", sr)
        if "dirty" in rec["other_config"]:
            other = {k: v for k, v in rec["other_config"].items() if k != "dirty"}
            storage.put("SR", sr, other_config=other)


@handler("SR.scan")
async def scan(state: ServerState, ctx: CallContext, sr: str) -> Any:
    storage = storage_of(state)
    state.record("SR", sr)
    await scan_sr(storage, sr, ctx)
    await state.store.sync()
    return ""


@handler("SR.update")
async def update(state: ServerState, ctx: CallContext, sr: str) -> Any:
    storage = storage_of(state)
    state.record("SR", sr)
    drv = await storage.driver(sr)
    async with storage.operation("SR", sr, "update", ctx, lambda: storage.check_sr(sr, "update")):
        await storage.refresh_capacity(sr, drv)
    await state.store.sync()
    return ""


async def _probe(
    state: ServerState, host: str, device_config: dict[str, str], sr_type: str
) -> list[ProbeResult]:
    storage = storage_of(state)
    state.record("host", host)
    cls = storage.driver_class(sr_type)
    if "SR_PROBE" not in cls.features:
        raise ApiError("SR_OPERATION_NOT_SUPPORTED", NULL_REF)
    return await cls.probe(storage.ctx, device_config)


@handler("SR.probe")
async def probe(
    state: ServerState,
    ctx: CallContext,
    host: str,
    device_config: dict[str, str],
    sr_type: str,
    sm_config: dict[str, str],
) -> Any:
    """The SMAPIv1-style XML document listing the SRs found."""
    found = await _probe(state, host, device_config, sr_type)
    parts = ['<?xml version="1.0" ?>', "<SRlist>"]
    for r in found:
        parts.append("\t<SR>")
        if r.sr_uuid:
            parts.append(f"\t\t<UUID>{escape(r.sr_uuid)}</UUID>")
        for key, value in r.configuration.items():
            parts.append(f"\t\t<{key}>{escape(value)}</{key}>")
        if r.stat is not None:
            parts.append(f"\t\t<size>{r.stat.physical_size}</size>")
            parts.append(f"\t\t<free>{r.stat.free}</free>")
        parts.append("\t</SR>")
    parts.append("</SRlist>")
    return "\n".join(parts) + "\n"


@handler("SR.probe_ext")
async def probe_ext(
    state: ServerState,
    ctx: CallContext,
    host: str,
    device_config: dict[str, str],
    sr_type: str,
    sm_config: dict[str, str],
) -> Any:
    found = await _probe(state, host, device_config, sr_type)
    out = []
    for r in found:
        sr_stat = None
        if r.stat is not None or r.sr_uuid:
            total = r.stat.physical_size if r.stat is not None else 0
            free = r.stat.free if r.stat is not None else 0
            sr_stat = {
                "uuid": r.sr_uuid or None,
                "name_label": "",
                "name_description": "",
                "free_space": free,
                "total_space": total,
                "clustered": False,
                "health": "healthy",
            }
        out.append(
            {
                "configuration": dict(r.configuration),
                "complete": r.complete,
                "sr": sr_stat,
                "extra_info": dict(r.extra_info),
            }
        )
    return out


@handler("SR.get_supported_types")
async def get_supported_types(state: ServerState, ctx: CallContext) -> Any:
    return supported_types()


@handler("SR.set_shared")
async def set_shared(state: ServerState, ctx: CallContext, sr: str, value: bool) -> Any:
    rec = state.record("SR", sr)
    if not value and len(rec["PBDs"]) > 1:
        raise ApiError("SR_HAS_MULTIPLE_PBDS", *rec["PBDs"])
    storage_of(state).put("SR", sr, shared=value)
    await state.store.sync()
    return ""


@handler("SR.set_physical_size")
async def set_physical_size(state: ServerState, ctx: CallContext, sr: str, value: int) -> Any:
    state.record("SR", sr)
    storage_of(state).put("SR", sr, physical_size=value)
    await state.store.sync()
    return ""
