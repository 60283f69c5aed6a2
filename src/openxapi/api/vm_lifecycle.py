"""The VM state machine: which operations a VM allows, and the exact error when it does not.

Pure functions over a VM record and a few facts about its surroundings (core-api.md §6.4,
after the reference's xapi_vm_lifecycle). The first failing check wins; the order matters
because clients see the error it yields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from openxapi.errors import ApiError

#: Every vm_operations value, in enum order.
VM_OPERATIONS = (
    "snapshot", "clone", "copy", "create_template", "revert", "checkpoint",
    "snapshot_with_quiesce", "provision", "start", "start_on", "pause", "unpause",
    "clean_shutdown", "clean_reboot", "hard_shutdown", "power_state_reset", "hard_reboot",
    "suspend", "csvm", "resume", "resume_on", "pool_migrate", "migrate_send",
    "get_boot_record", "send_sysrq", "send_trigger", "query_services", "shutdown",
    "call_plugin", "changing_memory_live", "awaiting_memory_live", "changing_dynamic_range",
    "changing_static_range", "changing_memory_limits", "changing_shadow_memory",
    "changing_shadow_memory_live", "changing_VCPUs", "changing_VCPUs_live", "changing_NVRAM",
    "assert_operation_valid", "data_source_op", "update_allowed_operations",
    "make_into_template", "import", "export", "metadata_export", "reverting", "destroy",
    "create_vtpm", "sysprep",
)  # fmt: skip

HALTED, PAUSED, RUNNING, SUSPENDED = "Halted", "Paused", "Running", "Suspended"
_ANY = (HALTED, PAUSED, RUNNING, SUSPENDED)


def _ops(text: str) -> frozenset[str]:
    return frozenset(text.split())


_POWER_STATES: dict[str, tuple[str, ...]] = {}
for _names, _states in (
    ("start start_on provision make_into_template changing_shadow_memory changing_NVRAM "
     "create_vtpm changing_VCPUs changing_static_range changing_memory_limits", (HALTED,)),
    ("unpause", (PAUSED,)),
    ("resume resume_on csvm", (SUSPENDED,)),
    ("pause suspend clean_shutdown clean_reboot pool_migrate send_sysrq send_trigger "
     "call_plugin changing_memory_live awaiting_memory_live changing_shadow_memory_live "
     "changing_VCPUs_live data_source_op snapshot_with_quiesce sysprep", (RUNNING,)),
    ("changing_dynamic_range", (HALTED, RUNNING)),
    ("clone copy", (HALTED,)),
    ("create_template destroy export", (HALTED, SUSPENDED)),
    ("hard_reboot", (PAUSED, RUNNING)),
    ("checkpoint get_boot_record shutdown hard_shutdown", (PAUSED, SUSPENDED, RUNNING)),
    ("migrate_send", (HALTED, SUSPENDED, RUNNING)),
    ("snapshot revert reverting metadata_export power_state_reset assert_operation_valid "
     "update_allowed_operations query_services", _ANY),
    ("import", ()),
):  # fmt: skip
    for _op in _names.split():
        _POWER_STATES[_op] = _states

#: Operations never listed in allowed_operations.
NEVER_LISTED = _ops(
    "create_template power_state_reset csvm get_boot_record send_sysrq send_trigger "
    "query_services shutdown call_plugin changing_memory_live awaiting_memory_live "
    "changing_memory_limits changing_shadow_memory_live changing_VCPUs assert_operation_valid "
    "data_source_op update_allowed_operations import reverting"
)
_TEMPLATE_OK = _ops(
    "changing_dynamic_range changing_static_range changing_memory_limits changing_shadow_memory "
    "changing_VCPUs changing_NVRAM clone copy export metadata_export provision"
)
_SNAPSHOT_OK = _ops("revert clone copy export destroy hard_shutdown metadata_export")
_IMMOBILE_OPS = frozenset({"suspend", "checkpoint", "pool_migrate", "migrate_send"})
_CONTROL_DOMAIN_OK = _ops(
    "data_source_op changing_memory_live awaiting_memory_live metadata_export "
    "changing_dynamic_range changing_memory_limits changing_static_range start start_on "
    "changing_VCPUs destroy"
)
_SUSPEND_FEATURE_OPS = frozenset({"suspend", "checkpoint", "pool_migrate", "migrate_send"})


@dataclass(frozen=True, slots=True)
class VmFacts:
    """What the checks need beyond the VM record itself, gathered by the caller."""

    #: VM_metrics.hvm: the running domain booted as HVM.
    booted_hvm: bool = False
    #: VM_guest_metrics.PV_drivers_version has a major and minor (full PV drivers).
    pv_drivers: bool = False
    #: VM_guest_metrics.other (guest feature flags).
    guest_other: Mapping[str, str] = field(default_factory=dict)
    #: The number of VTPMs, and of attached PCIs / VGPUs / VUSBs.
    vtpms: int = 0
    pcis: int = 0
    vgpus: int = 0
    vusbs: int = 0
    #: Some VDI of the VM has on_boot=reset.
    reset_on_boot_vdi: str = ""
    #: Cloning suspended VMs is enabled (pool-wide switch).
    clone_suspended: bool = False


def _truthy(value: Any) -> bool:
    return str(value).lower() in ("true", "1")


def is_default_template(vm: Mapping[str, Any]) -> bool:
    """A default template: flagged as such, or marked so in other_config."""
    return bool(vm.get("is_default_template")) or _truthy(
        vm.get("other_config", {}).get("default_template", "")
    )


def allowed_power_states(vm: Mapping[str, Any], op: str, facts: VmFacts) -> tuple[str, ...]:
    """The power states in which ``op`` may run on ``vm``."""
    states = _POWER_STATES[op]
    if op in ("changing_VCPUs", "changing_static_range", "changing_memory_limits") and vm.get(
        "is_control_domain"
    ):
        return (HALTED, RUNNING)
    if op in ("clone", "copy") and (vm.get("is_a_snapshot") or facts.clone_suspended):
        return (HALTED, SUSPENDED)
    return states


def _concurrent_ok(op: str, running: Iterable[str]) -> bool:
    running = list(running)
    groups = ({"clone", "copy", "export"}, {"snapshot", "checkpoint"}, {"get_boot_record"})
    for group in groups:
        if op in group and all(r in group for r in running):
            return True
    if op == "snapshot" and all(r == "snapshot_with_quiesce" for r in running):
        return True
    if op in ("metadata_export", "clean_shutdown", "clean_reboot") and all(
        r == "migrate_send" for r in running
    ):
        return True
    if op == "hard_shutdown" and "hard_shutdown" not in running:
        return True
    return op == "hard_reboot" and not ({"hard_shutdown", "hard_reboot"} & set(running))


def _in_progress(ref: str, op: str, current: Mapping[str, str]) -> ApiError:
    tasks = list(current)
    ops = [current[t] for t in tasks]
    if len(tasks) == 1:
        return ApiError("OTHER_OPERATION_IN_PROGRESS", "VM", ref, ops[0], tasks[0])
    return ApiError(
        "OTHER_OPERATION_IN_PROGRESS",
        "VM",
        ref,
        "{" + ",".join(ops) + "}",
        "{" + ",".join(tasks) + "}",
    )


def _feature_error(
    vm: Mapping[str, Any], ref: str, op: str, facts: VmFacts, strict: bool
) -> ApiError | None:
    if vm.get("power_state") != RUNNING or not facts.booted_hvm or facts.pv_drivers:
        return None
    other = facts.guest_other

    def lacks(feature: str) -> bool:
        return not _truthy(other.get(feature, ""))

    if (
        op == "clean_shutdown"
        and strict
        and lacks("feature-shutdown")
        and lacks("feature-poweroff")
    ):
        return ApiError("VM_LACKS_FEATURE", ref)
    if op == "clean_reboot" and strict and lacks("feature-shutdown") and lacks("feature-reboot"):
        return ApiError("VM_LACKS_FEATURE", ref)
    if op == "changing_VCPUs_live" and lacks("feature-vcpu-hotplug"):
        return ApiError("VM_LACKS_FEATURE", ref)
    if op in _SUSPEND_FEATURE_OPS and strict:
        reason = other.get("data-cant-suspend-reason", "")
        if reason:
            return ApiError("VM_NON_SUSPENDABLE", ref, reason)
        if lacks("feature-suspend"):
            return ApiError("VM_LACKS_FEATURE", ref)
    return None


def check_operation_error(
    vm: Mapping[str, Any],
    ref: str,
    op: str,
    facts: VmFacts | None = None,
    *,
    strict: bool = True,
    ignore_current: Iterable[str] = (),
) -> ApiError | None:
    """The error ``op`` on ``vm`` would fail with now, or None when it is allowed.

    ``ignore_current`` names task refs to leave out of current_operations (the caller's own).
    ``strict`` as in the reference: a non-strict check lets a clean shutdown be attempted on a
    guest that has not advertised the feature.
    """
    facts = facts or VmFacts()
    blocked = vm.get("blocked_operations", {})
    if op in blocked:
        return ApiError("OPERATION_BLOCKED", ref, blocked[op])
    power = vm.get("power_state", HALTED)
    allowed = allowed_power_states(vm, op, facts)
    if power not in allowed:
        expected = ", ".join(s.lower() for s in allowed)
        return ApiError("VM_BAD_POWER_STATE", ref, expected, power.lower())
    skip = set(ignore_current)
    current = {t: o for t, o in vm.get("current_operations", {}).items() if t not in skip}
    if current and not _concurrent_ok(op, current.values()):
        return _in_progress(ref, op, current)
    is_snapshot = bool(vm.get("is_a_snapshot"))
    if vm.get("is_a_template") and not is_snapshot:
        ok = op in _TEMPLATE_OK or (
            op in ("destroy", "migrate_send") and not is_default_template(vm)
        )
        if not ok:
            return ApiError("VM_IS_TEMPLATE", ref, op)
    if is_snapshot and op not in _SNAPSHOT_OK:
        return ApiError("VM_IS_A_SNAPSHOT", ref, op)
    if op == "provision" and not vm.get("is_a_template"):
        return ApiError("PROVISION_ONLY_ALLOWED_ON_TEMPLATE")
    if op == "revert" and not is_snapshot:
        return ApiError("REVERT_ONLY_ALLOWED_ON_SNAPSHOT")
    platform = vm.get("platform", {})
    nested = _truthy(platform.get("nested-virt", ""))
    if op in _IMMOBILE_OPS and (_truthy(platform.get("nomigrate", "")) or nested):
        return ApiError("VM_IS_IMMOBILE", ref)
    if op == "changing_dynamic_range" and nested:
        return ApiError("VM_IS_USING_NESTED_VIRT", ref)
    if vm.get("is_control_domain"):
        if vm.get("domid") == 0 and op in ("changing_VCPUs", "destroy"):
            return ApiError("OPERATION_NOT_ALLOWED", "This operation is not allowed on dom0")
        if op not in _CONTROL_DOMAIN_OK:
            return ApiError(
                "OPERATION_NOT_ALLOWED", "This operation is not allowed on a control domain"
            )
    err = _feature_error(vm, ref, op, facts, strict)
    if err is not None:
        return err
    return _device_error(vm, ref, op, facts)


def _device_error(vm: Mapping[str, Any], ref: str, op: str, facts: VmFacts) -> ApiError | None:
    if op == "snapshot_with_quiesce":
        return ApiError("VM_SNAPSHOT_WITH_QUIESCE_NOT_SUPPORTED", ref)
    if facts.reset_on_boot_vdi and op in ("snapshot", "checkpoint", "suspend"):
        return ApiError("VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION")
    mobility = ("suspend", "checkpoint", "pool_migrate", "migrate_send")
    if facts.pcis and op in mobility:
        return ApiError("VM_HAS_PCI_ATTACHED", ref)
    if facts.vgpus and op in mobility:
        return ApiError("VM_HAS_VGPU", ref)
    if facts.vusbs and op in mobility:
        return ApiError("VM_HAS_VUSBS", ref)
    if op == "make_into_template":
        for fld in ("appliance", "protection_policy", "snapshot_schedule"):
            value = vm.get(fld, "OpaqueRef:NULL")
            if value and value != "OpaqueRef:NULL":
                return ApiError("OPERATION_NOT_ALLOWED", f"VM has a {fld} set")
    if op == "query_services" and not _truthy(vm.get("other_config", {}).get("is_system_domain")):
        return ApiError("NOT_SYSTEM_DOMAIN", ref)
    if op == "create_vtpm" and facts.vtpms:
        return ApiError("VTPM_MAX_AMOUNT_REACHED", "1")
    return None


def allowed_operations(vm: Mapping[str, Any], ref: str, facts: VmFacts | None = None) -> list[str]:
    """Every listable operation that passes the strict checks now, in enum order."""
    facts = facts or VmFacts()
    return [
        op
        for op in VM_OPERATIONS
        if op not in NEVER_LISTED and check_operation_error(vm, ref, op, facts) is None
    ]


def assert_operation_valid(
    vm: Mapping[str, Any],
    ref: str,
    op: str,
    facts: VmFacts | None = None,
    *,
    strict: bool = True,
    ignore_current: Iterable[str] = (),
) -> None:
    """Raise the lifecycle error for ``op`` on ``vm``, if any."""
    err = check_operation_error(vm, ref, op, facts, strict=strict, ignore_current=ignore_current)
    if err is not None:
        raise err
