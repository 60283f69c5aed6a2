"""VM.get_allowed_VBD_devices: the disk numbers a new VBD may still take, as the reference
computes them (0-254, or 0-255 for a control domain; on HVM guests disks 0-3 are IDE)."""

from __future__ import annotations

from typing import Any

from openxapi.api import vbd_devices
from openxapi.api.context import CallContext
from openxapi.api.handlers.vbd import _is_hvm
from openxapi.api.registry import handler
from openxapi.api.state import ServerState


@handler("VM.get_allowed_VBD_devices")
async def get_allowed_VBD_devices(state: ServerState, ctx: CallContext, vm: str) -> Any:
    rec = state.record("VM", vm)
    names: list[str] = []
    for vbd in rec["VBDs"]:
        vrec = state.store.get("VBD", vbd)
        if vrec is not None:
            names += [vrec["device"], vrec["userdevice"]]
    taken = vbd_devices.used(names)
    hvm = _is_hvm(rec)
    last = vbd_devices.MAX_DISK
    if rec["is_control_domain"] and not hvm:
        last = vbd_devices.MAX_DISK_CONTROL_DOMAIN
    out = []
    for n in range(last + 1):
        bus = "ide" if hvm and n < vbd_devices.IDE_DISKS else "xen"
        if (bus, n, 0) not in taken:
            out.append(str(n))
    return out
