"""VM.clone / VM.copy of a halted VM without disks."""

from __future__ import annotations

from openxapi.spec.model import NULL_REF
from tests.api.world import World, create_args


async def new_vm(world: World, **values: object) -> str:
    ref = await world.call("VM.create", world.root, create_args(world.api, "VM", **values))
    assert isinstance(ref, str)
    return ref


async def test_clone_copies_the_record_with_fresh_identity(world: World) -> None:
    src = await new_vm(
        world,
        name_label="tmpl",
        is_a_template=True,
        other_config={"default_template": "true", "keep": "me"},
        tags=["t"],
    )
    copy = await world.call("VM.clone", world.root, src, "copy")
    a, b = world.store.table("VM")[src], world.store.table("VM")[copy]
    assert b["name_label"] == "copy" and b["uuid"] != a["uuid"]
    assert b["is_a_template"] and b["tags"] == ["t"]
    assert b["other_config"]["keep"] == "me" and "default_template" not in b["other_config"]
    assert b["other_config"]["base_template_name"] == "tmpl"
    assert b["metrics"] != a["metrics"] and world.store.get("VM_metrics", b["metrics"])
    assert b["power_state"] == "Halted" and b["domid"] == -1 and b["parent"] == NULL_REF
    assert not b["is_default_template"]


async def test_copy_checks_the_sr_and_the_source(world: World) -> None:
    src = await new_vm(world, name_label="src")
    copy = await world.call("VM.copy", world.root, src, "c", NULL_REF)
    assert world.store.table("VM")[copy]["name_label"] == "c"
    # as the reference: an SR that does not exist stands for the disks' own SRs
    other = await world.call("VM.copy", world.root, src, "d", "OpaqueRef:nosr")
    assert world.store.table("VM")[other]["name_label"] == "d"
    world.store.update("VM", src, {"power_state": "Running"})
    assert await world.fail("VM.clone", world.root, src, "x") == [
        "VM_BAD_POWER_STATE",
        src,
        "halted",
        "running",
    ]
    dom0 = next(r for r, v in world.store.table("VM").items() if v["is_control_domain"])
    assert (await world.fail("VM.clone", world.root, dom0, "x"))[0] == "OPERATION_NOT_ALLOWED"
