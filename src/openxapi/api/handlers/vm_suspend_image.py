"""VM.set_suspend_VDI: swap a suspended VM's memory image for an identical copy.

As in the reference the replacement is accepted only when some live host sees every SR the
VM would then need, and when both disks have the same contents (their MD5 checksums, as
the reference's VDI.checksum computes them over the guest-visible bytes). Backends that
keep guest state beside the image are told the new VDI holds it, as after a clone.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.handlers.vm_clone import copy_suspend_image
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.storage_access import storage_of
from openxapi.errors import ApiError
from openxapi.storage.transfer import export_raw


async def vdi_checksum(state: ServerState, vdi: str) -> str:
    """The MD5 (hex) of a disk's contents."""
    rec = state.record("VDI", vdi)
    storage = storage_of(state)
    drv = await storage.driver(rec["SR"])
    loop = asyncio.get_running_loop()
    digest = hashlib.md5()
    with storage.errors(rec["SR"], vdi):
        reader = await drv.open_reader(rec["location"])
        try:
            async for chunk in export_raw(reader):
                await loop.run_in_executor(None, digest.update, chunk)
        finally:
            await reader.close()
    return digest.hexdigest()


def _host_sees(state: ServerState, host: str, srs: set[str]) -> bool:
    hrec = state.record("host", host)
    metrics = state.store.get("host_metrics", hrec["metrics"])
    if metrics is None or not metrics["live"]:
        return False
    plugged = {
        p["SR"]
        for pbd in hrec["PBDs"]
        if (p := state.store.get("PBD", pbd)) is not None and p["currently_attached"]
    }
    return srs <= plugged


@handler("VM.set_suspend_VDI")
async def set_suspend_VDI(state: ServerState, ctx: CallContext, self: str, value: str) -> Any:
    rec = state.record("VM", self)
    if rec["power_state"] != "Suspended":
        raise ApiError("VM_BAD_POWER_STATE", self, "suspended", rec["power_state"].lower())
    new = state.record("VDI", value)
    if new["type"] == "cbt_metadata":
        raise ApiError("VDI_INCOMPATIBLE_TYPE", self, "CBT metadata")
    old = rec["suspend_VDI"]
    if old == value:
        return ""
    needed = {new["SR"]}
    for vbd in rec["VBDs"]:
        vrec = state.record("VBD", vbd)
        if not vrec["empty"]:
            needed.add(state.record("VDI", vrec["VDI"])["SR"])
    if not any(_host_sees(state, h, needed) for h in state.store.table("host")):
        raise ApiError("NO_HOSTS_AVAILABLE")
    old_rec = state.record("VDI", old)
    sums = await asyncio.gather(
        vdi_checksum(state, old), vdi_checksum(state, value), return_exceptions=True
    )
    for result in sums:  # the current image's failure first, as the reference reports it
        if isinstance(result, BaseException):
            raise result
    old_sum, new_sum = (str(s) for s in sums)
    if old_sum != new_sum:
        raise ApiError(
            "SUSPEND_VDI_REPLACEMENT_IS_NOT_IDENTICAL",
            f"{old_rec['uuid']} : {old_sum}",
            f"{new['uuid']} : {new_sum}",
        )
    # backends that keep guest state beside the image learn that ``value`` holds it now
    await copy_suspend_image(state, old, value)
    state.store.update("VM", self, {"suspend_VDI": value})
    await state.store.sync()
    return ""
