"""VDI operation rules: exclusivity, live operations, capabilities, per-operation checks."""

from __future__ import annotations

from typing import Any

import pytest

from openxapi.api.storage_rules import LIVE_OPERATIONS, VDI_OPERATIONS, vdi_allowed, vdi_error
from openxapi.storage.iso import IsoDriver
from openxapi.storage.localdir import LocalDirDriver

REF, SR = "OpaqueRef:vdi", "OpaqueRef:sr"


def err(op: str, vdi: dict[str, Any] | None = None, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "sr_ref": SR,
        "sr_attached": True,
        "sr_type": "file",
        "is_tools_sr": False,
        "vbds": [],
    }
    features = kw.pop("features", LocalDirDriver.features)
    args.update(kw)
    base = {"type": "user", "on_boot": "persist", "sharable": False}
    return vdi_error(op, REF, {**base, **(vdi or {})}, features, **args)


def test_idle_disk_offers_what_the_driver_supports() -> None:
    allowed = vdi_allowed({op: err(op) for op in VDI_OPERATIONS})
    assert allowed == ["clone", "copy", "resize", "snapshot", "destroy", "forget", "update"]


def test_iso_disks_can_be_copied_forgotten_and_updated() -> None:
    allowed = vdi_allowed({op: err(op, features=IsoDriver.features) for op in VDI_OPERATIONS})
    assert allowed == ["copy", "forget", "update"]
    assert err("destroy", features=IsoDriver.features) == ("SR_OPERATION_NOT_SUPPORTED", [SR])


@pytest.mark.parametrize("op", VDI_OPERATIONS)
def test_a_current_operation_excludes_others_but_copies_share(op: str) -> None:
    current = {"current_operations": {"OpaqueRef:t": "copy"}}
    e = err(op, current)
    if op == "copy":
        assert e is None
    else:
        assert e == ("OTHER_OPERATION_IN_PROGRESS", ["VDI", REF, "copy", "OpaqueRef:t"])
    busy = {"current_operations": {"OpaqueRef:t": "clone"}}
    assert err(op, busy) == ("OTHER_OPERATION_IN_PROGRESS", ["VDI", REF, "clone", "OpaqueRef:t"])


@pytest.mark.parametrize("op", ["clone", "snapshot", "destroy", "resize", "copy", "forget"])
def test_attached_disk_allows_live_operations_only(op: str) -> None:
    vbds = [{"currently_attached": True, "mode": "RW"}]
    e = err(op, vbds=vbds)
    if op in LIVE_OPERATIONS:
        assert e is None
    else:
        assert e == ("VDI_IN_USE", [REF, op])
    assert err("copy", vbds=[{"currently_attached": True, "mode": "RO"}]) is None


def test_unplugged_sr() -> None:
    for op in ("destroy", "resize", "clone", "snapshot", "copy", "update"):
        assert err(op, sr_attached=False) == ("SR_HAS_NO_PBDS", [SR])
    assert err("forget", sr_attached=False) is None


def test_per_operation_checks() -> None:
    assert err("snapshot", {"sharable": True}) == ("VDI_IS_SHARABLE", [REF])
    reset = ("VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION", [])
    assert err("snapshot", {"on_boot": "reset"}) == reset
    assert err("copy", {"on_boot": "reset"}) == reset
    assert err("destroy", {"type": "rrd"}) == ("VDI_HAS_RRDS", [REF])
    assert err("forget", {"type": "rrd"}) == ("VDI_HAS_RRDS", [REF])
    assert err("destroy", sr_type="udev") == ("VDI_IS_A_PHYSICAL_DEVICE", [REF])
    assert err("destroy", is_tools_sr=True) == ("SR_OPERATION_NOT_SUPPORTED", [SR])
    assert err("copy", {"type": "ha_statefile"})[0] == "OPERATION_NOT_ALLOWED"
    assert err("set_on_boot") == ("SR_OPERATION_NOT_SUPPORTED", [SR])


def test_vbd_operation_in_progress_blocks() -> None:
    vbds = [{"currently_attached": False, "current_operations": {"OpaqueRef:t": "plug"}}]
    assert err("destroy", vbds=vbds) == (
        "OTHER_OPERATION_IN_PROGRESS",
        ["VDI", REF, "destroy", "OpaqueRef:t"],
    )
