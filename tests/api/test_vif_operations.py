"""The VIF state machine: every combination of VIF and VM state against the reference's rules."""

from __future__ import annotations

import itertools
from typing import Any

from openxapi.api.handlers.vif import VIF_OPERATIONS, allowed_vif_operations, vif_operation_errors

VIF_REF = "OpaqueRef:vif"
VM_REF = "OpaqueRef:vm"
POWER_STATES = ("Halted", "Paused", "Running", "Suspended")
VM_OPS = ({}, {"t1": "clean_shutdown"}, {"t1": "snapshot"}, {"t1": "pause", "t2": "suspend"})
VIF_OPS: tuple[dict[str, str], ...] = ({}, {"OpaqueRef:t": "plug"})


def expected(
    power: str, attached: bool, dom0: bool, vm_ops: dict[str, str], vif_ops: dict[str, str]
) -> dict[str, Any]:
    """The rules of storage-network-http.md §2.3 and the reference, written out plainly."""
    out: dict[str, Any] = {}
    for op in VIF_OPERATIONS:
        if vif_ops:
            task, current = next(iter(vif_ops.items()))
            out[op] = (
                "OTHER_OPERATION_IN_PROGRESS",
                "VIF",
                VIF_REF,
                "{" + current + "}",
                "{" + task + "}",
            )
        elif op == "attach":
            out[op] = None
        elif op == "plug" and dom0:
            out[op] = ("OPERATION_NOT_ALLOWED", "Control domain does not support hotplug")
        elif power != "Running":
            out[op] = ("VM_BAD_POWER_STATE", VM_REF, "running", power.lower())
        elif op == "plug" and attached:
            out[op] = ("DEVICE_ALREADY_ATTACHED", VIF_REF)
        elif op == "unplug" and not attached:
            out[op] = ("DEVICE_ALREADY_DETACHED", VIF_REF)
        elif any(
            v in ("clean_shutdown", "hard_shutdown", "suspend", "pause") for v in vm_ops.values()
        ):
            blocking = next(
                v
                for v in vm_ops.values()
                if v in ("clean_shutdown", "hard_shutdown", "suspend", "pause")
            )
            out[op] = ("OPERATION_NOT_ALLOWED", f"Current operation on VM:{VM_REF} is {blocking}")
        else:
            out[op] = None
    return out


def test_every_combination() -> None:
    for power, attached, dom0, vm_ops, vif_ops in itertools.product(
        POWER_STATES, (False, True), (False, True), VM_OPS, VIF_OPS
    ):
        vif = {"current_operations": vif_ops, "currently_attached": attached}
        vm = {"power_state": power, "is_control_domain": dom0, "current_operations": vm_ops}
        want = expected(power, attached, dom0, vm_ops, vif_ops)
        got = vif_operation_errors(VIF_REF, vif, VM_REF, vm)
        assert got == want, (power, attached, dom0, vm_ops, vif_ops)
        allowed = allowed_vif_operations(VIF_REF, vif, VM_REF, vm)
        assert allowed == [op for op in VIF_OPERATIONS if want[op] is None]


def test_typical_states() -> None:
    def allowed(power: str, attached: bool) -> list[str]:
        vif = {"current_operations": {}, "currently_attached": attached}
        vm = {"power_state": power, "is_control_domain": False, "current_operations": {}}
        return allowed_vif_operations(VIF_REF, vif, VM_REF, vm)

    assert allowed("Halted", False) == ["attach"]
    assert allowed("Running", False) == ["attach", "plug"]
    assert allowed("Running", True) == ["attach", "unplug"]
    assert allowed("Suspended", True) == ["attach"]


def test_several_current_operations_are_listed_in_braces() -> None:
    vif = {"current_operations": {"A": "plug", "B": "unplug"}, "currently_attached": False}
    vm = {"power_state": "Running", "is_control_domain": False, "current_operations": {}}
    err = vif_operation_errors(VIF_REF, vif, VM_REF, vm)["attach"]
    assert err == ("OTHER_OPERATION_IN_PROGRESS", "VIF", VIF_REF, "{unplug; plug}", "{B; A}")
