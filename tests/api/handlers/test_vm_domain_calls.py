"""VM.get_boot_record, VM.query_services, VM.add_to_VCPUs_params_live and
VM.restart_device_models."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from openxapi.api.vm_domains import stop_domains
from tests.api.handlers.vm_kit import bad_power, dom0, new_vm, rec, running_vm
from tests.api.world import World


@pytest.fixture
async def w(world: World) -> AsyncIterator[World]:
    yield world
    await stop_domains(world.state)


async def test_boot_record_is_the_record_during_the_operation(w: World) -> None:
    halted = await new_vm(w)
    assert await w.fail("VM.get_boot_record", w.root, halted) == bad_power(
        halted, "paused, suspended, running", "halted"
    )
    vm = await running_vm(w, name_label="booted")
    record = await w.call("VM.get_boot_record", w.root, vm)
    assert record["name_label"] == "booted" and record["power_state"] == "Running"
    assert record["uuid"] == rec(w, "VM", vm)["uuid"]
    assert list(record["current_operations"].values()) == ["get_boot_record"]
    assert rec(w, "VM", vm)["current_operations"] == {}


async def test_query_services_needs_a_system_domain_and_is_not_implemented(w: World) -> None:
    vm = await new_vm(w)
    assert await w.fail("VM.query_services", w.root, vm) == ["NOT_SYSTEM_DOMAIN", vm]
    assert await w.fail("VM.query_services", w.root, dom0(w)) == [
        "OPERATION_NOT_ALLOWED",
        "This operation is not allowed on a control domain",
    ]
    template = await new_vm(w, is_a_template=True)
    assert await w.fail("VM.query_services", w.root, template) == [
        "VM_IS_TEMPLATE",
        template,
        "query_services",
    ]
    system = await new_vm(w, other_config={"is_system_domain": "true"})
    assert await w.fail("VM.query_services", w.root, system) == [
        "NOT_IMPLEMENTED",
        "query_services",
    ]
    assert rec(w, "VM", system)["current_operations"] == {}


async def test_vcpu_params_live_checks_the_lifecycle_then_is_not_implemented(w: World) -> None:
    halted = await new_vm(w)
    assert await w.fail("VM.add_to_VCPUs_params_live", w.root, halted, "weight", "512") == (
        bad_power(halted, "running", "halted")
    )
    vm = await running_vm(w)
    assert await w.fail("VM.add_to_VCPUs_params_live", w.root, vm, "weight", "512") == [
        "NOT_IMPLEMENTED",
        "add_to_VCPUs_params_live",
    ]
    r = rec(w, "VM", vm)
    assert "weight" not in r["VCPUs_params"] and r["current_operations"] == {}


async def test_restart_device_models_needs_a_running_vm(w: World) -> None:
    halted = await new_vm(w)
    assert await w.fail("VM.restart_device_models", w.root, halted) == [
        "VM_BAD_POWER_STATE",
        halted,
        "Running",
        "Halted",
    ]
    vm = await running_vm(w)
    domid = rec(w, "VM", vm)["domid"]
    # the restart is a live migration to the same host: a new domain, still running
    await w.call("VM.restart_device_models", w.root, vm)
    assert rec(w, "VM", vm)["power_state"] == "Running"
    assert rec(w, "VM", vm)["domid"] != domid
