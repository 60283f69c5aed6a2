"""VM.create_new_blob: an empty blob record, named in the VM's ``blobs`` map.

A name already in the map is MAP_DUPLICATE_KEY, as the reference's map insert answers
(the reference makes the blob first and leaves it behind; no blob is made here). The
record starts as the reference's does: size 0, last updated at the epoch, no name,
and "application/octet-stream" when no MIME type is given. Its content is uploaded
separately.
"""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState, new_ref, new_uuid
from openxapi.errors import ApiError
from openxapi.spec.values import EPOCH

DEFAULT_MIME_TYPE = "application/octet-stream"


def create_blob(state: ServerState, mime_type: str, public: bool) -> str:
    """A new, empty blob record; its ref."""
    ref = new_ref()
    record = state.new_record(
        "blob",
        {
            "uuid": new_uuid(),
            "name_label": "",
            "name_description": "",
            "size": 0,
            "public": public,
            "last_updated": EPOCH,
            "mime_type": mime_type or DEFAULT_MIME_TYPE,
        },
    )
    state.store.create("blob", ref, record)
    return ref


@handler("VM.create_new_blob")
async def create_new_blob(
    state: ServerState, ctx: CallContext, vm: str, name: str, mime_type: str, public: bool
) -> Any:
    rec = state.record("VM", vm)
    blobs = rec["blobs"]
    if name in blobs:  # the reference's map insert refuses a name already there
        column = state.cls("VM").field_map["blobs"].column
        raise ApiError("MAP_DUPLICATE_KEY", "VM", column, rec["uuid"], name)
    ref = create_blob(state, mime_type, public)
    state.store.update("VM", vm, {"blobs": {**blobs, name: ref}})
    await state.store.sync()
    return ref
