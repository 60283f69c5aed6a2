"""The VM state machine's pure functions: allowed operations and the first failing check."""

from __future__ import annotations

from typing import Any

import pytest

from openxapi.api.vm_lifecycle import (
    NEVER_LISTED,
    VM_OPERATIONS,
    VmFacts,
    allowed_operations,
    assert_operation_valid,
    check_operation_error,
)
from openxapi.errors import ApiError

REF = "OpaqueRef:vm"
PV = VmFacts(booted_hvm=True, pv_drivers=True)


def ops(text: str) -> set[str]:
    return set(text.split())


def vm(**values: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "power_state": "Halted",
        "is_a_template": False,
        "is_default_template": False,
        "is_a_snapshot": False,
        "is_control_domain": False,
        "blocked_operations": {},
        "current_operations": {},
        "platform": {},
        "other_config": {},
        "domid": -1,
        "appliance": "OpaqueRef:NULL",
        "protection_policy": "OpaqueRef:NULL",
        "snapshot_schedule": "OpaqueRef:NULL",
    }
    rec.update(values)
    return rec


def err(rec: dict[str, Any], op: str, facts: VmFacts | None = None, **kw: Any) -> list[str] | None:
    e = check_operation_error(rec, REF, op, facts, **kw)
    return None if e is None else [e.code, *e.params]


def test_halted_vm_allows_the_worked_example() -> None:
    assert set(allowed_operations(vm(), REF)) == ops(
        "snapshot clone copy start start_on changing_dynamic_range changing_static_range "
        "changing_shadow_memory changing_NVRAM make_into_template export metadata_export "
        "destroy migrate_send create_vtpm"
    )


def test_running_vm_with_pv_drivers_allows_the_worked_example() -> None:
    assert set(allowed_operations(vm(power_state="Running"), REF, PV)) == ops(
        "snapshot checkpoint pause clean_shutdown clean_reboot hard_shutdown hard_reboot "
        "suspend pool_migrate migrate_send changing_dynamic_range changing_VCPUs_live "
        "metadata_export sysprep"
    )


def test_template_allows_the_worked_example() -> None:
    base = ops(
        "clone copy export metadata_export provision changing_dynamic_range "
        "changing_static_range changing_shadow_memory changing_NVRAM"
    )
    assert set(allowed_operations(vm(is_a_template=True), REF)) == base | {
        "destroy",
        "migrate_send",
    }
    default = vm(is_a_template=True, other_config={"default_template": "true"})
    assert set(allowed_operations(default, REF)) == base
    assert set(allowed_operations(vm(is_a_template=True, is_default_template=True), REF)) == base


def test_allowed_operations_are_in_enum_order_and_never_list_hidden_ops() -> None:
    ops = allowed_operations(vm(power_state="Running"), REF, PV)
    assert ops == [o for o in VM_OPERATIONS if o in ops]
    assert not NEVER_LISTED & set(ops)


def test_paused_and_suspended_vms() -> None:
    assert set(allowed_operations(vm(power_state="Paused"), REF)) == {
        "snapshot", "checkpoint", "unpause", "hard_shutdown", "hard_reboot", "metadata_export",
    }  # fmt: skip
    assert set(allowed_operations(vm(power_state="Suspended"), REF)) == {
        "snapshot", "checkpoint", "hard_shutdown", "resume", "resume_on", "migrate_send",
        "export", "metadata_export", "destroy",
    }  # fmt: skip


def test_suspend_waits_for_the_guest_agent_on_hvm() -> None:
    running = vm(power_state="Running")
    no_agent = VmFacts(booted_hvm=True)
    assert err(running, "suspend", no_agent) == ["VM_LACKS_FEATURE", REF]
    assert err(running, "clean_shutdown", no_agent) == ["VM_LACKS_FEATURE", REF]
    assert err(running, "clean_shutdown", no_agent, strict=False) is None
    featured = VmFacts(
        booted_hvm=True, guest_other={"feature-suspend": "1", "feature-poweroff": "1"}
    )
    assert err(running, "suspend", featured) is None
    assert err(running, "clean_shutdown", featured) is None
    assert err(running, "clean_reboot", featured) == ["VM_LACKS_FEATURE", REF]
    cant = VmFacts(booted_hvm=True, guest_other={"data-cant-suspend-reason": "busy"})
    assert err(running, "suspend", cant) == ["VM_NON_SUSPENDABLE", REF, "busy"]
    assert err(running, "suspend", VmFacts()) is None  # PV guests offer it implicitly


@pytest.mark.parametrize(
    ("op", "state", "expected"),
    [
        ("start", "Running", "halted"),
        ("pause", "Halted", "running"),
        ("unpause", "Running", "paused"),
        ("resume", "Halted", "suspended"),
        ("hard_reboot", "Halted", "paused, running"),
        ("destroy", "Running", "halted, suspended"),
        ("hard_shutdown", "Halted", "paused, suspended, running"),
        ("clean_shutdown", "Suspended", "running"),
        ("changing_dynamic_range", "Paused", "halted, running"),
        ("migrate_send", "Paused", "halted, suspended, running"),
    ],
)
def test_bad_power_state_lists_allowed_states_lowercase(op: str, state: str, expected: str) -> None:
    assert err(vm(power_state=state), op) == ["VM_BAD_POWER_STATE", REF, expected, state.lower()]


def test_blocked_operations_win_over_everything() -> None:
    rec = vm(power_state="Running", blocked_operations={"start": "no way"}, is_a_template=True)
    assert err(rec, "start") == ["OPERATION_BLOCKED", REF, "no way"]


def test_power_state_is_checked_before_operations_in_progress() -> None:
    rec = vm(current_operations={"OpaqueRef:t1": "clone"})
    assert err(rec, "pause") == ["VM_BAD_POWER_STATE", REF, "running", "halted"]


def test_other_operation_in_progress() -> None:
    rec = vm(current_operations={"OpaqueRef:t1": "start"})
    assert err(rec, "start") == ["OTHER_OPERATION_IN_PROGRESS", "VM", REF, "start", "OpaqueRef:t1"]
    assert err(rec, "start", ignore_current=["OpaqueRef:t1"]) is None
    two = vm(current_operations={"OpaqueRef:t1": "clone", "OpaqueRef:t2": "copy"})
    assert err(two, "start") == [
        "OTHER_OPERATION_IN_PROGRESS", "VM", REF, "{clone,copy}", "{OpaqueRef:t1,OpaqueRef:t2}",
    ]  # fmt: skip
    assert err(two, "export") is None
    assert allowed_operations(two, REF) == ["clone", "copy", "export"]


def test_concurrency_rules_for_hard_operations() -> None:
    running = vm(power_state="Running", current_operations={"OpaqueRef:t": "clean_shutdown"})
    assert err(running, "hard_shutdown", PV) is None
    assert err(running, "hard_reboot", PV) is None
    hard = vm(power_state="Running", current_operations={"OpaqueRef:t": "hard_shutdown"})
    assert err(hard, "hard_shutdown", PV) is not None
    assert err(hard, "hard_reboot", PV) is not None
    snap = vm(power_state="Running", current_operations={"OpaqueRef:t": "snapshot"})
    assert err(snap, "checkpoint", PV) is None
    mig = vm(power_state="Running", current_operations={"OpaqueRef:t": "migrate_send"})
    assert err(mig, "clean_shutdown", PV) is None
    assert err(mig, "pause", PV) is not None


def test_template_rules() -> None:
    tpl = vm(is_a_template=True)
    assert err(tpl, "start") == ["VM_IS_TEMPLATE", REF, "start"]
    assert err(tpl, "provision") is None
    assert err(vm(is_a_template=True, is_default_template=True), "destroy") == [
        "VM_IS_TEMPLATE", REF, "destroy",
    ]  # fmt: skip
    assert err(vm(is_a_template=True, other_config={"default_template": "1"}), "destroy") == [
        "VM_IS_TEMPLATE", REF, "destroy",
    ]  # fmt: skip


def test_snapshot_rules() -> None:
    snap = vm(is_a_snapshot=True, is_a_template=True)
    assert err(snap, "start") == ["VM_IS_A_SNAPSHOT", REF, "start"]
    assert err(snap, "revert") is None
    assert err(vm(is_a_snapshot=True, power_state="Suspended"), "clone") is None
    assert err(vm(power_state="Suspended"), "clone") is not None
    assert err(vm(power_state="Suspended"), "clone", VmFacts(clone_suspended=True)) is None


def test_provision_and_revert_need_the_right_kind_of_vm() -> None:
    assert err(vm(), "provision") == ["PROVISION_ONLY_ALLOWED_ON_TEMPLATE"]
    assert err(vm(), "revert") == ["REVERT_ONLY_ALLOWED_ON_SNAPSHOT"]


def test_immobile_and_nested_virt() -> None:
    rec = vm(power_state="Running", platform={"nomigrate": "true"})
    assert err(rec, "suspend", PV) == ["VM_IS_IMMOBILE", REF]
    nested = vm(platform={"nested-virt": "1"})
    assert err(nested, "changing_dynamic_range") == ["VM_IS_USING_NESTED_VIRT", REF]


def test_control_domain_rules() -> None:
    dom0 = vm(power_state="Running", is_control_domain=True, domid=0)
    assert err(dom0, "destroy") == ["VM_BAD_POWER_STATE", REF, "halted, suspended", "running"]
    assert err(dom0, "changing_VCPUs") == [
        "OPERATION_NOT_ALLOWED", "This operation is not allowed on dom0",
    ]  # fmt: skip
    assert err(dom0, "pause") == [
        "OPERATION_NOT_ALLOWED", "This operation is not allowed on a control domain",
    ]  # fmt: skip
    assert allowed_operations(dom0, REF) == [
        "changing_dynamic_range", "changing_static_range", "metadata_export",
    ]  # fmt: skip
    halted_dom0 = vm(is_control_domain=True, domid=0)
    assert err(halted_dom0, "destroy") == [
        "OPERATION_NOT_ALLOWED", "This operation is not allowed on dom0",
    ]  # fmt: skip


def test_device_and_misc_rules() -> None:
    running = vm(power_state="Running")
    assert err(running, "snapshot_with_quiesce", PV) == [
        "VM_SNAPSHOT_WITH_QUIESCE_NOT_SUPPORTED", REF,
    ]  # fmt: skip
    assert err(running, "suspend", VmFacts(pcis=1)) == ["VM_HAS_PCI_ATTACHED", REF]
    assert err(running, "suspend", VmFacts(vgpus=1)) == ["VM_HAS_VGPU", REF]
    assert err(running, "suspend", VmFacts(vusbs=1)) == ["VM_HAS_VUSBS", REF]
    assert err(running, "snapshot", VmFacts(reset_on_boot_vdi="OpaqueRef:v")) == [
        "VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION",
    ]  # fmt: skip
    assert err(vm(), "create_vtpm", VmFacts(vtpms=1)) == ["VTPM_MAX_AMOUNT_REACHED", "1"]
    assert err(vm(), "query_services") == ["NOT_SYSTEM_DOMAIN", REF]


def test_assert_operation_valid_raises_the_error() -> None:
    with pytest.raises(ApiError) as e:
        assert_operation_valid(vm(), REF, "pause")
    assert e.value.code == "VM_BAD_POWER_STATE"
    assert_operation_valid(vm(), REF, "start")
