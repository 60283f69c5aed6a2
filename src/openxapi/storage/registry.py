"""The SR types this server supports, by the name clients pass as ``SR.type``."""

from __future__ import annotations

from openxapi.storage.driver import SRDriver
from openxapi.storage.iso import IsoDriver
from openxapi.storage.localdir import LocalDirDriver
from openxapi.storage.simulator import SimulatorDriver

DRIVERS: dict[str, type[SRDriver]] = {
    d.sr_type: d for d in (LocalDirDriver, IsoDriver, SimulatorDriver)
}


def driver_class(sr_type: str) -> type[SRDriver] | None:
    """The driver for an SR type (case-insensitive, as the reference lower-cases it)."""
    return DRIVERS.get(sr_type.lower())


def supported_types() -> list[str]:
    return sorted(DRIVERS)
