"""The XVA stream: written from real disks, read back by Python's tarfile and by our reader,
compressed or not; sparse chunks, checksums, damaged and truncated streams."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import tarfile
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import xxhash
import zstandard

from openxapi.storage.driver import DiskReader, SRDriver
from openxapi.storage.xva_format import (
    CHUNK_SIZE,
    OVA_XML,
    ExportDisk,
    XvaError,
    XvaReader,
    decode_value,
    parse_ova,
    parse_tar_header,
    tar_header,
    write_disk,
    xva_stream,
)
from tests.storage.conftest import MiB, digest, put

OVA = (
    b"<value><struct><member><name>version</name><value><struct>"
    b"<member><name>export_vsn</name><value><i4>2</i4></value></member>"
    b"</struct></value></member><member><name>objects</name><value><array><data>"
    b"<value><struct><member><name>class</name><value>VM</value></member>"
    b"<member><name>id</name><value>Ref:0</value></member>"
    b"<member><name>snapshot</name><value><struct>"
    b"<member><name>name_label</name><value>a &amp; b</value></member>"
    b"<member><name>memory_static_max</name><value>1073741824</value></member>"
    b"<member><name>is_a_template</name><value><boolean>0</boolean></value></member>"
    b"</struct></value></member></struct></value></data></array></value></member>"
    b"</struct></value>"
)


class Source:
    """Bytes handed out in pieces of varying size, as a socket would."""

    def __init__(self, data: bytes, seed: int = 0) -> None:
        self.data = data
        self.pos = 0
        self.rng = random.Random(seed)

    async def read(self, n: int = 65536) -> bytes:
        k = min(n, self.rng.randint(1, 200_000))
        out = self.data[self.pos : self.pos + k]
        self.pos += len(out)
        return out


async def new_disk(driver: SRDriver, size: int, writes: list[tuple[int, bytes]]) -> str:
    info = await driver.vdi_create(size)
    await put(driver, info.location, writes)
    return info.location


def opener(driver: SRDriver, location: str) -> Callable[[], Awaitable[DiskReader]]:
    async def open_disk() -> DiskReader:
        return await driver.open_reader(location)

    return open_disk


async def export(
    driver: SRDriver, disks: dict[str, str], compression: str = "", ova: bytes = OVA
) -> bytes:
    items = []
    for oid, location in disks.items():
        info = await driver.vdi_stat(location)
        items.append(ExportDisk(oid, info.virtual_size, opener(driver, location)))
    return b"".join([p async for p in xva_stream(ova, items, compression)])


async def import_into(
    driver: SRDriver, data: bytes, disks: dict[str, str], verify: bool = True
) -> bytes:
    """Read an XVA, writing each disk into the given (existing) disks; returns ova.xml."""
    reader = XvaReader(Source(data))
    try:
        ova = await reader.read_ova()
        for oid in sorted(disks):
            info = await driver.vdi_stat(disks[oid])
            writer = await driver.open_writer(disks[oid])
            try:
                await write_disk(reader.disk_pieces(oid, info.virtual_size, verify), writer)
                await writer.commit()
            except BaseException:
                await writer.abort()
                raise
        await reader.finish()
        return ova
    finally:
        await reader.close()


def members(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [m.name for m in tar.getmembers()]


def sample(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


# ---- tar and ova.xml ---------------------------------------------------------------------


def test_headers_are_read_by_tarfile_and_by_us() -> None:
    long_name = "Ref:1/" + "x" * 120 + "/00000003"
    blob = b"".join(
        [
            tar_header("a", 3),
            b"abc".ljust(512, b"\0"),
            tar_header(long_name, 0),
            bytes(1024),
        ]
    )
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        assert [(m.name, m.size) for m in tar.getmembers()] == [("a", 3), (long_name, 0)]
    first = parse_tar_header(blob[:512])
    assert first is not None and (first.name, first.size) == ("a", 3)
    second = parse_tar_header(blob[1024:1536])
    assert second is not None and second.name == long_name
    assert parse_tar_header(bytes(512)) is None
    big = parse_tar_header(tar_header("b", 2**40))
    assert big is not None and big.size == 2**40
    broken = bytearray(blob[:512])
    broken[0] ^= 1
    with pytest.raises(XvaError):
        parse_tar_header(bytes(broken))


def test_ova_xml_values() -> None:
    header = parse_ova(OVA)
    assert header.export_vsn == 2
    (obj,) = header.objects
    assert (obj.cls, obj.id) == ("VM", "Ref:0")
    assert obj.snapshot == {
        "name_label": "a & b",
        "memory_static_max": "1073741824",
        "is_a_template": False,
    }
    assert decode_value(
        b"<value><array><data><value><i4>7</i4></value></data></array></value>"
    ) == [7]
    assert parse_ova(OVA.replace(b"<i4>2</i4>", b"2")).export_vsn == 2


@pytest.mark.parametrize(
    "xml",
    [
        b'<!DOCTYPE x [<!ENTITY a "b">]><value>&a;</value>',
        b"<methodCall><methodName>x</methodName></methodCall>",
        b"<value><struct><member><value>1</value></member></struct></value>",
        b"<value>unterminated",
        b"<value><int>seven</int></value>",
    ],
)
def test_bad_ova_xml_is_refused(xml: bytes) -> None:
    with pytest.raises(XvaError) as e:
        parse_ova(xml)
    assert e.value.code == "IMPORT_ERROR"


# ---- round trips through real disks ------------------------------------------------------


@pytest.mark.parametrize("compression", ["", "gzip", "zstd"])
async def test_round_trip(driver: SRDriver, compression: str) -> None:
    size = 5 * MiB + 12800  # the last chunk is short
    writes = [(0, sample(4096, 1)), (2 * MiB + 7, sample(MiB, 2)), (size - 100, sample(100, 3))]
    src = await new_disk(driver, size, writes)
    other = await new_disk(driver, 3 * MiB, [(MiB, sample(MiB, 4))])
    data = await export(driver, {"Ref:2": src, "Ref:10": other}, compression)
    if compression == "gzip":
        assert data[:2] == b"\x1f\x8b"
        plain = gzip.decompress(data)
    elif compression == "zstd":
        assert data[:4] == b"\x28\xb5\x2f\xfd"
        plain = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    else:
        plain = data
    names = members(plain)
    # ova.xml first, disks in the order of their ids as strings, zero chunks left out
    # except the first and last, each chunk followed by its XXH64.
    assert names == [
        OVA_XML,
        "Ref:10/00000000",
        "Ref:10/00000000.xxhash",
        "Ref:10/00000001",
        "Ref:10/00000001.xxhash",
        "Ref:10/00000002",
        "Ref:10/00000002.xxhash",
        "Ref:2/00000000",
        "Ref:2/00000000.xxhash",
        "Ref:2/00000002",
        "Ref:2/00000002.xxhash",
        "Ref:2/00000003",
        "Ref:2/00000003.xxhash",
        "Ref:2/00000005",
        "Ref:2/00000005.xxhash",
    ]
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        assert tar.extractfile(OVA_XML).read() == OVA  # type: ignore[union-attr]
        chunk = tar.extractfile("Ref:2/00000005").read()  # type: ignore[union-attr]
        stored = tar.extractfile("Ref:2/00000005.xxhash").read()  # type: ignore[union-attr]
    assert len(chunk) == size - 5 * CHUNK_SIZE
    assert stored.decode() == xxhash.xxh64_hexdigest(chunk).upper()
    copies = {
        "Ref:2": await new_disk(driver, size, []),
        "Ref:10": await new_disk(driver, 3 * MiB, []),
    }
    assert await import_into(driver, data, copies) == OVA
    assert await digest(driver, copies["Ref:2"]) == await digest(driver, src)
    assert await digest(driver, copies["Ref:10"]) == await digest(driver, other)


async def test_an_all_zero_disk_still_has_its_first_and_last_chunk(driver: SRDriver) -> None:
    empty = await new_disk(driver, 4 * MiB, [])
    data = await export(driver, {"Ref:0": empty})
    assert members(data)[1:] == [
        "Ref:0/00000000",
        "Ref:0/00000000.xxhash",
        "Ref:0/00000003",
        "Ref:0/00000003.xxhash",
    ]


def handmade(chunks: list[tuple[str, bytes, str, str]], ova: bytes = OVA) -> bytes:
    """An XVA written member by member: (chunk name, data, checksum ext, checksum text)."""
    parts = [tar_header(OVA_XML, len(ova)), ova, bytes(-len(ova) % 512)]
    for name, data, ext, text in chunks:
        parts += [tar_header(name, len(data)), data, bytes(-len(data) % 512)]
        parts += [tar_header(name + ext, len(text)), text.encode(), bytes(-len(text) % 512)]
    return b"".join([*parts, bytes(1024)])


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


async def test_older_checksums_gaps_and_keepalive_chunks(driver: SRDriver) -> None:
    """SHA-1 ``.checksum`` members, a zero-length keep-alive chunk (the numbering goes on
    without moving the offset) and a gap of missing chunks read as zeros."""
    a, b = sample(MiB, 5), sample(MiB, 6)
    data = handmade(
        [
            ("Ref:1/00000000", a, ".checksum", sha1(a)),
            ("Ref:1/00000001", b"", ".checksum", sha1(b"")),
            ("Ref:1/00000004", b, ".xxhash", xxhash.xxh64_hexdigest(b).upper()),
        ]
    )
    target = await new_disk(driver, 4 * MiB, [(0, sample(4 * MiB, 9))])
    await import_into(driver, data, {"Ref:1": target})
    expected = await new_disk(driver, 4 * MiB, [(0, a), (3 * MiB, b)])
    assert await digest(driver, target) == await digest(driver, expected)


async def test_a_corrupted_chunk_fails_its_checksum(driver: SRDriver) -> None:
    src = await new_disk(driver, 2 * MiB, [(0, sample(2 * MiB, 7))])
    data = bytearray(await export(driver, {"Ref:0": src}))
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        offset = tar.getmember("Ref:0/00000001").offset_data
    data[offset + 100] ^= 0xFF
    target = await new_disk(driver, 2 * MiB, [])
    with pytest.raises(XvaError) as e:
        await import_into(driver, bytes(data), {"Ref:0": target})
    assert e.value.code == "IMPORT_ERROR"
    assert e.value.params[0].startswith("Block Ref:0/00000001 checksum failed: original = ")
    await import_into(driver, bytes(data), {"Ref:0": target}, verify=False)


@pytest.mark.parametrize("compression", ["", "gzip", "zstd"])
async def test_a_truncated_stream_ends_prematurely(driver: SRDriver, compression: str) -> None:
    src = await new_disk(driver, 3 * MiB, [(0, sample(3 * MiB, 8))])
    data = await export(driver, {"Ref:0": src}, compression)
    target = await new_disk(driver, 3 * MiB, [])
    for cut in (len(data) // 2, len(data) - 1100 if not compression else len(data) * 9 // 10):
        with pytest.raises(XvaError) as e:
            await import_into(driver, data[:cut], {"Ref:0": target})
        assert e.value.code == "IMPORT_ERROR_PREMATURE_EOF"


async def test_streams_that_are_not_xvas(driver: SRDriver) -> None:
    target = await new_disk(driver, MiB, [])
    other_first = tar_header("readme", 2) + b"hi".ljust(510, b"\0") + bytes(1024)
    cases = [
        (other_first, "IMPORT_ERROR_UNEXPECTED_FILE", ["ova.xml", "readme"]),
        (gzip.compress(other_first), "IMPORT_ERROR_UNEXPECTED_FILE", ["ova.xml", "readme"]),
        (b"PK\x03\x04" + bytes(600), "IMPORT_ERROR", None),
        (b"\x1f\x8b" + bytes(600), "IMPORT_ERROR", None),
        (b"short", "IMPORT_ERROR_PREMATURE_EOF", []),
    ]
    for data, code, params in cases:
        with pytest.raises(XvaError) as e:
            await import_into(driver, data, {"Ref:0": target})
        assert e.value.code == code
        if params is not None:
            assert e.value.params == params
    a = sample(MiB, 1)
    misnamed = handmade([("Ref:9/00000000", a, ".xxhash", xxhash.xxh64_hexdigest(a).upper())])
    with pytest.raises(XvaError, match="expected a chunk of Ref:0"):
        await import_into(driver, misnamed, {"Ref:0": target})
    backwards = handmade(
        [
            ("Ref:0/00000000", a[:100], ".checksum", sha1(a[:100])),
            ("Ref:0/00000000", a[:100], ".checksum", sha1(a[:100])),
        ]
    )
    with pytest.raises(XvaError, match="out of order"):
        await import_into(driver, backwards, {"Ref:0": target})
    beyond = handmade([("Ref:0/00000001", a, ".checksum", sha1(a))])
    with pytest.raises(XvaError, match="beyond the end"):
        await import_into(driver, beyond, {"Ref:0": target})


async def test_decompression_output_is_bounded() -> None:
    """A small stream that inflates to far more than it is worth is read piece by piece:
    the reader stops at the first bad member without inflating the rest."""
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [bomb.compress(tar_header("junk", 8 << 30))]
    zeros = bytes(8 << 20)
    parts += [bomb.compress(zeros) for _ in range(64)]  # 512 MiB of zeros, about 0.5 MiB
    data = b"".join([*parts, bomb.flush()])
    reader = XvaReader(Source(data))
    try:
        with pytest.raises(XvaError) as e:
            await reader.read_ova()
        assert e.value.code == "IMPORT_ERROR_UNEXPECTED_FILE"
    finally:
        await reader.close()


async def stream_of(data: bytes) -> AsyncIterator[tuple[int, bytearray]]:
    yield 0, bytearray(data)


async def test_write_disk_skips_zero_blocks(driver: SRDriver) -> None:
    target = await new_disk(driver, 2 * MiB, [(0, sample(2 * MiB, 3))])
    piece = bytearray(2 * MiB)
    piece[65536 * 5 : 65536 * 5 + 10] = b"0123456789"
    writer = await driver.open_writer(target)
    await write_disk(stream_of(bytes(piece)), writer)
    await writer.commit()
    expected = await new_disk(driver, 2 * MiB, [(65536 * 5, b"0123456789")])
    assert await digest(driver, target) == await digest(driver, expected)


async def test_old_streams_carry_a_trailing_checksum_table(driver: SRDriver) -> None:
    """Before export_vsn 2, a table of every chunk's checksum follows the disks."""
    a = sample(MiB, 11)
    good = (
        "<value><struct><member><name>Ref:0/00000000</name>"
        f"<value>{sha1(a)}</value></member></struct></value>"
    ).encode()
    body = handmade([("Ref:0/00000000", a, ".checksum", sha1(a))])[:-1024]
    target = await new_disk(driver, MiB, [])
    for table, matches in ((good, True), (good.replace(sha1(a)[:8].encode(), b"00000000"), False)):
        data = body + tar_header("checksum.xml", len(table)) + table
        data += bytes(-len(table) % 512) + bytes(1024)
        reader = XvaReader(Source(data))
        reader.keep_checksums = True
        await reader.read_ova()
        writer = await driver.open_writer(target)
        await write_disk(reader.disk_pieces("Ref:0", MiB, verify=False), writer)
        await writer.abort()
        assert reader.table_matches(await reader.checksum_table()) is matches
        await reader.close()
