"""VM.create_new_blob: an empty blob named in the VM's blobs map."""

from __future__ import annotations

from tests.api.handlers.vm_kit import new_vm, rec
from tests.api.world import World


async def test_new_blob_is_empty_and_named_in_the_vm(world: World) -> None:
    w = world
    vm = await new_vm(w)
    blob = await w.call("VM.create_new_blob", w.root, vm, "notes", "text/plain", True)
    record = await w.record("blob", blob)
    assert record["mime_type"] == "text/plain" and record["public"] is True
    assert record["size"] == 0
    assert record["name_label"] == "" and record["last_updated"] == "19700101T00:00:00Z"
    other = await w.call("VM.create_new_blob", w.root, vm, "data", "", False)
    assert (await w.record("blob", other))["mime_type"] == "application/octet-stream"
    assert rec(w, "VM", vm)["blobs"] == {"notes": blob, "data": other}
    assert await w.call("VM.get_blobs", w.root, vm) == {"notes": blob, "data": other}


async def test_same_name_is_a_duplicate_key(world: World) -> None:
    w = world
    vm = await new_vm(w)
    first = await w.call("VM.create_new_blob", w.root, vm, "notes", "text/plain", False)
    blobs = len(w.store.table("blob"))
    assert await w.fail("VM.create_new_blob", w.root, vm, "notes", "", False) == [
        "MAP_DUPLICATE_KEY",
        "VM",
        "blobs",
        rec(w, "VM", vm)["uuid"],
        "notes",
    ]
    assert rec(w, "VM", vm)["blobs"] == {"notes": first}
    assert len(w.store.table("blob")) == blobs


async def test_unknown_vm_is_handle_invalid(world: World) -> None:
    w = world
    blobs = len(w.store.table("blob"))
    assert await w.fail("VM.create_new_blob", w.root, "OpaqueRef:nope", "n", "", False) == [
        "HANDLE_INVALID",
        "VM",
        "OpaqueRef:nope",
    ]
    assert len(w.store.table("blob")) == blobs
