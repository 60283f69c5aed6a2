"""VM.set_appliance, VM.set_groups and VM.set_snapshot_schedule."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from openxapi.api.vm_domains import stop_domains
from openxapi.spec.model import NULL_REF
from tests.api.handlers.vm_kit import MIB, dom0, new_vm, rec, running_vm
from tests.api.storage_kit import new_sr, new_vbd, new_vdi
from tests.api.world import World, create_args

ALERT = "ALL_RUNNING_VMS_IN_ANTI_AFFINITY_GRP_ON_SINGLE_HOST"


@pytest.fixture
async def w(world: World) -> AsyncIterator[World]:
    yield world
    await stop_domains(world.state)


async def new(w: World, cls: str, **values: Any) -> str:
    ref = await w.call(f"{cls}.create", w.root, create_args(w.api, cls, **values))
    assert isinstance(ref, str)
    return ref


def restrict(w: World, flag: str) -> None:
    w.store.update("pool", w.state.pool_ref, {"restrictions": {flag: "true"}})


# ---- appliances ---------------------------------------------------------------------------
async def test_joining_and_leaving_appliances(w: World) -> None:
    a, b = await new(w, "VM_appliance"), await new(w, "VM_appliance")
    vm = await new_vm(w)
    await w.call("VM.set_appliance", w.root, vm, a)
    assert rec(w, "VM", vm)["appliance"] == a and rec(w, "VM_appliance", a)["VMs"] == [vm]
    assert rec(w, "VM_appliance", a)["allowed_operations"] == ["start"]
    assert "make_into_template" not in rec(w, "VM", vm)["allowed_operations"]
    await w.call("VM.set_appliance", w.root, vm, b)
    assert rec(w, "VM_appliance", a)["VMs"] == [] and rec(w, "VM_appliance", b)["VMs"] == [vm]
    assert rec(w, "VM_appliance", a)["allowed_operations"] == []
    assert rec(w, "VM_appliance", b)["allowed_operations"] == ["start"]
    live = await running_vm(w)
    await w.call("VM.set_appliance", w.root, live, b)
    assert rec(w, "VM_appliance", b)["allowed_operations"] == [
        "start",
        "clean_shutdown",
        "hard_shutdown",
        "shutdown",
    ]
    await w.call("VM.set_appliance", w.root, vm, NULL_REF)
    assert rec(w, "VM", vm)["appliance"] == NULL_REF
    assert "make_into_template" in rec(w, "VM", vm)["allowed_operations"]
    assert rec(w, "VM_appliance", b)["allowed_operations"] == [
        "clean_shutdown",
        "hard_shutdown",
        "shutdown",
    ]


async def test_only_ordinary_vms_join_appliances(w: World) -> None:
    a = await new(w, "VM_appliance")
    refused = [
        "OPERATION_NOT_ALLOWED",
        "Control domains, templates and snapshots cannot be assigned to appliances.",
    ]
    template = await new_vm(w, is_a_template=True)
    for vm in (template, dom0(w)):
        assert await w.fail("VM.set_appliance", w.root, vm, a) == refused
    snap = await w.call("VM.snapshot", w.root, await new_vm(w), "s", [])
    assert await w.fail("VM.set_appliance", w.root, snap, a) == refused
    assert rec(w, "VM_appliance", a)["VMs"] == []


# ---- VM groups ----------------------------------------------------------------------------
def alerts(w: World) -> list[dict[str, Any]]:
    return [m for m in w.store.table("message").values() if m["name"] == ALERT]


async def test_groups_keep_both_sides_and_allow_one_group(w: World) -> None:
    g, h = await new(w, "VM_group"), await new(w, "VM_group")
    vm = await new_vm(w)
    await w.call("VM.set_groups", w.root, vm, [g])
    assert rec(w, "VM", vm)["groups"] == [g] and rec(w, "VM_group", g)["VMs"] == [vm]
    await w.call("VM.set_groups", w.root, vm, [h])
    assert rec(w, "VM_group", g)["VMs"] == [] and rec(w, "VM_group", h)["VMs"] == [vm]
    assert await w.fail("VM.set_groups", w.root, vm, [g, h]) == ["TOO_MANY_GROUPS"]
    await w.call("VM.set_groups", w.root, vm, [])
    assert rec(w, "VM", vm)["groups"] == [] and rec(w, "VM_group", h)["VMs"] == []
    template = await new_vm(w, is_a_template=True)
    assert await w.fail("VM.set_groups", w.root, template, [g]) == [
        "OPERATION_NOT_ALLOWED",
        "Control domains, templates, and snapshots cannot be added to VM groups.",
    ]
    restrict(w, "restrict_vm_groups")
    assert await w.fail("VM.set_groups", w.root, vm, [g]) == ["LICENCE_RESTRICTION", "VM_groups"]


async def test_anti_affinity_breach_raises_and_clears_an_alert(w: World) -> None:
    group = await new(w, "VM_group", placement="anti_affinity")
    normal = await new(w, "VM_group", placement="normal")
    a, b = await running_vm(w), await running_vm(w)
    await w.call("VM.set_groups", w.root, a, [group])
    assert alerts(w) == []
    await w.call("VM.set_groups", w.root, b, [group])
    (alert,) = alerts(w)
    g_uuid = rec(w, "VM_group", group)["uuid"]
    h_uuid = rec(w, "host", w.state.host_ref)["uuid"]
    assert alert["body"] == (
        "<body><message>Breach on VM anti-affinity rules</message>"
        f"<VM_group>{g_uuid}</VM_group><host>{h_uuid}</host></body>"
    )
    assert alert["priority"] == 3 and alert["cls"] == "Pool"
    assert alert["obj_uuid"] == rec(w, "pool", w.state.pool_ref)["uuid"]
    await w.call("VM.set_groups", w.root, a, [group])  # still a breach: the alert stays
    assert alerts(w) == [alert]
    await w.call("VM.set_groups", w.root, b, [normal])
    assert alerts(w) == []


# ---- snapshot schedules -------------------------------------------------------------------
async def test_snapshot_schedule_joins_and_leaves(w: World) -> None:
    vmss = await new(w, "VMSS")
    vm = await new_vm(w)
    await w.call("VM.set_snapshot_schedule", w.root, vm, vmss)
    assert rec(w, "VM", vm)["snapshot_schedule"] == vmss and rec(w, "VMSS", vmss)["VMs"] == [vm]
    assert "make_into_template" not in rec(w, "VM", vm)["allowed_operations"]
    await w.call("VM.set_snapshot_schedule", w.root, vm, NULL_REF)
    assert rec(w, "VM", vm)["snapshot_schedule"] == NULL_REF and rec(w, "VMSS", vmss)["VMs"] == []
    assert "make_into_template" in rec(w, "VM", vm)["allowed_operations"]


async def test_snapshot_schedule_checks_in_the_reference_order(w: World) -> None:
    vmss = await new(w, "VMSS")
    vm = await new_vm(w)
    junk = "OpaqueRef:junk"
    assert await w.fail("VM.set_snapshot_schedule", w.root, vm, junk) == ["INVALID_VALUE", junk]
    assert await w.fail("VM.set_snapshot_schedule", w.root, junk, junk) == ["INVALID_VALUE", junk]
    assert await w.fail("VM.set_snapshot_schedule", w.root, junk, vmss) == [
        "HANDLE_INVALID",
        "VM",
        junk,
    ]
    assert await w.fail("VM.set_snapshot_schedule", w.root, dom0(w), vmss) == [
        "INVALID_VALUE",
        vmss,
    ]
    template = await new_vm(w, is_a_template=True)
    assert await w.fail("VM.set_snapshot_schedule", w.root, template, vmss) == [
        "VM_IS_TEMPLATE",
        template,
    ]
    other = await new_vm(w)  # a ref of another class is known, but is no schedule
    assert await w.fail("VM.set_snapshot_schedule", w.root, vm, other) == [
        "HANDLE_INVALID",
        "VMSS",
        other,
    ]
    restrict(w, "restrict_vmss")
    assert await w.fail("VM.set_snapshot_schedule", w.root, vm, vmss) == [
        "LICENCE_RESTRICTION",
        "VMSS",
    ]


async def test_quiesced_schedules_need_guest_support(w: World) -> None:
    vmss = await new(w, "VMSS", type="snapshot_with_quiesce")
    vm = await new_vm(w)
    assert await w.fail("VM.set_snapshot_schedule", w.root, vm, vmss) == [
        "VM_SNAPSHOT_WITH_QUIESCE_NOT_SUPPORTED",
        vm,
    ]
    sr = await new_sr(w, "dummy")
    vdi = await new_vdi(w, sr, MIB, sm_config={"on_boot": "reset"})
    await new_vbd(w, vm, vdi)
    assert await w.fail("VM.set_snapshot_schedule", w.root, vm, vmss) == [
        "VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION"
    ]
    ready = await new_vm(w)
    gm = w.state.create("VM_guest_metrics", {"other": {"feature-quiesce": "1"}})
    w.store.update("VM", ready, {"guest_metrics": gm})
    await w.call("VM.set_snapshot_schedule", w.root, ready, vmss)
    assert rec(w, "VM", ready)["snapshot_schedule"] == vmss
    restrict(w, "restrict_vss")
    other = await new_vm(w)
    assert await w.fail("VM.set_snapshot_schedule", w.root, other, vmss) == [
        "LICENCE_RESTRICTION",
        "VSS",
    ]
