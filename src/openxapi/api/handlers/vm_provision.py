"""VM.provision: make a template's disks from the ``disks`` spec in its other_config.

The spec is the reference's XML (core-api.md §8); the client fills in each disk's SR uuid.
Disks come from the storage layer (VDI create, VBD create). On any failure the disks and
VBDs made so far are removed and the VM is left a template as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from xml.parsers import expat

from openxapi.api.context import CallContext
from openxapi.api.handlers.vbd import create_vbd
from openxapi.api.handlers.vdi import create_vdi, delete_vdi
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.storage_access import storage_of
from openxapi.api.tasks import tasks_of
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF

PROVISION_KEYS = ("disks", "postinstall")
VDI_TYPES = ("system", "user", "ephemeral", "suspend", "crashdump")


@dataclass(frozen=True, slots=True)
class DiskRequest:
    """One ``disk`` element of a provision spec."""

    device: str
    size: int
    sr: str
    bootable: bool
    type: str


def _bad_spec(why: str) -> ApiError:
    return ApiError("INTERNAL_ERROR", f"cannot parse the provision spec: {why}")


def parse_disks(text: str) -> list[DiskRequest]:
    """The disks of a ``<provision>`` document; entity declarations are refused."""
    disks: list[DiskRequest] = []
    depth = 0
    root_seen = False

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal depth, root_seen
        depth += 1
        if depth == 1:
            if name != "provision":
                raise _bad_spec(f"root element is {name}")
            root_seen = True
            return
        if depth != 2 or name != "disk":
            raise _bad_spec(f"unexpected element {name}")
        try:
            size = int(attrs["size"])
            disks.append(
                DiskRequest(
                    device=attrs["device"],
                    size=size,
                    sr=attrs.get("sr", ""),
                    bootable=attrs.get("bootable", "false").lower() == "true",
                    type=attrs.get("type", "system") or "system",
                )
            )
        except (KeyError, ValueError) as e:
            raise _bad_spec(f"bad disk element: {e}") from None

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1

    def no_entities(*_: Any) -> None:
        raise _bad_spec("entity declarations are not allowed")

    parser = expat.ParserCreate()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.EntityDeclHandler = no_entities
    parser.StartDoctypeDeclHandler = no_entities
    try:
        parser.Parse(text, True)
    except expat.ExpatError as e:
        raise _bad_spec(str(e)) from None
    if not root_seen:
        raise _bad_spec("empty document")
    for d in disks:
        if d.type not in VDI_TYPES:
            raise _bad_spec(f"unknown disk type {d.type}")
    return disks


@handler("VM.provision")
async def provision(state: ServerState, ctx: CallContext, vm: str) -> Any:
    storage = storage_of(state)
    tasks = tasks_of(state)
    domains = domains_of(state)
    async with domains.operation(vm, "provision", ctx) as rec:
        other = dict(rec["other_config"])
        disks = parse_disks(other["disks"]) if other.get("disks") else []
        srs = []
        for d in disks:
            sr = state.store.ref_of_uuid("SR", d.sr)
            if sr is None:
                raise ApiError("UUID_INVALID", "sr", d.sr)
            srs.append(sr)
        state.store.update("VM", vm, {"is_a_template": False})
        made_vdis: list[str] = []
        made_vbds: list[str] = []
        try:
            for i, (d, sr) in enumerate(zip(disks, srs, strict=True)):
                vdi = await create_vdi(
                    storage,
                    ctx,
                    sr,
                    d.size,
                    {
                        "name_label": d.device,
                        "name_description": "Created by template provisioner",
                        "type": d.type,
                        "sharable": False,
                        "read_only": False,
                        "sm_config": {"vmhint": rec["uuid"]},
                    },
                )
                made_vdis.append(vdi)
                made_vbds.append(
                    create_vbd(
                        storage,
                        {
                            "VM": vm,
                            "VDI": vdi,
                            "device": "",
                            "userdevice": d.device,
                            "bootable": d.bootable,
                            "mode": "RW",
                            "type": "Disk",
                            "unpluggable": d.type != "system",
                            "empty": False,
                            "other_config": {"owner": ""},
                            "currently_attached": False,
                            "qos_algorithm_type": "",
                            "qos_algorithm_params": {},
                        },
                    )
                )
                tasks.set_progress(ctx, (i + 1) / (len(disks) + 1))
                await tasks.checkpoint(ctx)
        except BaseException:
            for vbd in made_vbds:
                if state.store.get("VBD", vbd) is not None:
                    storage.destroy_vbd_record(vbd)
            for vdi in made_vdis:
                if state.store.get("VDI", vdi) is not None:
                    await delete_vdi(storage, ctx, vdi)
            if state.store.get("VM", vm) is not None:
                state.store.update("VM", vm, {"is_a_template": True})
            await state.store.sync()
            raise
        other = {k: v for k, v in state.record("VM", vm)["other_config"].items()}
        for key in PROVISION_KEYS:
            other.pop(key, None)
        state.store.update("VM", vm, {"other_config": other})
    await state.store.sync()
    return ""


def first_sr_uuid(state: ServerState) -> str:
    """The pool's default SR uuid ("" when none): what a client writes into the spec."""
    pool = state.record("pool", state.pool_ref)
    sr = pool["default_SR"]
    rec = state.store.get("SR", sr) if sr != NULL_REF else None
    return "" if rec is None else str(rec["uuid"])
