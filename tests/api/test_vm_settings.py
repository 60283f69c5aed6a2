"""VM setters with rules: memory limits, blocked operations, crash actions, ordering."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from openxapi.api.handlers.vm_memory import ORDER_CONSTRAINT
from openxapi.api.vm_domains import stop_domains
from tests.api.storage_kit import new_vm
from tests.api.world import World

GIB = 1 << 30


@pytest.fixture
async def w(world: World) -> AsyncIterator[World]:
    yield world
    await stop_domains(world.state)


async def vm_with(w: World, memory: int = GIB) -> str:
    return await new_vm(
        w,
        memory_static_min=str(memory // 2),
        memory_dynamic_min=str(memory),
        memory_dynamic_max=str(memory),
        memory_static_max=str(memory),
        VCPUs_max="1",
        VCPUs_at_startup="1",
    )


def limits(w: World, vm: str) -> tuple[int, int, int, int]:
    r = w.store.get("VM", vm)
    assert r is not None
    return (
        r["memory_static_min"],
        r["memory_dynamic_min"],
        r["memory_dynamic_max"],
        r["memory_static_max"],
    )


async def test_memory_setters_keep_the_order(w: World) -> None:
    vm = await vm_with(w)
    await w.call("VM.set_memory_static_range", w.root, vm, str(GIB // 4), str(2 * GIB))
    await w.call("VM.set_memory_dynamic_range", w.root, vm, str(GIB // 2), str(2 * GIB))
    assert limits(w, vm) == (GIB // 4, GIB // 2, 2 * GIB, 2 * GIB)
    await w.call("VM.set_memory", w.root, vm, str(GIB))
    assert limits(w, vm) == (GIB // 4, GIB, GIB, GIB)
    await w.call("VM.set_memory_limits", w.root, vm, "1", str(4 * GIB), "2", "3")
    assert limits(w, vm) == (1, 2, 3, 4 * GIB)
    await w.call("VM.set_memory_dynamic_max", w.root, vm, str(GIB))
    await w.call("VM.set_memory_static_min", w.root, vm, "0")
    assert limits(w, vm) == (0, 2, GIB, 4 * GIB)
    for call, args in (
        ("VM.set_memory_static_range", (str(GIB), str(GIB // 2))),
        ("VM.set_memory_dynamic_range", (str(2 * GIB), str(GIB))),
        ("VM.set_memory_limits", ("5", "4", "3", "2")),
        ("VM.set_memory_static_max", (str(GIB // 2),)),
        ("VM.set_memory_dynamic_min", (str(8 * GIB),)),
    ):
        assert await w.fail(call, w.root, vm, *args) == [
            "MEMORY_CONSTRAINT_VIOLATION", ORDER_CONSTRAINT,
        ]  # fmt: skip
    assert limits(w, vm) == (0, 2, GIB, 4 * GIB)


async def test_static_memory_changes_only_while_halted(w: World) -> None:
    vm = await vm_with(w)
    await w.call("VM.start", w.root, vm, False, False)
    assert await w.fail("VM.set_memory_static_max", w.root, vm, str(2 * GIB)) == [
        "VM_BAD_POWER_STATE", vm, "halted", "running",
    ]  # fmt: skip
    await w.call("VM.set_memory_dynamic_range", w.root, vm, str(GIB // 2), str(GIB))
    assert limits(w, vm)[1] == GIB // 2
    await w.call("VM.hard_shutdown", w.root, vm)


async def test_blocked_operations_update_allowed_operations(w: World) -> None:
    vm = await vm_with(w)
    await w.call("VM.add_to_blocked_operations", w.root, vm, "start", "no")
    r = w.store.get("VM", vm)
    assert r is not None and "start" not in r["allowed_operations"]
    assert await w.fail("VM.add_to_blocked_operations", w.root, vm, "start", "x") == [
        "MAP_DUPLICATE_KEY", "VM", "blocked_operations", r["uuid"], "start",
    ]  # fmt: skip
    assert await w.fail("VM.start", w.root, vm, False, False) == ["OPERATION_BLOCKED", vm, "no"]
    await w.call("VM.remove_from_blocked_operations", w.root, vm, "start")
    r = w.store.get("VM", vm)
    assert r is not None and "start" in r["allowed_operations"]
    await w.call("VM.set_blocked_operations", w.root, vm, {"destroy": "keep"})
    assert await w.fail("VM.destroy", w.root, vm) == ["OPERATION_BLOCKED", vm, "keep"]


async def test_ordering_fields_refuse_negative_values(w: World) -> None:
    vm = await vm_with(w)
    await w.call("VM.set_start_delay", w.root, vm, "5")
    await w.call("VM.set_order", w.root, vm, "2")
    r = w.store.get("VM", vm)
    assert r is not None and (r["start_delay"], r["order"]) == (5, 2)
    assert await w.fail("VM.set_shutdown_delay", w.root, vm, "-1") == [
        "INVALID_VALUE", "shutdown_delay", "-1",
    ]  # fmt: skip


async def test_is_a_template_follows_make_into_template_rules(w: World) -> None:
    vm = await vm_with(w)
    await w.call("VM.start", w.root, vm, False, False)
    assert await w.fail("VM.set_is_a_template", w.root, vm, True) == [
        "VM_BAD_POWER_STATE", vm, "halted", "running",
    ]  # fmt: skip
    await w.call("VM.hard_shutdown", w.root, vm)
    await w.call("VM.set_is_a_template", w.root, vm, True)
    r = w.store.get("VM", vm)
    assert r is not None and "provision" in r["allowed_operations"]
    await w.call("VM.set_is_a_template", w.root, vm, False)
    r = w.store.get("VM", vm)
    assert r is not None and "start" in r["allowed_operations"]


async def test_boot_checks_on_the_host(w: World) -> None:
    from openxapi.api.vm_domains import domains_of

    host = w.state.host_ref
    vm = await vm_with(w)
    assert await w.call("VM.assert_can_boot_here", w.root, vm, host) == ""
    assert await w.call("VM.get_possible_hosts", w.root, vm) == [host]
    backend = domains_of(w.state).backend
    backend.settings.host_memory = GIB // 2  # type: ignore[attr-defined]
    assert await w.fail("VM.assert_can_boot_here", w.root, vm, host) == [
        "HOST_NOT_ENOUGH_FREE_MEMORY", str(GIB), str(GIB // 2),
    ]  # fmt: skip
    assert await w.call("VM.get_possible_hosts", w.root, vm) == []
    backend.settings.host_memory = 4 * GIB  # type: ignore[attr-defined]
    await w.call("VM.set_VCPUs_params", w.root, vm, {})
    w.store.update("VM", vm, {"VCPUs_max": 1000})
    assert await w.fail("VM.assert_can_boot_here", w.root, vm, host) == [
        "HOST_NOT_ENOUGH_PCPUS", "1000", "64",
    ]  # fmt: skip
