"""The local-directory driver's own promises: files, hidden bases, garbage, safety."""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from openxapi.storage import qemu_img
from openxapi.storage.driver import DriverContext
from openxapi.storage.errors import BadImage, InvalidLocation
from openxapi.storage.localdir import LocalDirDriver
from tests.storage.conftest import MiB, contents, digest, put


@pytest.fixture
async def local(ctx: DriverContext) -> LocalDirDriver:
    d = LocalDirDriver(ctx, str(uuid.uuid4()), {})
    await d.create(0)
    await d.attach()
    return d


def files(d: LocalDirDriver) -> list[str]:
    return sorted(os.listdir(d.root))


def qemu_io_write(path: str, pattern: int, offset: int, length: int) -> None:
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P {pattern} {offset} {length}", path],
        check=True,
        capture_output=True,
    )


async def test_disk_is_a_qcow2_file_named_by_location(local: LocalDirDriver) -> None:
    info = await local.vdi_create(MiB)
    assert files(local) == [f"{info.location}.qcow2"]
    assert info.uuid == info.location
    header = qemu_img.read_header(local.root / f"{info.location}.qcow2")
    assert header is not None and header.virtual_size == MiB
    assert local.pbd_device_config()["location"] == str(local.root)


async def test_guest_writes_after_clone_stay_private(local: LocalDirDriver) -> None:
    """What a VM does: write into its disk's image after the disk was cloned."""
    src = await local.vdi_create(MiB)
    path = (await local.vdi_attach(src.location, writable=True)).path
    assert path is not None
    qemu_io_write(path, 0x11, 0, 65536)
    before = await digest(local, src.location)
    clone = await local.vdi_clone(src.location)
    qemu_io_write(path, 0x22, 0, 65536)
    assert await digest(local, clone.location) == before
    clone_path = (await local.vdi_attach(clone.location, writable=True)).path
    assert clone_path is not None
    qemu_io_write(clone_path, 0x33, 65536, 65536)
    data = await contents(await local.open_reader(src.location))
    assert data[:65536] == b"\x22" * 65536
    assert data[65536 : 2 * 65536] == bytes(65536)


async def test_bases_are_hidden_read_only_and_collected(local: LocalDirDriver) -> None:
    src = await local.vdi_create(MiB)
    await put(local, src.location, [(0, b"\x01" * 65536)])
    clone = await local.vdi_clone(src.location)
    bases = [f for f in files(local) if f.startswith(".base-")]
    assert len(bases) == 1
    assert os.stat(local.root / bases[0]).st_mode & 0o222 == 0
    assert {i.location for i in await local.scan()} == {src.location, clone.location}
    await local.vdi_delete(src.location)
    assert bases[0] in files(local)
    await local.vdi_delete(clone.location)
    assert files(local) == []


async def test_import_replaces_image_and_frees_base(local: LocalDirDriver) -> None:
    src = await local.vdi_create(MiB)
    await put(local, src.location, [(0, b"\x01" * 65536)])
    clone = await local.vdi_clone(src.location)
    await local.vdi_delete(clone.location)
    await put(local, src.location, [(0, b"\x02" * 65536)])
    assert files(local) == [f"{src.location}.qcow2"]


async def test_attach_removes_leftovers(ctx: DriverContext) -> None:
    sr = str(uuid.uuid4())
    d = LocalDirDriver(ctx, sr, {})
    await d.create(0)
    info = await d.vdi_create(MiB)
    (d.root / ".tmp-partial.qcow2").write_bytes(b"x")
    await qemu_img.create(d.root / ".base-orphan.qcow2", MiB)
    again = LocalDirDriver(ctx, sr, {})
    await again.attach()
    assert files(again) == [f"{info.location}.qcow2"]


async def test_backing_file_outside_is_refused(local: LocalDirDriver, tmp_path: Path) -> None:
    outside = tmp_path / "secret.qcow2"
    await qemu_img.create(outside, MiB)
    bad = local.root / "evil.qcow2"
    await qemu_img.create(bad, MiB, backing=str(outside))
    assert "evil" not in {i.location for i in await local.scan()}
    with pytest.raises(BadImage):
        await local.vdi_introduce("evil")
    with pytest.raises(BadImage):
        await local.open_reader("evil")


async def test_symlink_out_of_the_sr_is_refused(local: LocalDirDriver, tmp_path: Path) -> None:
    target = tmp_path / "target.qcow2"
    await qemu_img.create(target, MiB)
    os.symlink(target, local.root / "link.qcow2")
    with pytest.raises(InvalidLocation):
        await local.vdi_introduce("link")


async def test_introduce_a_copied_in_image(local: LocalDirDriver) -> None:
    await qemu_img.create(local.root / "imported-disk.qcow2", 2 * MiB)
    info = await local.vdi_introduce("imported-disk")
    assert info.virtual_size == 2 * MiB and info.uuid == ""
    assert "imported-disk" in {i.location for i in await local.scan()}


async def test_export_reads_compressed_clusters(local: LocalDirDriver, tmp_path: Path) -> None:
    raw = tmp_path / "data.raw"
    payload = (b"openxapi" * 8192) * 4
    raw.write_bytes(payload + bytes(MiB - len(payload)))
    await qemu_img.run(
        "convert", "-c", "-f", "raw", "-O", "qcow2", str(raw), str(local.root / "packed.qcow2")
    )
    data = await contents(await local.open_reader("packed"))
    assert hashlib.sha256(data).digest() == hashlib.sha256(raw.read_bytes()).digest()
    assert [f for f in files(local) if f.startswith(".tmp-")] == []


async def test_probe_lists_sr_directories(local: LocalDirDriver, ctx: DriverContext) -> None:
    found = await LocalDirDriver.probe(ctx, {})
    assert [r.sr_uuid for r in found] == [local.sr_uuid]
    assert found[0].complete and found[0].stat is not None


def test_sr_uuid_must_be_a_uuid(ctx: DriverContext) -> None:
    with pytest.raises(InvalidLocation):
        LocalDirDriver(ctx, "../../etc", {})
