"""PBD: how this host reaches an SR — create, destroy, plug (attach and scan), unplug."""

from __future__ import annotations

import asyncio
from typing import Any

from openxapi.api.coerce import CoercionError, coerce
from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.storage_access import Storage, storage_of
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF


def constructor_args(state: ServerState, cls: str, args: dict[str, Any]) -> dict[str, Any]:
    """A record-style constructor struct checked and typed as the generic create does:
    defaults for what is left out, extra keys ignored."""
    out: dict[str, Any] = {}
    c = state.cls(cls)
    for f in c.fields:
        if not f.in_constructor:
            continue
        if f.name in args:
            try:
                out[f.name] = coerce(args[f.name], f.type, state.api.enums)
            except (CoercionError, RecursionError):
                raise ApiError("FIELD_TYPE_ERROR", f.name) from None
        elif f.has_default:
            d = f.default
            out[f.name] = d.copy() if isinstance(d, (dict, list)) else d
        else:
            raise ApiError("INTERNAL_ERROR", f'Server_helpers.Dispatcher_FieldNotFound("{f.name}")')
    return out


async def plug_pbd(storage: Storage, pbd: str, ctx: CallContext) -> None:
    """Attach the SR through this PBD, register its SM, scan it and record the result."""
    st = storage.state
    rec = st.record("PBD", pbd)
    if rec["currently_attached"]:
        return
    sr = rec["SR"]
    sr_rec = st.record("SR", sr)
    if not sr_rec["shared"]:
        for other in sr_rec["PBDs"]:
            orec = st.store.get("PBD", other)
            if other != pbd and orec is not None and orec["currently_attached"]:
                raise ApiError("SR_NOT_SHARABLE", sr, orec["host"])
    drv = storage.make_driver(sr, rec["device_config"])
    async with storage.operation("SR", sr, "plug", ctx):
        with storage.errors(sr):
            await drv.attach(storage.known(sr))
        storage.drivers[sr] = drv
        st.store.update("PBD", pbd, {"currently_attached": True})
        try:
            if drv.has("SR_SCAN"):
                with storage.errors(sr):
                    infos = await drv.scan()
                storage.reconcile(sr, infos)
            else:
                storage.recount_allocation(sr)
            await storage.refresh_capacity(sr, drv)
        except BaseException:
            storage.drivers.pop(sr, None)
            st.store.update("PBD", pbd, {"currently_attached": False})
            raise
    storage.refresh_sr(sr)
    for i, vdi in enumerate(list(st.record("SR", sr)["VDIs"])):
        storage.refresh_vdi(vdi)
        if i % 256 == 255:
            await asyncio.sleep(0)  # a big SR must not hold up other calls


async def unplug_pbd(storage: Storage, pbd: str, ctx: CallContext) -> None:
    st = storage.state
    rec = st.record("PBD", pbd)
    if not rec["currently_attached"]:
        return
    sr = rec["SR"]
    in_use = []
    for vdi in st.record("SR", sr)["VDIs"]:
        vrec = st.store.get("VDI", vdi)
        if vrec is None or vrec["type"] == "metadata":
            continue
        for vbd in vrec["VBDs"]:
            brec = st.store.get("VBD", vbd)
            if brec is None or not brec["currently_attached"]:
                continue
            vm = st.store.get("VM", brec["VM"])
            if vm is not None and vm["resident_on"] in (rec["host"], NULL_REF):
                in_use.append(vdi)
                break
    if in_use:
        raise ApiError("VDI_IN_USE", *in_use)
    async with storage.operation("SR", sr, "unplug", ctx):
        drv = storage.drivers.pop(sr, None)
        if drv is not None:
            with storage.errors(sr):
                await drv.detach()
        st.store.update("PBD", pbd, {"currently_attached": False})
    storage.refresh_sr(sr)
    for i, vdi in enumerate(list(st.record("SR", sr)["VDIs"])):
        storage.refresh_vdi(vdi)
        if i % 256 == 255:
            await asyncio.sleep(0)  # a big SR must not hold up other calls


@handler("PBD.create")
async def create(state: ServerState, ctx: CallContext, args: dict[str, Any]) -> Any:
    storage = storage_of(state)
    values = constructor_args(state, "PBD", args)
    host, sr = values["host"], values["SR"]
    state.record("host", host)
    state.record("SR", sr)
    if "SRmaster" in values["device_config"]:
        raise ApiError("INVALID_VALUE", "device_config", "SRmaster")
    for other in state.record("SR", sr)["PBDs"]:
        orec = state.store.get("PBD", other)
        if orec is not None and orec["host"] == host:
            raise ApiError("PBD_EXISTS", sr, host, other)
    ref = storage.insert(
        "PBD",
        {
            "host": host,
            "SR": sr,
            "device_config": values["device_config"],
            "currently_attached": False,
            "other_config": values["other_config"],
        },
    )
    storage.refresh_sr(sr)
    await state.store.sync()
    return ref


@handler("PBD.destroy")
async def destroy(state: ServerState, ctx: CallContext, self: str) -> Any:
    storage = storage_of(state)
    rec = state.record("PBD", self)
    if rec["currently_attached"]:
        raise ApiError("OPERATION_NOT_ALLOWED", "PBD is currently attached")
    storage.generic.destroy_object(state, "PBD", self)
    storage.refresh_sr(rec["SR"])
    await state.store.sync()
    return ""


@handler("PBD.plug")
async def plug(state: ServerState, ctx: CallContext, self: str) -> Any:
    await plug_pbd(storage_of(state), self, ctx)
    await state.store.sync()
    return ""


@handler("PBD.unplug")
async def unplug(state: ServerState, ctx: CallContext, self: str) -> Any:
    await unplug_pbd(storage_of(state), self, ctx)
    await state.store.sync()
    return ""


@handler("PBD.set_device_config")
async def set_device_config(
    state: ServerState, ctx: CallContext, self: str, value: dict[str, str]
) -> Any:
    state.record("PBD", self)
    storage_of(state).put("PBD", self, device_config=dict(value))
    await state.store.sync()
    return ""
