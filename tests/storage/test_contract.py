"""The SR driver contract, run against the local-directory driver and the simulator."""

from __future__ import annotations

import asyncio
import os

import pytest

from openxapi.storage.driver import SRDriver
from openxapi.storage.errors import InvalidLocation, InvalidSize, SrFull, VdiMissing
from tests.storage.conftest import MiB, contents, digest, put

DATA = os.urandom(3 * 65536 + 100)


async def test_create_rounds_up_and_lists(driver: SRDriver) -> None:
    info = await driver.vdi_create(MiB + 1)
    assert info.virtual_size == MiB + 512
    assert info.physical_utilisation >= 0
    listed = {i.location: i for i in await driver.scan()}
    assert listed[info.location].virtual_size == MiB + 512
    assert (await driver.vdi_stat(info.location)).virtual_size == MiB + 512


async def test_new_disk_reads_zero(driver: SRDriver) -> None:
    info = await driver.vdi_create(2 * MiB)
    reader = await driver.open_reader(info.location)
    assert reader.size == 2 * MiB
    assert sum(e.length for e in reader.extents()) == 2 * MiB
    assert await contents(reader) == bytes(2 * MiB)


async def test_sr_full_leaves_nothing(driver: SRDriver) -> None:
    before = await driver.scan()
    stat = await driver.stat()
    with pytest.raises(SrFull) as err:
        await driver.vdi_create(stat.physical_size + MiB)
    assert err.value.requested >= stat.physical_size
    assert await driver.scan() == before


async def test_capacity_counts_existing_disks(driver: SRDriver) -> None:
    stat = await driver.stat()
    half = (stat.physical_size // 2 // 512) * 512
    await driver.vdi_create(half)
    with pytest.raises(SrFull):
        await driver.vdi_create(half + MiB)


async def test_delete_is_idempotent(driver: SRDriver) -> None:
    info = await driver.vdi_create(MiB)
    await driver.vdi_delete(info.location)
    await driver.vdi_delete(info.location)
    assert info.location not in {i.location for i in await driver.scan()}
    with pytest.raises(VdiMissing):
        await driver.vdi_stat(info.location)


async def test_write_commit_read_back(driver: SRDriver) -> None:
    info = await driver.vdi_create(MiB)
    await put(driver, info.location, [(4096, DATA)])
    expect = bytearray(MiB)
    expect[4096 : 4096 + len(DATA)] = DATA
    data = await contents(await driver.open_reader(info.location))
    assert data == bytes(expect)
    assert (await driver.vdi_stat(info.location)).physical_utilisation >= len(DATA)


async def test_abort_leaves_disk_unchanged(driver: SRDriver) -> None:
    info = await driver.vdi_create(MiB)
    await put(driver, info.location, [(0, DATA)])
    before = await digest(driver, info.location)
    w = await driver.open_writer(info.location)
    w.write(0, b"\x01" * 65536)
    await w.abort()
    await w.abort()
    assert await digest(driver, info.location) == before


async def test_reader_sees_contents_at_open(driver: SRDriver) -> None:
    info = await driver.vdi_create(MiB)
    await put(driver, info.location, [(0, DATA)])
    reader = await driver.open_reader(info.location)
    await put(driver, info.location, [(0, b"\x07" * 65536)])
    assert (await contents(reader))[: len(DATA)] == DATA


@pytest.mark.parametrize("op", ["vdi_clone", "vdi_snapshot"])
async def test_fork_never_shares_writes(driver: SRDriver, op: str) -> None:
    src = await driver.vdi_create(MiB)
    await put(driver, src.location, [(0, DATA)])
    original = await digest(driver, src.location)
    new = await getattr(driver, op)(src.location)
    assert new.location != src.location
    assert new.virtual_size == src.virtual_size
    assert await digest(driver, new.location) == original
    await put(driver, src.location, [(65536, b"\x05" * 65536)])
    assert await digest(driver, new.location) == original
    await put(driver, new.location, [(0, b"\x06" * 4096)])
    src_data = await contents(await driver.open_reader(src.location))
    assert src_data[65536 : 2 * 65536] == b"\x05" * 65536
    assert src_data[:4096] == bytes(4096)


async def test_chain_survives_destroying_parent(driver: SRDriver) -> None:
    src = await driver.vdi_create(MiB)
    await put(driver, src.location, [(0, DATA)])
    original = await digest(driver, src.location)
    first = await driver.vdi_clone(src.location)
    second = await driver.vdi_snapshot(first.location)
    third = await driver.vdi_clone(src.location)
    await driver.vdi_delete(src.location)
    await driver.vdi_delete(first.location)
    assert await digest(driver, second.location) == original
    assert await digest(driver, third.location) == original
    await driver.vdi_delete(second.location)
    assert await digest(driver, third.location) == original
    assert [i.location for i in await driver.scan()] == [third.location]


async def test_concurrent_clones(driver: SRDriver) -> None:
    src = await driver.vdi_create(MiB)
    await put(driver, src.location, [(0, DATA)])
    original = await digest(driver, src.location)
    clones = await asyncio.gather(*(driver.vdi_clone(src.location) for _ in range(5)))
    assert len({c.location for c in clones}) == 5
    for c in clones:
        assert await digest(driver, c.location) == original
    assert await digest(driver, src.location) == original


async def test_resize(driver: SRDriver) -> None:
    info = await driver.vdi_create(MiB)
    await put(driver, info.location, [(0, DATA)])
    grown = await driver.vdi_resize(info.location, 2 * MiB)
    assert grown.virtual_size == 2 * MiB
    data = await contents(await driver.open_reader(info.location))
    assert data[: len(DATA)] == DATA and data[MiB:] == bytes(MiB)
    assert (await driver.vdi_resize(info.location, 2 * MiB)).virtual_size == 2 * MiB
    with pytest.raises(InvalidSize):
        await driver.vdi_resize(info.location, MiB)
    with pytest.raises(SrFull):
        await driver.vdi_resize(info.location, (await driver.stat()).physical_size + MiB)


async def test_resize_after_clone_keeps_clone(driver: SRDriver) -> None:
    src = await driver.vdi_create(MiB)
    await put(driver, src.location, [(0, DATA)])
    clone = await driver.vdi_clone(src.location)
    await driver.vdi_resize(src.location, 2 * MiB)
    assert (await driver.vdi_stat(clone.location)).virtual_size == MiB
    data = await contents(await driver.open_reader(src.location))
    assert data[: len(DATA)] == DATA and len(data) == 2 * MiB


@pytest.mark.parametrize(
    "location", ["../escape", "/etc/passwd", ".base-x", "a/b", "", "..", "x\x00y"]
)
async def test_locations_stay_inside(driver: SRDriver, location: str) -> None:
    with pytest.raises((InvalidLocation, VdiMissing)):
        await driver.vdi_stat(location)
    with pytest.raises((InvalidLocation, VdiMissing)):
        await driver.open_reader(location)
    with pytest.raises((InvalidLocation, VdiMissing)):
        await driver.vdi_clone(location)


async def test_unknown_location(driver: SRDriver) -> None:
    with pytest.raises(VdiMissing):
        await driver.open_writer("0b7f3f7e-5d35-4c4c-9b5f-5e0d7ad8f2a1")


async def test_attach_is_idempotent(driver: SRDriver) -> None:
    info = await driver.vdi_create(MiB)
    await driver.attach()
    assert info.location in {i.location for i in await driver.scan()}


async def test_stat_is_consistent(driver: SRDriver) -> None:
    stat = await driver.stat()
    assert stat.physical_size > 0
    assert 0 <= stat.physical_utilisation <= stat.physical_size
    assert stat.free == stat.physical_size - stat.physical_utilisation


async def test_attach_info(driver: SRDriver) -> None:
    info = await driver.vdi_create(MiB)
    ro = await driver.vdi_attach(info.location, writable=False)
    assert ro.read_only
    rw = await driver.vdi_attach(info.location, writable=True)
    assert not rw.read_only
    if rw.path is not None:
        assert os.path.exists(rw.path)
    await driver.vdi_detach(info.location)


def test_features_are_reference_names(driver: SRDriver) -> None:
    from openxapi.storage.driver import ALL_FEATURES

    assert set(driver.features) <= set(ALL_FEATURES)
    assert all(v >= 1 for v in driver.features.values())
