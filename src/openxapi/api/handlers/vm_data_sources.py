"""A running VM's live figures as the reference's data sources (cpu<N>, memory, ...).

The values come straight from the domain backend (the QEMU process's CPU time and the
balloon's memory figure); no history is archived, so recording and forgetting archives
only check that the data source exists.
"""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.vm_domains import RUNNING_STATES, domains_of
from openxapi.errors import ApiError
from openxapi.xenops.backend import DomainInfo


def _source(name: str, description: str, units: str, lo: float, hi: float) -> dict[str, Any]:
    return {
        "name_label": name,
        "name_description": description,
        "enabled": True,
        "standard": True,
        "units": units,
        "min": lo,
        "max": hi,
        "value": 0.0,
    }


async def _live(state: ServerState, vm: str) -> tuple[DomainInfo | None, dict[str, Any]]:
    rec = state.record("VM", vm)
    if rec["power_state"] not in RUNNING_STATES:
        return None, rec
    backend = await domains_of(state).ready()
    return await backend.info(rec["uuid"]), rec


def _values(info: DomainInfo, rec: dict[str, Any]) -> dict[str, tuple[dict[str, Any], float]]:
    """Each data source of the domain with its current value."""
    inf = float("inf")
    out: dict[str, tuple[dict[str, Any], float]] = {
        "memory": (
            _source("memory", "Memory currently allocated to VM", "B", 0, inf),
            float(info.memory_actual),
        ),
        "memory_target": (
            _source("memory_target", "Target of VM balloon driver", "B", 0, inf),
            float(rec["memory_target"] or rec["memory_dynamic_max"]),
        ),
    }
    if info.vcpus_utilisation:
        for i, u in enumerate(info.vcpus_utilisation):
            out[f"cpu{i}"] = (_source(f"cpu{i}", f"CPU{i} usage", "(fraction)", 0, 1), u)
        usage = sum(info.vcpus_utilisation) / len(info.vcpus_utilisation)
        out["cpu_usage"] = (_source("cpu_usage", "Domain CPU usage", "(fraction)", 0, 1), usage)
    return out


@handler("VM.get_data_sources")
async def get_data_sources(state: ServerState, ctx: CallContext, self: str) -> Any:
    info, rec = await _live(state, self)
    if info is None:
        return []
    return [ds for ds, _ in _values(info, rec).values()]


async def _known(state: ServerState, vm: str, name: str) -> float:
    info, rec = await _live(state, vm)
    values = _values(info, rec) if info is not None else {}
    if name not in values:
        raise ApiError("INTERNAL_ERROR", f"Invalid data source: {name}")
    return values[name][1]


@handler("VM.query_data_source")
async def query_data_source(
    state: ServerState, ctx: CallContext, self: str, data_source: str
) -> Any:
    return await _known(state, self, data_source)


@handler("VM.record_data_source")
async def record_data_source(
    state: ServerState, ctx: CallContext, self: str, data_source: str
) -> Any:
    await _known(state, self, data_source)  # every source is recorded already
    return ""


@handler("VM.forget_data_source_archives")
async def forget_data_source_archives(
    state: ServerState, ctx: CallContext, self: str, data_source: str
) -> Any:
    await _known(state, self, data_source)  # nothing is archived
    return ""
