"""The reference's memory model for domains, and the messages built on it.

Clients compare VM.memory_overhead, VM.compute_memory_overhead and VM.maximise_memory
with their own expectations, so the arithmetic follows the reference's model exactly:
whole MiB, 64-bit integer division that truncates, a shadow allocation of
``(256 pages per vCPU + 2 pages per MiB of static_max)`` scaled by the shadow multiplier,
and the per-guest-type extras (HVM, PV, PV-in-PVH shim).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.vm_domains import domains_of
from openxapi.errors import ApiError

KIB = 1024
MIB = 1 << 20
PAGES_PER_MIB = MIB // 4096
_INT64_LIMIT = 1 << 63


def _div(a: int, b: int) -> int:
    """Int64.div: the quotient truncated toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _div_up(a: int, b: int) -> int:
    """The reference's divide_rounding_up: (a + b - 1) / b, truncated."""
    return _div(a + b - 1, b)


def ocaml_float(value: float) -> str:
    """A float as the reference prints it in error parameters (OCaml string_of_float)."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = f"{value:.12g}"
    return text + "." if all(c in "-0123456789" for c in text) else text


@dataclass(frozen=True, slots=True)
class _Model:
    extra_internal_mib: int
    extra_external_mib: int
    shim_per_90: bool  # PV-in-PVH: a shim of 23 MiB + static_max/90

    def shim_mib(self, static_max_mib: int) -> int:
        return 23 + _div(static_max_mib, 90) if self.shim_per_90 else 0

    def shadow_mib(self, static_max_mib: int, vcpus: int, multiplier: float) -> int:
        pages = 256 * vcpus + 2 * static_max_mib
        scaled = float(_div_up(pages, PAGES_PER_MIB)) * multiplier
        if not math.isfinite(scaled) or abs(scaled) >= _INT64_LIMIT:
            return 1  # Int64.of_float overflows to min_int, which max 1 turns into 1
        return max(1, int(scaled))

    def overhead_mib(self, static_max_mib: int, vcpus: int, multiplier: float) -> int:
        return (
            self.extra_internal_mib
            + self.extra_external_mib
            + self.shadow_mib(static_max_mib, vcpus, multiplier)
            + _div_up(38 * vcpus, PAGES_PER_MIB)  # Xen's own per-vCPU memory
            + self.shim_mib(static_max_mib)
        )


_HVM = _Model(1, 1, False)
_LINUX = _Model(0, 1, False)
_PV_IN_PVH = _Model(1, 1, True)


def domain_type(rec: Mapping[str, Any]) -> str:
    """The VM's domain type; an unspecified one is derived from HVM_boot_policy, as the
    reference does when it creates the VM."""
    value = str(rec["domain_type"])
    if value == "unspecified":
        return "hvm" if rec["HVM_boot_policy"] else "pv"
    return value


def _model(kind: str) -> _Model:
    if kind in ("hvm", "pvh"):
        return _HVM
    return _PV_IN_PVH if kind == "pv_in_pvh" else _LINUX


def memory_overhead(rec: Mapping[str, Any]) -> int:
    """VM.memory_overhead in bytes for a VM record (the reference's vm_compute_memory_overhead)."""
    static_max_mib = _div_up(int(rec["memory_static_max"]), MIB)
    model = _model(domain_type(rec))
    mib = model.overhead_mib(
        static_max_mib, int(rec["VCPUs_max"]), float(rec["HVM_shadow_multiplier"])
    )
    return mib * MIB


def start_footprint(rec: Mapping[str, Any], static_max: int, vcpus: int) -> int:
    """Host bytes needed to start the VM with ``static_max`` and ``vcpus`` (its guest memory
    plus overheads); PV guests use the default shadow multiplier."""
    kind = domain_type(rec)
    model = _model(kind)
    multiplier = 1.0 if kind == "pv" else float(rec["HVM_shadow_multiplier"])
    target_mib = _div_up(_div_up(static_max, KIB), KIB)
    max_mib = _div_up(static_max, MIB)
    return (target_mib + model.overhead_mib(max_mib, vcpus, multiplier)) * MIB


def _largest_fitting(rec: Mapping[str, Any], total: int, vcpus: int) -> int:
    """The reference's bisection: the largest static_max in [0, total] that fits."""

    def fits(static_max: int) -> bool:
        return start_footprint(rec, static_max, vcpus) <= total

    lower, upper = 0, total
    while upper - lower >= 2:
        mid = (upper + lower) // 2
        if fits(mid):
            lower = mid
        else:
            upper = mid
    return upper if fits(upper) else lower


def validate_multiplier(value: float) -> None:
    """INVALID_VALUE ["multiplier"; value] below 1.0, as the reference."""
    if value < 1.0:
        raise ApiError("INVALID_VALUE", "multiplier", ocaml_float(value))


@handler("VM.compute_memory_overhead")
async def compute_memory_overhead(state: ServerState, ctx: CallContext, vm: str) -> Any:
    return memory_overhead(state.record("VM", vm))


@handler("VM.maximise_memory")
async def maximise_memory(
    state: ServerState, ctx: CallContext, self: str, total: int, approximate: bool
) -> Any:
    """The largest static_max that fits in ``total`` bytes with overheads, in whole MiB;
    ``approximate`` leaves room for up to 64 vCPUs."""
    rec = state.record("VM", self)
    if total < 0:
        raise ApiError("INTERNAL_ERROR", "Assert_failure: total must not be negative")
    vcpus = 64 if approximate else int(rec["VCPUs_max"])
    best = _largest_fitting(rec, total, vcpus)
    return (best // MIB) * MIB


@handler("VM.set_HVM_shadow_multiplier")
async def set_HVM_shadow_multiplier(
    state: ServerState, ctx: CallContext, self: str, value: float
) -> Any:
    """The changing_shadow_memory operation (halted VMs); the overhead follows."""
    async with domains_of(state).operation(self, "changing_shadow_memory", ctx) as rec:
        validate_multiplier(value)
        overhead = memory_overhead({**rec, "HVM_shadow_multiplier": value})
        state.store.update(
            "VM", self, {"HVM_shadow_multiplier": value, "memory_overhead": overhead}
        )
    await state.store.sync()
    return ""


def _running_as_pv(state: ServerState, rec: Mapping[str, Any]) -> bool:
    metrics = state.store.get("VM_metrics", rec["metrics"]) if rec["metrics"] else None
    if metrics is not None and metrics["current_domain_type"] != "unspecified":
        return bool(metrics["current_domain_type"] == "pv")
    return domain_type(rec) == "pv"


@handler("VM.set_shadow_multiplier_live")
async def set_shadow_multiplier_live(
    state: ServerState, ctx: CallContext, self: str, multiplier: float
) -> Any:
    """The changing_shadow_memory_live operation (running VMs).

    As with the reference, a PV domain ignores the request (its multiplier stays); other
    domains take the new multiplier. Our backends give no domain a shadow pool, so the
    value only feeds the memory accounting, exactly as the halted setter's does.
    """
    async with domains_of(state).operation(self, "changing_shadow_memory_live", ctx) as rec:
        if rec["power_state"] != "Running":
            raise ApiError("VM_BAD_POWER_STATE", self, "running", rec["power_state"].lower())
        validate_multiplier(multiplier)
        changes: dict[str, Any] = {}
        if not _running_as_pv(state, rec):
            changes["HVM_shadow_multiplier"] = multiplier
        changes["memory_overhead"] = memory_overhead({**rec, **changes})
        state.store.update("VM", self, changes)
    await state.store.sync()
    return ""
