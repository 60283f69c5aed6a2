"""Drivers under test: every contract test runs against each implementation."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from openxapi.storage.driver import DiskReader, DriverContext, SRDriver
from openxapi.storage.localdir import LocalDirDriver
from openxapi.storage.simulator import SimulatorDriver
from openxapi.storage.transfer import export_raw

MiB = 1 << 20


@pytest.fixture
def ctx(tmp_path: Path) -> DriverContext:
    (tmp_path / "scratch").mkdir()
    (tmp_path / "iso").mkdir()
    return DriverContext(tmp_path / "sr", (tmp_path / "iso",), tmp_path / "scratch")


@pytest.fixture(params=["file", "dummy"])
async def driver(request: pytest.FixtureRequest, ctx: DriverContext) -> AsyncIterator[SRDriver]:
    cls = LocalDirDriver if request.param == "file" else SimulatorDriver
    d: SRDriver = cls(ctx, str(uuid.uuid4()), {})
    await d.create(0)
    await d.attach()
    yield d
    await d.detach()


async def contents(reader: DiskReader) -> bytes:
    """Every byte a reader yields, through the export path."""
    parts = [chunk async for chunk in export_raw(reader)]
    await reader.close()
    return b"".join(parts)


async def digest(driver: SRDriver, location: str) -> str:
    data = await contents(await driver.open_reader(location))
    return hashlib.sha256(data).hexdigest()


async def put(driver: SRDriver, location: str, writes: list[tuple[int, bytes]]) -> None:
    """Replace a disk's contents with zeros plus ``writes``."""
    w = await driver.open_writer(location)
    for offset, data in writes:
        w.write(offset, data)
    w.flush()
    await w.commit()
