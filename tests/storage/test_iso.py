"""The ISO library driver: read-only images found by scanning an allowed directory."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from openxapi.storage.driver import DriverContext
from openxapi.storage.errors import InvalidLocation, VdiMissing
from openxapi.storage.iso import IsoDriver
from tests.storage.conftest import contents


@pytest.fixture
async def iso(ctx: DriverContext) -> IsoDriver:
    root = ctx.iso_roots[0]
    (root / "debian.iso").write_bytes(b"\x01" * 4096 + bytes(8192))
    (root / "notes.txt").write_text("not an image")
    (root / "sub").mkdir()
    d = IsoDriver(ctx, str(uuid.uuid4()), {"location": str(root)})
    await d.attach()
    return d


async def test_scan_finds_iso_files_only(iso: IsoDriver) -> None:
    found = await iso.scan()
    assert [(i.location, i.virtual_size, i.read_only) for i in found] == [
        ("debian.iso", 12288, True)
    ]
    (iso.root / "new.iso").write_bytes(b"x" * 512)
    assert [i.location for i in await iso.scan()] == ["debian.iso", "new.iso"]


async def test_reads_the_file(iso: IsoDriver) -> None:
    data = await contents(await iso.open_reader("debian.iso"))
    assert data == b"\x01" * 4096 + bytes(8192)
    attach = await iso.vdi_attach("debian.iso", writable=True)
    assert attach.read_only and attach.format == "raw"


async def test_is_read_only(iso: IsoDriver) -> None:
    assert "VDI_CREATE" not in iso.features and "VDI_DELETE" not in iso.features
    with pytest.raises(NotImplementedError):
        await iso.vdi_create(512)
    with pytest.raises(NotImplementedError):
        await iso.open_writer("debian.iso")


async def test_names_stay_inside(iso: IsoDriver, tmp_path: Path) -> None:
    (tmp_path / "outside.iso").write_bytes(b"x")
    for bad in ("../outside.iso", "sub/x.iso", "/etc/passwd", "notes.txt"):
        with pytest.raises(InvalidLocation):
            await iso.vdi_stat(bad)
    with pytest.raises(VdiMissing):
        await iso.vdi_stat("absent.iso")


def test_directories_outside_the_allowed_roots_are_refused(
    ctx: DriverContext, tmp_path: Path
) -> None:
    with pytest.raises(InvalidLocation):
        IsoDriver(ctx, str(uuid.uuid4()), {"location": "/etc"})
    with pytest.raises(InvalidLocation):
        IsoDriver(ctx, str(uuid.uuid4()), {"location": str(tmp_path)})
    inner = ctx.iso_roots[0] / "more"
    inner.mkdir()
    assert IsoDriver(ctx, str(uuid.uuid4()), {"location": str(inner)}).root == inner


async def test_probe_reports_allowed_roots(ctx: DriverContext) -> None:
    found = await IsoDriver.probe(ctx, {})
    assert [r.configuration["location"] for r in found] == [str(ctx.iso_roots[0].resolve())]
    assert await IsoDriver.probe(ctx, {"location": "/etc"}) == []


def test_sr_uuid_must_be_a_uuid(ctx: DriverContext) -> None:
    with pytest.raises(InvalidLocation):
        IsoDriver(ctx, "../../etc", {})
