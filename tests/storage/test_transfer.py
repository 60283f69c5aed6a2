"""Streaming disk contents in and out, in every format, with bounded memory."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import pytest

from openxapi.storage.driver import SRDriver
from openxapi.storage.errors import BadImage, ImageTooLarge
from openxapi.storage.transfer import (
    CHUNK,
    copy_disk,
    export_image,
    export_raw,
    import_image,
    import_raw,
)
from tests.storage.conftest import MiB, contents, digest, put


class Source:
    """A byte source handing out data in uneven pieces, as a socket does."""

    def __init__(self, data: bytes, piece: int = 70_001) -> None:
        self.data = data
        self.pos = 0
        self.piece = piece

    async def read(self, n: int = 65536) -> bytes:
        n = min(n, self.piece)
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in stream])


def sample(size: int) -> bytes:
    """Random data with zero holes, an unaligned tail and a non-zero last byte."""
    block = os.urandom(size)
    out = bytearray(block)
    out[MiB // 2 : MiB] = bytes(MiB // 2)
    out[-1] = 7
    return bytes(out)


async def test_raw_round_trip(driver: SRDriver) -> None:
    size = 2 * MiB + 512
    data = sample(size)
    info = await driver.vdi_create(size)
    w = await driver.open_writer(info.location)
    received = await import_raw(Source(data), w)
    await w.commit()
    assert received == size
    exported = await collect(export_raw(await driver.open_reader(info.location)))
    assert hashlib.sha256(exported).digest() == hashlib.sha256(data).digest()


async def test_raw_shorter_than_disk_leaves_zeros(driver: SRDriver) -> None:
    info = await driver.vdi_create(MiB)
    w = await driver.open_writer(info.location)
    assert await import_raw(Source(b"\x09" * 1000), w) == 1000
    await w.commit()
    data = await contents(await driver.open_reader(info.location))
    assert data == b"\x09" * 1000 + bytes(MiB - 1000)


async def test_raw_larger_than_disk_fails(driver: SRDriver) -> None:
    info = await driver.vdi_create(MiB)
    before = await digest(driver, info.location)
    w = await driver.open_writer(info.location)
    with pytest.raises(ImageTooLarge):
        await import_raw(Source(b"\x01" * (MiB + 1)), w)
    await w.abort()
    assert await digest(driver, info.location) == before


async def test_progress_is_reported(driver: SRDriver) -> None:
    info = await driver.vdi_create(CHUNK * 2)
    seen: list[int] = []
    w = await driver.open_writer(info.location)
    await import_raw(Source(b"\x01" * (CHUNK * 2), piece=1 << 20), w, seen.append)
    await w.commit()
    assert seen[-1] == CHUNK * 2 and seen == sorted(seen) and len(seen) >= 2
    sent: list[int] = []
    await collect(export_raw(await driver.open_reader(info.location), sent.append))
    assert sent[-1] == CHUNK * 2


@pytest.mark.parametrize("fmt", ["vhd", "qcow2"])
async def test_image_round_trip(driver: SRDriver, fmt: str) -> None:
    size = 2 * MiB
    data = sample(size)
    info = await driver.vdi_create(size)
    await put(driver, info.location, [(0, data)])
    stream, length = await export_image(
        await driver.open_reader(info.location), fmt, driver.scratch_dir
    )
    image = await collect(stream)
    assert len(image) == length
    assert image[:8] == (b"conectix" if fmt == "vhd" else b"QFI\xfb\x00\x00\x00\x03")
    target = await driver.vdi_create(size)
    w = await driver.open_writer(target.location)
    assert await import_image(Source(image), fmt, w, driver.scratch_dir) == length
    await w.commit()
    assert await digest(driver, target.location) == hashlib.sha256(data).hexdigest()
    assert [f for f in os.listdir(driver.scratch_dir) if f.startswith(".tmp-")] == []


async def test_image_larger_than_disk_is_refused(driver: SRDriver) -> None:
    big = await driver.vdi_create(2 * MiB)
    stream, _ = await export_image(
        await driver.open_reader(big.location), "qcow2", driver.scratch_dir
    )
    image = await collect(stream)
    small = await driver.vdi_create(MiB)
    w = await driver.open_writer(small.location)
    with pytest.raises(ImageTooLarge):
        await import_image(Source(image), "qcow2", w, driver.scratch_dir)
    await w.abort()


async def test_garbage_image_is_refused(driver: SRDriver) -> None:
    info = await driver.vdi_create(MiB)
    w = await driver.open_writer(info.location)
    with pytest.raises(BadImage):
        await import_image(Source(b"not an image" * 100), "vhd", w, driver.scratch_dir)
    await w.abort()
    assert [f for f in os.listdir(driver.scratch_dir) if f.startswith(".tmp-")] == []


async def test_copy_and_differential_copy(driver: SRDriver) -> None:
    a = await driver.vdi_create(MiB)
    await put(driver, a.location, [(0, b"\x01" * 65536), (3 * 65536, b"\x03" * 65536)])
    base = await driver.vdi_snapshot(a.location)
    await put(driver, a.location, [(0, b"\x01" * 65536), (65536, b"\x02" * 65536)])
    full = await driver.vdi_create(MiB)
    w = await driver.open_writer(full.location)
    await copy_disk(await driver.open_reader(a.location), w)
    await w.commit()
    assert await digest(driver, full.location) == await digest(driver, a.location)
    into = await driver.vdi_create(MiB)
    await put(driver, into.location, [(0, b"\x01" * 65536), (5 * 65536, b"\x05" * 65536)])
    w = await driver.open_writer(into.location)
    await copy_disk(
        await driver.open_reader(a.location),
        w,
        base=await driver.open_reader(base.location),
        into=await driver.open_reader(into.location),
    )
    await w.commit()
    data = await contents(await driver.open_reader(into.location))
    assert data[:65536] == b"\x01" * 65536
    assert data[65536 : 2 * 65536] == b"\x02" * 65536
    assert data[3 * 65536 : 4 * 65536] == bytes(65536)
    assert data[5 * 65536 : 6 * 65536] == b"\x05" * 65536
