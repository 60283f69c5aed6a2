"""SR allowed operations and the errors of refused ones (pure rules)."""

from __future__ import annotations

from typing import Any

import pytest

from openxapi.api.storage_rules import SR_FEATURE_OF, SR_OPERATIONS, sr_allowed, sr_errors
from openxapi.storage.localdir import LocalDirDriver

REF = "OpaqueRef:sr"
ALL = {f: 1 for f in SR_FEATURE_OF.values()}


def table(sr: dict[str, Any] | None = None, features: Any = None, **kw: Any) -> dict[str, Any]:
    args = {"attached_pbds": 1, "pbds": 1, "has_managed_vdis": False, **kw}
    return sr_errors(REF, sr or {}, ALL if features is None else features, **args)


def test_attached_sr_offers_everything_but_destroy_and_forget() -> None:
    t = table()
    assert t["destroy"] == ("SR_HAS_PBD", [REF])
    assert t["forget"] == ("SR_HAS_PBD", [REF])
    assert set(sr_allowed(t)) == set(SR_OPERATIONS) - {"destroy", "forget"}


def test_destroy_needs_pbds_and_emptiness() -> None:
    assert table(attached_pbds=0, pbds=0)["destroy"] == ("SR_HAS_NO_PBDS", [REF])
    assert table(attached_pbds=0, has_managed_vdis=True)["destroy"] == ("SR_NOT_EMPTY", [])
    assert table(attached_pbds=0)["destroy"] is None
    assert table(attached_pbds=0, pbds=0)["forget"] is None


@pytest.mark.parametrize(("op", "feature"), sorted(SR_FEATURE_OF.items()))
def test_missing_capability_refuses_its_operation(op: str, feature: str) -> None:
    features = {f: 1 for f in ALL if f != feature}
    err = table(features=features).get(op)
    if op in SR_OPERATIONS:
        assert err == ("SR_OPERATION_NOT_SUPPORTED", [REF])
    assert table(features=features).get("vdi_clone") is None


def test_tools_sr_never_creates_or_destroys_vdis() -> None:
    t = table({"is_tools_sr": True})
    assert t["vdi_create"] == ("SR_OPERATION_NOT_SUPPORTED", [REF])
    assert t["vdi_destroy"] == ("SR_OPERATION_NOT_SUPPORTED", [REF])


def test_a_current_operation_blocks_the_others() -> None:
    t = table({"current_operations": {"OpaqueRef:t": "scan"}})
    assert t["vdi_create"] == ("OTHER_OPERATION_IN_PROGRESS", ["SR", REF, "scan", "OpaqueRef:t"])
    assert sr_allowed(t) == []


def test_plugs_run_side_by_side() -> None:
    t = table({"current_operations": {"OpaqueRef:t": "plug"}})
    assert t["plug"] is None
    assert t["unplug"] is not None


def test_real_driver_offers_what_it_supports() -> None:
    allowed = sr_allowed(table(features=LocalDirDriver.features, attached_pbds=1))
    assert {"vdi_create", "vdi_snapshot", "vdi_resize", "scan", "update"} <= set(allowed)
    assert "vdi_mirror" not in allowed and "vdi_set_on_boot" not in allowed
