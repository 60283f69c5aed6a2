"""VM.retrieve_wlb_recommendations: host ratings from Workload Balancing.

The reference first requires WLB to be licensed, initialised (pool.wlb_url set) and
enabled, with WLB_NOT_INITIALIZED / WLB_DISABLED otherwise. This server speaks to no WLB
appliance, and pool.initialize_wlb is not available, so a pool never gets past those checks.
"""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.handlers.pool_features import assert_feature_enabled
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.errors import ApiError


@handler("VM.retrieve_wlb_recommendations")
async def retrieve_wlb_recommendations(state: ServerState, ctx: CallContext, vm: str) -> Any:
    state.record("VM", vm)
    assert_feature_enabled(state, "WLB")
    pool = state.record("pool", state.pool_ref)
    if pool["wlb_url"] == "":
        raise ApiError("WLB_NOT_INITIALIZED")
    if not pool["wlb_enabled"]:
        raise ApiError("WLB_DISABLED")
    raise ApiError("NOT_IMPLEMENTED", "VM.retrieve_wlb_recommendations")
