"""Licensed pool features: the reference refuses some messages with LICENCE_RESTRICTION
[feature] when the pool's ``restrictions`` map restricts the feature.

This server has no licensing, so a feature is available unless ``restrictions`` says
``restrict_<feature>`` = "true" (what an unlicensed reference pool would state).
"""

from __future__ import annotations

from openxapi.api.state import ServerState
from openxapi.errors import ApiError

#: Feature name (as it appears in LICENCE_RESTRICTION) → its key in pool.restrictions.
FLAGS = {
    "VMSS": "restrict_vmss",
    "VSS": "restrict_vss",
    "VM_groups": "restrict_vm_groups",
    "WLB": "restrict_wlb",
    "DR": "restrict_dr",
}


def feature_enabled(state: ServerState, feature: str) -> bool:
    """Whether the pool may use ``feature`` (one of :data:`FLAGS`)."""
    pool = state.store.get("pool", state.pool_ref)
    restrictions = pool["restrictions"] if pool is not None else {}
    return str(restrictions.get(FLAGS[feature], "false")).lower() != "true"


def assert_feature_enabled(state: ServerState, feature: str) -> None:
    """LICENCE_RESTRICTION [feature] when the pool's restrictions forbid it."""
    if not feature_enabled(state, feature):
        raise ApiError("LICENCE_RESTRICTION", feature)
