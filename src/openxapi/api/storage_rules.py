"""Which SR, VDI and VBD operations are allowed now, and the reference's error if not.

Pure functions over plain records, so each rule is tested exhaustively and the same
function computes both ``allowed_operations`` and the error a refused call returns.
An error is ``(code, params)``; None means the operation may go ahead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Error = tuple[str, list[str]]
Record = Mapping[str, Any]

# ---- SR --------------------------------------------------------------------------------

#: Operations listed in SR.allowed_operations (the reference's list; the other values of
#: the enum are never offered).
SR_OPERATIONS = (
    "scan",
    "destroy",
    "forget",
    "plug",
    "unplug",
    "update",
    "vdi_create",
    "vdi_introduce",
    "vdi_destroy",
    "vdi_resize",
    "vdi_clone",
    "vdi_snapshot",
    "vdi_mirror",
    "vdi_enable_cbt",
    "vdi_disable_cbt",
    "vdi_data_destroy",
    "vdi_list_changed_blocks",
    "vdi_set_on_boot",
    "pbd_create",
    "pbd_destroy",
)

#: SR operation → the SM feature it needs (the reference's table; clone is always
#: possible, by copy when the backend cannot clone).
SR_FEATURE_OF = {
    "vdi_create": "VDI_CREATE",
    "vdi_destroy": "VDI_DELETE",
    "vdi_resize": "VDI_RESIZE",
    "vdi_introduce": "VDI_INTRODUCE",
    "vdi_mirror": "VDI_MIRROR",
    "vdi_snapshot": "VDI_SNAPSHOT",
    "vdi_enable_cbt": "VDI_CONFIG_CBT",
    "vdi_disable_cbt": "VDI_CONFIG_CBT",
    "vdi_data_destroy": "VDI_CONFIG_CBT",
    "vdi_list_changed_blocks": "VDI_CONFIG_CBT",
    "vdi_set_on_boot": "VDI_RESET_ON_BOOT",
    "update": "SR_UPDATE",
    "vdi_revert": "VDI_REVERT",
}


def _holder(current: Mapping[str, str], ignore: Sequence[str] = ()) -> tuple[str, str] | None:
    """(task, operation) of a current operation not in ``ignore``."""
    for task, op in current.items():
        if op not in ignore:
            return task, op
    return None


def sr_errors(
    ref: str,
    sr: Record,
    features: Mapping[str, int],
    *,
    attached_pbds: int,
    pbds: int,
    has_managed_vdis: bool,
) -> dict[str, Error | None]:
    """Every SR operation with its error (None: allowed)."""
    table: dict[str, Error | None] = dict.fromkeys(SR_OPERATIONS)

    def refuse(code: str, params: list[str], ops: Sequence[str]) -> None:
        for op in ops:
            if op in table and table[op] is None:
                table[op] = (code, params)

    caps = dict(features)
    if sr.get("is_tools_sr"):
        caps.pop("VDI_CREATE", None)
        caps.pop("VDI_DELETE", None)
    refuse(
        "SR_OPERATION_NOT_SUPPORTED",
        [ref],
        [op for op, feat in SR_FEATURE_OF.items() if feat not in caps],
    )
    if attached_pbds:
        refuse("SR_HAS_PBD", [ref], ["destroy", "forget"])
    if pbds == 0:
        refuse("SR_HAS_NO_PBDS", [ref], ["destroy"])
    if has_managed_vdis:
        refuse("SR_NOT_EMPTY", [], ["destroy"])
    current = sr.get("current_operations") or {}
    if current:
        only_plugs = all(op == "plug" for op in current.values())
        task, op = next(iter(current.items()))
        refuse(
            "OTHER_OPERATION_IN_PROGRESS",
            ["SR", ref, op, task],
            [o for o in SR_OPERATIONS if not (only_plugs and o == "plug")],
        )
    return table


def sr_allowed(table: Mapping[str, Error | None]) -> list[str]:
    return [op for op in SR_OPERATIONS if table[op] is None]


# ---- VDI ------------------------------------------------------------------------------

#: Operations listed in VDI.allowed_operations (internal ones are never offered).
VDI_OPERATIONS = (
    "clone",
    "copy",
    "resize",
    "resize_online",
    "snapshot",
    "mirror",
    "destroy",
    "forget",
    "update",
    "generate_config",
    "enable_cbt",
    "disable_cbt",
    "data_destroy",
    "list_changed_blocks",
    "set_on_boot",
)

VDI_FEATURE_OF = {
    "snapshot": "VDI_SNAPSHOT",
    "destroy": "VDI_DELETE",
    "resize": "VDI_RESIZE",
    "update": "VDI_UPDATE",
    "resize_online": "VDI_RESIZE_ONLINE",
    "generate_config": "VDI_GENERATE_CONFIG",
    "clone": "VDI_CLONE",
    "mirror": "VDI_MIRROR",
    "enable_cbt": "VDI_CONFIG_CBT",
    "disable_cbt": "VDI_CONFIG_CBT",
    "data_destroy": "VDI_CONFIG_CBT",
    "list_changed_blocks": "VDI_CONFIG_CBT",
    "set_on_boot": "VDI_RESET_ON_BOOT",
    "revert_to": "VDI_REVERT",
}

#: What may run while a VBD has the disk attached.
LIVE_OPERATIONS = frozenset(
    {
        "snapshot",
        "resize_online",
        "blocked",
        "clone",
        "revert_to",
        "mirror",
        "enable_cbt",
        "disable_cbt",
        "data_destroy",
    }
)
#: Operations that need the SR attached on this host.
NEEDS_ATTACHED_SR = frozenset(
    {"destroy", "resize", "resize_online", "clone", "snapshot", "copy", "update"}
)


def vdi_error(
    op: str,
    ref: str,
    vdi: Record,
    features: Mapping[str, int],
    *,
    sr_ref: str,
    sr_attached: bool,
    sr_type: str,
    is_tools_sr: bool,
    vbds: Sequence[Record],
) -> Error | None:
    """The error ``op`` on this VDI meets now, or None.

    Any current operation excludes every other, except that copies (exports) run side by
    side; a disk attached through a VBD allows only the live operations (and copy when
    every attachment is read-only).
    """
    current = vdi.get("current_operations") or {}
    holder = _holder(current, ("copy",) if op == "copy" else ())
    if holder is not None:
        return "OTHER_OPERATION_IN_PROGRESS", ["VDI", ref, holder[1], holder[0]]
    if op in NEEDS_ATTACHED_SR and not sr_attached:
        return "SR_HAS_NO_PBDS", [sr_ref]
    active = [v for v in vbds if v.get("currently_attached") or v.get("reserved")]
    read_only_copy = op == "copy" and all(v.get("mode") == "RO" for v in active)
    if active and op not in LIVE_OPERATIONS and not read_only_copy:
        return "VDI_IN_USE", [ref, op]
    for v in vbds:
        vbd_holder = _holder(v.get("current_operations") or {})
        if vbd_holder is not None:
            return "OTHER_OPERATION_IN_PROGRESS", ["VDI", ref, op, vbd_holder[0]]
    vtype = vdi.get("type")
    if op == "destroy":
        if sr_type == "udev":
            return "VDI_IS_A_PHYSICAL_DEVICE", [ref]
        if is_tools_sr:
            return "SR_OPERATION_NOT_SUPPORTED", [sr_ref]
        if vtype == "rrd":
            return "VDI_HAS_RRDS", [ref]
    if op == "forget" and vtype == "rrd":
        return "VDI_HAS_RRDS", [ref]
    if op == "snapshot":
        if vdi.get("sharable"):
            return "VDI_IS_SHARABLE", [ref]
        if vdi.get("on_boot") == "reset":
            return "VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION", []
    if op == "copy":
        if vdi.get("on_boot") == "reset":
            return "VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION", []
        if vtype in ("ha_statefile", "redo_log"):
            return "OPERATION_NOT_ALLOWED", [
                "VDI containing HA statefile or redo log cannot be copied (check the VDI's "
                "allowed operations)."
            ]
    feature = VDI_FEATURE_OF.get(op)
    clone_by_copy = op == "clone" and "VDI_CREATE" in features
    if feature is not None and feature not in features and not clone_by_copy:
        return "SR_OPERATION_NOT_SUPPORTED", [sr_ref]
    return None


def vdi_allowed(errors: Mapping[str, Error | None]) -> list[str]:
    return [op for op in VDI_OPERATIONS if errors.get(op) is None]


# ---- VBD ----------------------------------------------------------------------------

VBD_OPERATIONS = ("attach", "eject", "insert", "plug", "unplug", "unplug_force", "pause", "unpause")


def vbd_errors(
    ref: str,
    vbd: Record,
    vm_ref: str,
    vm: Record,
    *,
    vdi_ref: str,
    vdi: Record | None,
    others: Sequence[Record],
    others_suspended: Sequence[bool] = (),
    control_domain: bool = False,
) -> dict[str, Error | None]:
    """Every VBD operation with its error (None: allowed).

    ``others`` are the other VBDs of the same VDI (for the sharing check) and
    ``others_suspended`` whether each belongs to a suspended VM (those count as offline).
    """
    table: dict[str, Error | None] = dict.fromkeys(VBD_OPERATIONS)

    def refuse(code: str, params: list[str], ops: Sequence[str]) -> None:
        for op in ops:
            if table[op] is None:
                table[op] = (code, params)

    parallel = ("pause", "unpause")
    current = vbd.get("current_operations") or {}
    if current:
        task, op = next(iter(current.items()))
        params = ["VBD", ref, op, task]
        refuse(
            "OTHER_OPERATION_IN_PROGRESS", params, [o for o in VBD_OPERATIONS if o not in parallel]
        )
        if any(o not in parallel for o in current.values()):
            refuse("OTHER_OPERATION_IN_PROGRESS", params, ["pause"])
        if any(o not in (*parallel, "attach") for o in current.values()):
            refuse("OTHER_OPERATION_IN_PROGRESS", params, ["unpause"])
    if not vbd.get("unpluggable", True):
        refuse("VBD_NOT_UNPLUGGABLE", [ref], ["unplug", "unplug_force"])
    if vbd.get("type") != "CD":
        refuse("VBD_NOT_REMOVABLE_MEDIA", [ref], ["insert", "eject"])
    empty = bool(vbd.get("empty"))
    if empty:
        refuse("VBD_IS_EMPTY", [ref], ["eject"])
    else:
        refuse("VBD_NOT_EMPTY", [ref], ["insert"])
    power = str(vm.get("power_state", "Halted"))
    plugged = bool(vbd.get("currently_attached") or vbd.get("reserved"))
    if power == "Running":
        if plugged:
            refuse("DEVICE_ALREADY_ATTACHED", [ref], ["plug"])
        else:
            refuse("DEVICE_ALREADY_DETACHED", [ref], ["unplug", "unplug_force"])
    else:
        bad = ["plug", "unplug", "unplug_force"]
        if power != "Paused":
            bad = ["pause", "unpause", *bad]
        refuse("VM_BAD_POWER_STATE", [vm_ref, "running", power.lower()], bad)
    for op in (vm.get("current_operations") or {}).values():
        if op in ("clean_shutdown", "hard_shutdown", "suspend", "pause"):
            text = f"Current operation on VM:{vm_ref} is {op}"
            refuse("OPERATION_NOT_ALLOWED", [text], ["plug", "unplug"])
    hvm = vm.get("domain_type") == "hvm" or (
        vm.get("domain_type") in (None, "", "unspecified") and bool(vm.get("HVM_boot_policy"))
    )
    if power == "Running" and hvm and vbd.get("type") == "CD":
        refuse(
            "OPERATION_NOT_ALLOWED",
            ["HVM CDROMs cannot be hotplugged/unplugged, only inserted or ejected"],
            ["plug", "unplug", "unplug_force"],
        )
    if vbd.get("type") == "CD" and power == "Suspended":
        refuse("VM_BAD_POWER_STATE", [vm_ref, "halted, running", "suspended"], ["insert", "eject"])
    if not empty and vdi is not None:
        if not vdi.get("managed", True):
            refuse("VDI_NOT_MANAGED", [ref], list(VBD_OPERATIONS))
        vdi_current = vdi.get("current_operations") or {}
        busy = _holder(vdi_current, ("copy", "mirror"))
        if busy is not None:
            refuse(
                "OTHER_OPERATION_IN_PROGRESS",
                ["VDI", vdi_ref, busy[1], busy[0]],
                ["attach", "plug", "insert"],
            )
        if not vbd.get("currently_attached"):
            suspended = list(others_suspended) + [False] * (len(others) - len(others_suspended))
            active = [
                o
                for o, susp in zip(others, suspended, strict=True)
                if not susp
                and (
                    o.get("currently_attached") or o.get("reserved") or o.get("current_operations")
                )
            ]
            someone_rw = any(o.get("mode") == "RW" for o in active)
            need_write = vbd.get("mode") == "RW"
            if (
                not vdi.get("sharable")
                and not control_domain
                and (someone_rw or (need_write and active))
            ):
                refuse("VDI_IN_USE", [vdi_ref], ["attach", "insert", "plug"])
            if need_write and vdi.get("read_only"):
                refuse("VDI_READONLY", [vdi_ref], ["attach", "insert", "plug"])
    return table


def vbd_allowed(table: Mapping[str, Error | None]) -> list[str]:
    return [op for op in VBD_OPERATIONS if table[op] is None]
