"""The XVA format: a whole VM as one tar stream, written and read with bounded memory.

An XVA is a tar archive (optionally gzip- or zstd-compressed as a whole) whose first member
is ``ova.xml`` — one bare XML-RPC ``<value>`` describing the VM and its devices — followed
by each disk cut into 1 MiB chunks named ``<id>/<8-digit chunk number>``, every chunk
followed by a member holding its checksum (``.xxhash``: XXH64 as 16 upper-case hex digits;
older exporters wrote ``.checksum``: SHA-1 hex). All-zero chunks are left out, except the
first and last of each disk, so a reader fills the gap of a missing chunk number with zeros.

This module knows nothing of the API: it turns disk readers into such a stream, and a
stream back into ova.xml plus each disk's ``(offset, data)`` pieces and disk writes.
Compression and decompression run off the event loop; decompression in a thread with a
bounded output, so a small malicious stream cannot inflate into memory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import threading
import time
import zlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Sequence,
)
from dataclasses import dataclass
from typing import IO, Any, Protocol, cast
from xml.parsers import expat

from openxapi.storage.driver import DiskReader, DiskWriter, Extent
from openxapi.storage.transfer import nonzero_runs

try:
    import xxhash as _xxhash
except ImportError:  # pragma: no cover - a declared dependency; SHA-1 is the fallback
    _xxhash = None  # type: ignore[assignment]
try:
    import zstandard as _zstd
except ImportError:  # pragma: no cover - a declared dependency
    _zstd = None  # type: ignore[assignment]

log = logging.getLogger("openxapi.xva")

CHUNK_SIZE = 1 << 20
OVA_XML = "ova.xml"
#: The version of the stream layout written here (inline checksums, no trailing table).
EXPORT_VSN = 2
BLOCK = 512
TAR_END = bytes(2 * BLOCK)
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
XXHASH_EXT = ".xxhash"
SHA1_EXT = ".checksum"
#: Compressions the exporter offers: ``use_compression`` values → stream kind.
COMPRESSIONS = {"true": "gzip", "gzip": "gzip", "zstd": "zstd"}

#: Largest ova.xml read (a VM's description is a few tens of KiB).
MAX_OVA_BYTES = 32 << 20
#: Largest chunk accepted (the reference writes 1 MiB).
MAX_CHUNK_BYTES = 16 << 20
#: Largest checksum member or legacy checksum table accepted.
MAX_CHECKSUM_BYTES = 1024
MAX_TABLE_BYTES = 256 << 20
#: How much decompressed data one step of the inflater may produce.
INFLATE_STEP = 1 << 20
#: Bytes after the last disk read to find the end of the archive before giving up.
MAX_TRAILER_BYTES = 64 << 20

ZERO_CHUNK = bytes(CHUNK_SIZE)

Progress = Callable[[int], None]


class ByteSource(Protocol):
    """Anything with ``async read(n) -> bytes`` returning b"" at the end."""

    async def read(self, n: int = ...) -> bytes: ...


class XvaError(Exception):
    """The stream is not a usable XVA: ``code`` and ``params`` are the reference's error."""

    def __init__(self, code: str, *params: str) -> None:
        super().__init__(code, *params)
        self.code = code
        self.params = list(params)


def premature_end() -> XvaError:
    return XvaError("IMPORT_ERROR_PREMATURE_EOF")


def invalid(why: str) -> XvaError:
    return XvaError("IMPORT_ERROR", f"Invalid XVA file: {why}")


# ---- checksums ---------------------------------------------------------------------------


def xxhash_available() -> bool:
    return _xxhash is not None


def checksum(ext: str, data: bytes | bytearray | memoryview) -> str:
    """The checksum text a member with extension ``ext`` holds for ``data``."""
    if ext == XXHASH_EXT:
        if _xxhash is None:
            raise XvaError("IMPORT_ERROR", "xxhash checksums cannot be verified here")
        return _xxhash.xxh64_hexdigest(data).upper()
    if ext == SHA1_EXT:
        return hashlib.sha1(data, usedforsecurity=False).hexdigest()
    raise XvaError("IMPORT_ERROR", f"Found unsupported checksum file: {ext}")


def checksum_ext(name: str) -> str:
    for ext in (XXHASH_EXT, SHA1_EXT):
        if name.endswith(ext):
            return ext
    return ""


# ---- tar ---------------------------------------------------------------------------------


def _octal(value: int, width: int) -> bytes:
    """A numeric tar field: octal digits and NUL, or base-256 when too large."""
    if value < 8 ** (width - 1):
        return b"%0*o\0" % (width - 1, value)
    out = bytearray(value.to_bytes(width, "big"))
    out[0] |= 0x80
    return bytes(out)


def tar_header(name: str, size: int, mtime: int = 0, typeflag: bytes = b"0") -> bytes:
    """A POSIX ustar header for a regular file ``name`` of ``size`` bytes."""
    raw = name.encode()
    prefix = b""
    if len(raw) > 100:
        cut = raw.rfind(b"/", 0, 156)
        if cut <= 0 or len(raw) - cut - 1 > 100:
            raise ValueError(f"tar member name too long: {name}")
        prefix, raw = raw[:cut], raw[cut + 1 :]
    hdr = bytearray(BLOCK)
    hdr[0 : len(raw)] = raw
    hdr[100:108] = _octal(0o644, 8)
    hdr[108:116] = _octal(0, 8)
    hdr[116:124] = _octal(0, 8)
    hdr[124:136] = _octal(size, 12)
    hdr[136:148] = _octal(mtime, 12)
    hdr[148:156] = b" " * 8
    hdr[156:157] = typeflag
    hdr[257:263] = b"ustar\0"
    hdr[263:265] = b"00"
    hdr[265:269] = b"root"
    hdr[297:301] = b"root"
    hdr[345 : 345 + len(prefix)] = prefix
    hdr[148:156] = b"%06o\0 " % sum(hdr)
    return bytes(hdr)


def padding(size: int) -> int:
    """Zero bytes after a member's data up to the next 512-byte boundary."""
    return -size % BLOCK


@dataclass(frozen=True, slots=True)
class TarMember:
    name: str
    size: int
    typeflag: bytes


def _number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:
        raw = bytearray(field)
        raw[0] &= 0x7F
        return int.from_bytes(raw, "big")
    text = field.split(b"\0", 1)[0].strip(b" \0")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise invalid("a tar header has a bad number") from None


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "replace")


def parse_tar_header(block: bytes | bytearray) -> TarMember | None:
    """The member a 512-byte header describes; None for an all-zero block (end of
    archive); XvaError if the block is not a tar header."""
    if len(block) != BLOCK:
        raise premature_end()
    if block == TAR_END[:BLOCK]:
        return None
    stored = _number(bytes(block[148:156]))
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != unsigned:
        high = sum(1 for b in block if b >= 0x80) - sum(1 for b in block[148:156] if b >= 0x80)
        if stored != unsigned - 256 * high:  # some tars sum signed bytes
            raise invalid("a tar header checksum is wrong")
        raise invalid("a tar header checksum is wrong")
    name = _text(bytes(block[0:100]))
    if bytes(block[257:262]) == b"ustar":
        prefix = _text(bytes(block[345:500]))
        if prefix:
            name = f"{prefix}/{name}"
    return TarMember(name, _number(bytes(block[124:136])), bytes(block[156:157]))


# ---- ova.xml -----------------------------------------------------------------------------

_MAX_DEPTH = 64
_SCALAR_TAGS = frozenset(
    {"string", "int", "i4", "i8", "boolean", "double", "dateTime.iso8601", "base64"}
)


def _scalar(tag: str, text: str) -> Any:
    if tag in ("int", "i4", "i8"):
        try:
            return int(text.strip())
        except ValueError:
            raise invalid(f"ova.xml has a bad <{tag}>") from None
    if tag == "boolean":
        value = text.strip()
        if value not in ("0", "1"):
            raise invalid("ova.xml has a bad <boolean>")
        return value == "1"
    if tag == "double":
        try:
            return float(text.strip())
        except ValueError:
            raise invalid("ova.xml has a bad <double>") from None
    return text


def decode_value(xml: bytes) -> Any:
    """The one bare XML-RPC ``<value>`` of ``xml`` as plain Python values (ints from
    ``<int>``, everything untagged or ``<string>`` or ``<dateTime.iso8601>`` as str).
    DOCTYPE and entity declarations are refused."""
    # Each frame: [tag, text parts, children]
    stack: list[list[Any]] = [["", [], []]]
    depth = 0

    def start(tag: str, _attrs: object) -> None:
        nonlocal depth
        parent = stack[-1][0]
        allowed = {
            "": ("value",),
            "value": ("struct", "array", "nil", *_SCALAR_TAGS),
            "struct": ("member",),
            "member": ("name", "value"),
            "array": ("data",),
            "data": ("value",),
        }.get(parent, ())
        if tag not in allowed:
            raise invalid(f"ova.xml has <{tag}> inside <{parent or 'document'}>")
        if tag in ("struct", "array"):
            depth += 1
            if depth > _MAX_DEPTH:
                raise invalid("ova.xml nests too deeply")
        stack.append([tag, [], []])

    def end(tag: str) -> None:
        nonlocal depth
        _, parts, children = stack.pop()
        text = "".join(parts)
        value: Any
        if tag == "value":
            value = children[0] if children else text
        elif tag in _SCALAR_TAGS:
            value = _scalar(tag, text)
        elif tag == "nil":
            value = None
        elif tag == "name":
            value = text
        elif tag == "member":
            if len(children) != 2 or not isinstance(children[0], str):
                raise invalid("ova.xml has a struct member without a name and a value")
            value = (children[0], children[1])
        elif tag == "struct":
            depth -= 1
            value = dict(children)
        elif tag == "array":
            depth -= 1
            value = children[0] if children else []
        else:  # data
            value = children
        stack[-1][2].append(value)

    def chardata(data: str) -> None:
        stack[-1][1].append(data)

    def refuse(*_args: object) -> None:
        raise invalid("ova.xml may not declare a DOCTYPE or entities")

    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chardata
    try:
        parser.Parse(xml, True)
    except expat.ExpatError as e:
        raise invalid(f"ova.xml is not well-formed XML: {e}") from None
    top = stack[0][2]
    if len(top) != 1:
        raise invalid("ova.xml holds no value")
    return top[0]


@dataclass(frozen=True, slots=True)
class OvaObject:
    """One exported object: its class, its export-local id and its record."""

    cls: str
    id: str
    snapshot: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OvaHeader:
    version: dict[str, Any]
    objects: list[OvaObject]

    @property
    def export_vsn(self) -> int:
        """0 when missing (no inline checksums), 1 (inline and a trailing table), 2."""
        try:
            return int(self.version.get("export_vsn", 0))
        except (TypeError, ValueError):
            return 0


def parse_ova(xml: bytes) -> OvaHeader:
    """The version struct and objects of an ova.xml; XvaError if it is not one."""
    value = decode_value(xml)
    if not isinstance(value, dict):
        raise invalid("ova.xml does not hold a struct")
    version = value.get("version")
    objects = value.get("objects")
    if not isinstance(version, dict) or not isinstance(objects, list):
        raise invalid("ova.xml lacks its version or objects")
    out: list[OvaObject] = []
    for obj in objects:
        if not isinstance(obj, dict):
            raise invalid("ova.xml has an object that is not a struct")
        cls, oid, snap = obj.get("class"), obj.get("id"), obj.get("snapshot")
        if not isinstance(cls, str) or not isinstance(oid, str) or not isinstance(snap, dict):
            raise invalid("ova.xml has an object without class, id and snapshot")
        out.append(OvaObject(cls, oid, snap))
    return OvaHeader(version, out)


def version_struct(
    hostname: str,
    product_version: str,
    product_brand: str,
    build_number: str,
    xapi_major: int,
    xapi_minor: int,
) -> dict[str, Any]:
    """The ``version`` member of an ova.xml written here."""
    return {
        "hostname": hostname,
        "date": time.strftime("%Y-%m-%d"),
        "product_version": product_version,
        "product_brand": product_brand,
        "build_number": build_number,
        "xapi_major": xapi_major,
        "xapi_minor": xapi_minor,
        "export_vsn": EXPORT_VSN,
    }


# ---- reading disks for export ------------------------------------------------------------


def _read_range(reader: DiskReader, extents: list[Extent], offset: int, n: int) -> bytes:
    """Bytes ``[offset, offset + n)`` of the disk, across extents (holes read as zeros)."""
    out: list[bytes] = []
    end = offset + n
    for ext in extents:
        s, e = max(ext.start, offset), min(ext.start + ext.length, end)
        if s >= e:
            continue
        out.append(reader.read(s, e - s) if ext.data else bytes(e - s))
    data = b"".join(out)
    return data + bytes(n - len(data)) if len(data) < n else data


def chunks_with_data(size: int, extents: list[Extent]) -> list[int]:
    """Chunk numbers that may hold data, plus the first and last (always written)."""
    if size <= 0:
        return []
    last = (size - 1) // CHUNK_SIZE
    wanted = {0, last}
    for ext in extents:
        if ext.data and ext.length > 0:
            first = ext.start // CHUNK_SIZE
            end = min(ext.start + ext.length, size)
            wanted.update(range(first, (end - 1) // CHUNK_SIZE + 1))
    return sorted(n for n in wanted if n <= last)


async def export_chunks(reader: DiskReader) -> AsyncIterator[tuple[int, bytes]]:
    """(chunk number, data) of the chunks an XVA carries for this disk, reading one ahead:
    all-zero chunks are left out except the first and the last."""
    size = reader.size
    extents = reader.extents()
    numbers = chunks_with_data(size, extents)
    if not numbers:
        return
    last = numbers[-1]
    loop = asyncio.get_running_loop()

    def start(n: int) -> asyncio.Future[bytes]:
        offset = n * CHUNK_SIZE
        length = min(CHUNK_SIZE, size - offset)
        if reader.blocking:
            return loop.run_in_executor(None, _read_range, reader, extents, offset, length)
        fut: asyncio.Future[bytes] = loop.create_future()
        fut.set_result(_read_range(reader, extents, offset, length))
        return fut

    current = start(numbers[0])
    try:
        for i, n in enumerate(numbers):
            ahead = start(numbers[i + 1]) if i + 1 < len(numbers) else None
            data = await current
            if ahead is not None:
                current = ahead
            if n in (0, last) or data != ZERO_CHUNK[: len(data)]:
                yield n, data
    finally:
        if not current.done():
            with contextlib.suppress(Exception):
                await current


# ---- writing the stream ------------------------------------------------------------------


class _Compressor:
    """Whole-stream gzip or zstd, run in an executor (both release the GIL)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._obj: Any
        if kind == "gzip":
            self._obj = zlib.compressobj(1, zlib.DEFLATED, 31)
        elif kind == "zstd":
            if _zstd is None:
                raise RuntimeError("zstd compression needs the zstandard package")
            self._obj = _zstd.ZstdCompressor(level=3).compressobj()
        else:
            raise ValueError(kind)

    async def compress(self, data: bytes) -> bytes:
        out = await asyncio.get_running_loop().run_in_executor(None, self._obj.compress, data)
        return bytes(out)

    async def flush(self) -> bytes:
        return bytes(self._obj.flush())


def compression_available(kind: str) -> bool:
    return kind == "gzip" or (kind == "zstd" and _zstd is not None)


@dataclass(frozen=True, slots=True)
class ExportDisk:
    """A disk to stream: its export id (the member prefix) and how to open its reader."""

    id: str
    size: int
    open: Callable[[], Awaitable[DiskReader]]


def _chunk_members(prefix: str, n: int, data: bytes) -> bytes:
    name = f"{prefix}/{n:08d}"
    ext = XXHASH_EXT if _xxhash is not None else SHA1_EXT
    digest = checksum(ext, data).encode()
    return b"".join(
        (
            tar_header(name, len(data)),
            data,
            bytes(padding(len(data))),
            tar_header(name + ext, len(digest)),
            digest,
            bytes(padding(len(digest))),
        )
    )


async def _plain_stream(
    ova_xml: bytes, disks: Sequence[ExportDisk], progress: Progress | None
) -> AsyncGenerator[bytes, None]:
    yield b"".join(
        (tar_header(OVA_XML, len(ova_xml), int(time.time())), ova_xml, bytes(padding(len(ova_xml))))
    )
    done = 0
    for disk in sorted(disks, key=lambda d: d.id):
        reader = await disk.open()
        try:
            async for n, data in export_chunks(reader):
                yield _chunk_members(disk.id, n, data)
                if progress is not None:
                    progress(done + min(disk.size, n * CHUNK_SIZE + len(data)))
        finally:
            await reader.close()
        done += disk.size
        if progress is not None:
            progress(done)
    yield TAR_END


async def xva_stream(
    ova_xml: bytes,
    disks: Sequence[ExportDisk],
    compression: str = "",
    progress: Progress | None = None,
) -> AsyncGenerator[bytes, None]:
    """The XVA of ``ova_xml`` and ``disks`` (streamed in the order of their ids, as the
    reference does), whole-stream compressed with ``compression`` ("", "gzip", "zstd")."""
    plain = _plain_stream(ova_xml, disks, progress)
    try:
        if not compression:
            async for piece in plain:
                yield piece
            return
        comp = _Compressor(compression)
        pending: list[bytes] = []
        size = 0
        async for piece in plain:
            pending.append(piece)
            size += len(piece)
            if size >= CHUNK_SIZE:
                out = await comp.compress(b"".join(pending))
                pending, size = [], 0
                if out:
                    yield out
        tail = await comp.compress(b"".join(pending)) if pending else b""
        yield tail + await comp.flush()
    finally:
        await plain.aclose()


# ---- reading the stream ------------------------------------------------------------------


class _Input:
    """Buffered exact reads over a byte source; the end before a wanted byte is a
    premature end of the archive."""

    def __init__(self, source: ByteSource) -> None:
        self.source = source

    async def read_some(self, n: int) -> bytes:
        return await self.source.read(n)

    async def read_upto(self, n: int) -> bytes:
        """Up to ``n`` bytes: fewer only where the source ends."""
        parts = []
        got = 0
        while got < n:
            data = await self.read_some(n - got)
            if not data:
                break
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    async def read_exact(self, n: int) -> bytearray:
        out = bytearray(n)
        view = memoryview(out)
        got = 0
        while got < n:
            data = await self.read_some(n - got)
            if not data:
                raise premature_end()
            view[got : got + len(data)] = data
            got += len(data)
        return out

    async def skip(self, n: int) -> None:
        while n > 0:
            data = await self.read_some(min(n, 1 << 16))
            if not data:
                raise premature_end()
            n -= len(data)


class _Prefixed:
    """A byte source that first returns bytes already taken from another."""

    def __init__(self, first: bytes, rest: ByteSource) -> None:
        self._first = first
        self._rest = rest

    async def read(self, n: int = 1 << 16) -> bytes:
        if self._first:
            data, self._first = self._first[:n], self._first[n:]
            return data
        return await self._rest.read(n)


class _Stop(Exception):
    """The inflater thread is told to end."""


class _Inflater:
    """Decompresses a byte source in a worker thread.

    The thread pulls compressed bytes from the source through the event loop and hands
    decompressed pieces of at most :data:`INFLATE_STEP` bytes back through a small queue,
    so neither side holds more than a few MiB whatever the stream expands to.
    """

    def __init__(self, source: ByteSource, kind: str) -> None:
        self._source = source
        self._kind = kind
        self._loop = asyncio.get_running_loop()
        self._out: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=4)
        self._pending: concurrent.futures.Future[Any] | None = None
        self._closing = False
        self._leftover = memoryview(b"")
        self._ended = False
        self._thread = threading.Thread(target=self._run, name=f"xva-{kind}", daemon=True)
        self._thread.start()

    # -- the worker thread
    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        self._pending = fut
        if self._closing:
            fut.cancel()
        try:
            return fut.result()
        except concurrent.futures.CancelledError:
            raise _Stop() from None

    def _fetch(self, n: int) -> bytes:
        if self._closing:
            raise _Stop()
        data: bytes = self._call(self._source.read(n))
        return data

    def _emit(self, item: bytes | BaseException | None) -> None:
        if self._closing:
            raise _Stop()
        self._call(self._out.put(item))

    def _gunzip(self) -> None:
        d = zlib.decompressobj(47)
        pending = b""
        while True:
            if d.unconsumed_tail:
                data = d.unconsumed_tail
            elif pending:
                data, pending = pending, b""
            else:
                data = self._fetch(1 << 17)
                if not data:
                    return
            out = d.decompress(data, INFLATE_STEP)
            if out:
                self._emit(out)
            if d.eof:
                pending = d.unused_data
                if pending and not pending.startswith(GZIP_MAGIC[: len(pending)]):
                    return  # trailing bytes after the last member are ignored, as gzip does
                d = zlib.decompressobj(47)

    def _unzstd(self) -> None:
        assert _zstd is not None
        fetch = self._fetch

        class Source:
            def read(self, n: int = -1) -> bytes:
                return fetch(n if n > 0 else 1 << 17)

        reader = _zstd.ZstdDecompressor().stream_reader(
            cast(IO[bytes], Source()), read_size=1 << 17, read_across_frames=True
        )
        while True:
            out = reader.read(INFLATE_STEP)
            if not out:
                return
            self._emit(out)

    def _run(self) -> None:
        try:
            if self._kind == "zstd":
                self._unzstd()
            else:
                self._gunzip()
            self._emit(None)
        except _Stop:
            return
        except BaseException as e:  # handed to the reader, which raises it
            with contextlib.suppress(_Stop):
                self._emit(e)

    # -- the event loop side
    async def read(self, n: int = 1 << 16) -> bytes:
        if not self._leftover:
            if self._ended:
                return b""
            item = await self._out.get()
            if item is None:
                self._ended = True
                return b""
            if isinstance(item, XvaError):
                raise item
            if isinstance(item, BaseException):
                raise XvaError(
                    "IMPORT_ERROR", f"the {self._kind} stream cannot be decompressed: {item}"
                )
            self._leftover = memoryview(item)
        data = bytes(self._leftover[:n])
        self._leftover = self._leftover[n:]
        return data

    async def close(self) -> None:
        self._closing = True
        pending = self._pending
        if pending is not None:
            pending.cancel()
        while not self._out.empty():
            self._out.get_nowait()
        await self._loop.run_in_executor(None, self._thread.join, 10)


@dataclass(frozen=True, slots=True)
class ChecksumFailure:
    """A chunk whose data does not match the checksum stored beside it."""

    name: str
    stored: str
    computed: str

    def error(self) -> XvaError:
        return XvaError(
            "IMPORT_ERROR",
            f"Block {self.name} checksum failed: original = {self.stored}; "
            f"recomputed = {self.computed}",
        )


class XvaReader:
    """Reads an XVA upload: ``read_ova()`` first, then ``disk_pieces`` for each disk in
    the order of their ids, then ``finish()``. Raises :class:`XvaError` for anything
    that is not a valid stream (a stream that ends early: IMPORT_ERROR_PREMATURE_EOF)."""

    def __init__(self, source: ByteSource) -> None:
        self._raw = source
        self._input = _Input(source)
        self._inflater: _Inflater | None = None
        self.compression = ""
        self._long_name = ""
        #: Every chunk's computed checksum, kept only for old streams with a trailing table.
        self.computed: dict[str, str] = {}
        self.keep_checksums = False

    async def _header(self) -> TarMember | None:
        """The next member's header (GNU long names and pax headers folded in)."""
        while True:
            member = parse_tar_header(await self._input.read_exact(BLOCK))
            if member is None:
                return None
            if member.typeflag == b"L":
                raw = await self._input.read_exact(min(member.size, 4096))
                await self._input.skip(member.size - len(raw) + padding(member.size))
                self._long_name = _text(bytes(raw))
                continue
            if member.typeflag in (b"x", b"g"):
                if member.size > 1 << 20:
                    raise invalid("a pax header is too large")
                raw = await self._input.read_exact(member.size)
                await self._input.skip(padding(member.size))
                path = _pax_path(bytes(raw)) if member.typeflag == b"x" else ""
                if path:
                    self._long_name = path
                continue
            if self._long_name:
                member = TarMember(self._long_name, member.size, member.typeflag)
                self._long_name = ""
            return member

    async def _next(self) -> TarMember:
        member = await self._header()
        if member is None:
            raise premature_end()
        return member

    async def read_ova(self) -> bytes:
        """The ova.xml bytes; a gzip or zstd stream is recognised and decompressed."""
        first = await self._input.read_upto(BLOCK)
        member = None
        if len(first) == BLOCK:
            with contextlib.suppress(XvaError):
                member = parse_tar_header(first)
        if member is None:
            kind = ""
            if first.startswith(ZSTD_MAGIC):
                kind = "zstd"
            elif first.startswith(GZIP_MAGIC):
                kind = "gzip"
            if not kind and len(first) < BLOCK:
                raise premature_end()
            if not kind:
                raise invalid("neither a tar archive nor a gzip or zstd compressed one")
            if not compression_available(kind):
                raise XvaError("IMPORT_ERROR", f"{kind} streams cannot be decompressed here")
            self.compression = kind
            self._inflater = _Inflater(_Prefixed(bytes(first), self._raw), kind)
            self._input = _Input(self._inflater)
            member = await self._next()
        if member.name != OVA_XML:
            raise XvaError("IMPORT_ERROR_UNEXPECTED_FILE", OVA_XML, member.name)
        if member.size > MAX_OVA_BYTES:
            raise invalid("ova.xml is too large")
        data = await self._input.read_exact(member.size)
        await self._input.skip(padding(member.size))
        return bytes(data)

    async def disk_pieces(
        self,
        prefix: str,
        size: int,
        verify: bool,
        progress: Progress | None = None,
    ) -> AsyncIterator[tuple[int, bytearray]]:
        """(offset, data) of the chunks of disk ``prefix`` until ``size`` bytes are
        accounted for; missing chunk numbers are zeros and are not yielded. A checksum
        mismatch raises (IMPORT_ERROR naming the block) when ``verify``."""
        offset = 0
        last = -1
        unit = 0
        while offset < size:
            member = await self._next()
            name = member.name
            if not name.startswith(prefix + "/"):
                raise invalid(f"expected a chunk of {prefix}, found {name}")
            suffix = name[len(prefix) + 1 :]
            if not suffix.isdigit() or not suffix.isascii():
                raise invalid(f"{name} is not a chunk name")
            number = int(suffix)
            if number <= last:
                raise invalid(f"chunk {name} is out of order")
            if member.size > MAX_CHUNK_BYTES:
                raise invalid(f"chunk {name} is too large")
            if unit == 0 and member.size > 0:
                unit = member.size
            offset += (number - last - 1) * (unit or CHUNK_SIZE)
            if offset + member.size > size:
                raise invalid(f"chunk {name} goes beyond the end of its disk")
            data = await self._input.read_exact(member.size)
            await self._input.skip(padding(member.size))
            csum = await self._next()
            ext = checksum_ext(csum.name)
            if not ext:
                raise XvaError("IMPORT_ERROR", f"Found unsupported checksum file: {csum.name}")
            if csum.name != name + ext:
                raise invalid(f"expected the checksum of {name}, found {csum.name}")
            if csum.size > MAX_CHECKSUM_BYTES:
                raise invalid(f"{csum.name} is too large")
            stored = bytes(await self._input.read_exact(csum.size)).decode("ascii", "replace")
            await self._input.skip(padding(csum.size))
            if verify or self.keep_checksums:
                computed = await _checksum_off_loop(ext, data)
                if self.keep_checksums:
                    self.computed[name] = computed
                if verify and stored.strip().lower() != computed.lower():
                    raise ChecksumFailure(name, stored, computed).error()
            if member.size:
                yield offset, data
            offset += member.size
            last = number
            if progress is not None:
                progress(offset)

    async def checksum_table(self) -> dict[str, str]:
        """The trailing checksum table of a stream older than export_vsn 2."""
        member = await self._next()
        if member.size > MAX_TABLE_BYTES:
            raise invalid("the checksum table is too large")
        data = await self._input.read_exact(member.size)
        await self._input.skip(padding(member.size))
        table = decode_value(bytes(data))
        if not isinstance(table, dict):
            raise invalid("the checksum table is not a struct")
        return {str(k): str(v) for k, v in table.items()}

    def table_matches(self, table: dict[str, str]) -> bool:
        """Whether every chunk's computed checksum is the one the trailing table lists."""
        return all(table.get(name, "").lower() == c.lower() for name, c in self.computed.items())

    async def finish(self) -> None:
        """Consume the end of the archive (the client is still sending it)."""
        left = MAX_TRAILER_BYTES
        while left > 0:
            data = await self._input.read_some(min(left, 1 << 16))
            if not data:
                return
            left -= len(data)

    async def discard_rest(self, limit: int = MAX_TRAILER_BYTES) -> None:
        """Read and drop what is left of the upload, up to ``limit`` bytes, so that a
        client still sending after a failure sees the reply rather than a reset."""
        with contextlib.suppress(XvaError):
            while limit > 0:
                data = await self._raw.read(min(limit, 1 << 16))
                if not data:
                    return
                limit -= len(data)

    async def close(self) -> None:
        if self._inflater is not None:
            await self._inflater.close()


def _pax_path(raw: bytes) -> str:
    """The ``path`` record of a pax extended header, if any."""
    pos = 0
    while pos < len(raw):
        space = raw.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(raw[pos:space])
        except ValueError:
            break
        if length <= 0:
            break
        record = raw[space + 1 : pos + length - 1]
        key, _, value = record.partition(b"=")
        if key == b"path":
            return value.decode("utf-8", "replace")
        pos += length
    return ""


async def _checksum_off_loop(ext: str, data: bytearray) -> str:
    if ext == XXHASH_EXT:  # XXH64 of a MiB takes well under a millisecond
        return checksum(ext, data)
    return await asyncio.get_running_loop().run_in_executor(None, checksum, ext, data)


# ---- writing disks on import -------------------------------------------------------------


def _write_runs(writer: DiskWriter, offset: int, data: bytearray) -> None:
    view = memoryview(data)
    for start, length in nonzero_runs(data):
        writer.write(offset + start, view[start : start + length])


async def write_disk(pieces: AsyncIterator[tuple[int, bytearray]], writer: DiskWriter) -> None:
    """Write ``pieces`` into ``writer`` (which starts all-zero, so zero blocks are
    skipped), one write in flight while the next piece arrives; flushed, not committed."""
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[None] | None = None
    try:
        async for offset, data in pieces:
            if pending is not None:
                await pending
                pending = None
            if writer.blocking:
                pending = loop.run_in_executor(None, _write_runs, writer, offset, data)
            else:
                _write_runs(writer, offset, data)
        if pending is not None:
            await pending
            pending = None
        if writer.blocking:
            await loop.run_in_executor(None, writer.flush)
        else:
            writer.flush()
    finally:
        if pending is not None:
            with contextlib.suppress(Exception):
                await pending
