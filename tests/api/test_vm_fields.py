"""VM map setters that the lifecycle reads refresh allowed_operations at once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from openxapi.api.vm_domains import stop_domains
from tests.api.world import World


@pytest.fixture
async def w(world: World) -> AsyncIterator[World]:
    yield world
    await stop_domains(world.state)


async def running_vm(w: World) -> str:
    (tmpl,) = await w.call("VM.get_by_name_label", w.root, "Debian Bookworm 12")
    vm = await w.call("VM.clone", w.root, tmpl, "vm")
    await w.call("VM.remove_from_other_config", w.root, vm, "disks")
    await w.call("VM.provision", w.root, vm)
    await w.call("VM.start", w.root, vm, False, False)
    assert isinstance(vm, str)
    return vm


def allowed(w: World, vm: str) -> set[str]:
    rec = w.store.get("VM", vm)
    assert rec is not None
    return set(rec["allowed_operations"])


async def test_platform_nomigrate_takes_suspend_and_checkpoint_away(w: World) -> None:
    vm = await running_vm(w)
    assert {"suspend", "checkpoint"} <= allowed(w, vm)
    await w.call("VM.add_to_platform", w.root, vm, "nomigrate", "true")
    assert not {"suspend", "checkpoint"} & allowed(w, vm)
    assert await w.fail("VM.suspend", w.root, vm) == ["VM_IS_IMMOBILE", vm]
    assert (await w.fail("VM.add_to_platform", w.root, vm, "nomigrate", "1"))[0] == (
        "MAP_DUPLICATE_KEY"
    )
    await w.call("VM.remove_from_platform", w.root, vm, "nomigrate")
    assert {"suspend", "checkpoint"} <= allowed(w, vm)
    await w.call("VM.set_platform", w.root, vm, {"nested-virt": "true"})
    assert "suspend" not in allowed(w, vm)
    await w.call("VM.set_platform", w.root, vm, {})
    assert "suspend" in allowed(w, vm)


async def test_other_config_default_template_is_seen_at_once(w: World) -> None:
    (tmpl,) = await w.call("VM.get_by_name_label", w.root, "Debian Bookworm 12")
    vm = await w.call("VM.clone", w.root, tmpl, "t")
    assert "destroy" in allowed(w, vm)
    await w.call("VM.add_to_other_config", w.root, vm, "default_template", "true")
    assert "destroy" not in allowed(w, vm)
    await w.call("VM.remove_from_other_config", w.root, vm, "default_template")
    assert "destroy" in allowed(w, vm)
