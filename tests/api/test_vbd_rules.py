"""VBD operation rules: power state, media, sharing, operations in progress."""

from __future__ import annotations

from typing import Any

from openxapi.api.storage_rules import vbd_allowed, vbd_errors

VBD, VM, VDI = "OpaqueRef:vbd", "OpaqueRef:vm", "OpaqueRef:vdi"


def table(
    vbd: dict[str, Any], vm: dict[str, Any], vdi: dict[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    base_vbd = {"type": "Disk", "mode": "RW", "empty": False, "unpluggable": True}
    base_vdi = {"managed": True, "sharable": False, "read_only": False}
    return vbd_errors(
        VBD,
        {**base_vbd, **vbd},
        VM,
        vm,
        vdi_ref=VDI,
        vdi=None if vdi is None and vbd.get("empty") else {**base_vdi, **(vdi or {})},
        others=kw.get("others", []),
        others_suspended=kw.get("suspended", []),
    )


def test_halted_vm() -> None:
    t = table({}, {"power_state": "Halted"})
    assert t["plug"] == ("VM_BAD_POWER_STATE", [VM, "running", "halted"])
    assert t["unplug"] == ("VM_BAD_POWER_STATE", [VM, "running", "halted"])
    assert t["insert"] == ("VBD_NOT_REMOVABLE_MEDIA", [VBD])
    assert vbd_allowed(t) == ["attach"]


def test_running_vm() -> None:
    t = table({}, {"power_state": "Running"})
    assert t["plug"] is None
    assert t["unplug"] == ("DEVICE_ALREADY_DETACHED", [VBD])
    t = table({"currently_attached": True}, {"power_state": "Running"})
    assert t["plug"] == ("DEVICE_ALREADY_ATTACHED", [VBD])
    assert t["unplug"] is None
    t = table({"currently_attached": True, "unpluggable": False}, {"power_state": "Running"})
    assert t["unplug"] == ("VBD_NOT_UNPLUGGABLE", [VBD])
    assert t["unplug_force"] == ("VBD_NOT_UNPLUGGABLE", [VBD])


def test_cd_media() -> None:
    cd = {"type": "CD", "mode": "RO"}
    t = table({**cd, "empty": True}, {"power_state": "Halted"})
    assert t["eject"] == ("VBD_IS_EMPTY", [VBD])
    assert t["insert"] is None
    t = table(cd, {"power_state": "Halted"})
    assert t["insert"] == ("VBD_NOT_EMPTY", [VBD])
    assert t["eject"] is None
    t = table(cd, {"power_state": "Suspended"})
    assert t["eject"] == ("VM_BAD_POWER_STATE", [VM, "halted, running", "suspended"])
    t = table(cd, {"power_state": "Running", "domain_type": "hvm"})
    assert t["plug"][0] == "OPERATION_NOT_ALLOWED"


def test_sharing() -> None:
    running = {"power_state": "Running"}
    rw_elsewhere = [{"currently_attached": True, "mode": "RW"}]
    assert table({}, running, others=rw_elsewhere)["plug"] == ("VDI_IN_USE", [VDI])
    ro_elsewhere = [{"currently_attached": True, "mode": "RO"}]
    assert table({"mode": "RO"}, running, others=ro_elsewhere)["plug"] is None
    assert table({}, running, others=ro_elsewhere)["plug"] == ("VDI_IN_USE", [VDI])
    assert table({}, running, {"sharable": True}, others=rw_elsewhere)["plug"] is None
    assert table({}, running, others=rw_elsewhere, suspended=[True])["plug"] is None
    assert table({}, running, {"read_only": True})["plug"] == ("VDI_READONLY", [VDI])


def test_operations_in_progress() -> None:
    running = {"power_state": "Running"}
    t = table({"current_operations": {"OpaqueRef:t": "plug"}}, running)
    assert t["unplug"] == ("OTHER_OPERATION_IN_PROGRESS", ["VBD", VBD, "plug", "OpaqueRef:t"])
    t = table({}, running, {"current_operations": {"OpaqueRef:t": "clone"}})
    assert t["plug"] == ("OTHER_OPERATION_IN_PROGRESS", ["VDI", VDI, "clone", "OpaqueRef:t"])
    t = table({}, running, {"current_operations": {"OpaqueRef:t": "copy"}})
    assert t["plug"] is None
    t = table({}, {"power_state": "Running", "current_operations": {"x": "clean_shutdown"}})
    assert t["plug"][0] == "OPERATION_NOT_ALLOWED"


def test_unmanaged_vdi_blocks_everything() -> None:
    t = table({}, {"power_state": "Running"}, {"managed": False})
    assert vbd_allowed(t) == []
