"""A local directory SR: each disk a qcow2 file managed with ``qemu-img``.

Layout of ``<sr_root>/<sr uuid>/``:

- ``<location>.qcow2`` — a disk (its location is the file name's stem; the server
  names new disks by their uuid);
- ``.base-<id>.qcow2`` — a hidden, read-only base that clones and snapshots share;
- ``.tmp-<id>.qcow2`` — new contents being written by an import or copy.

Clone and snapshot never copy data and never let two disks share a write: the source's
current image becomes a read-only hidden base, and the source and the new disk each get
a fresh overlay on it. Bases no visible disk reaches any more are deleted. Reads for
export go straight to the files through ``qemu-img map``; imports write a new image
with preallocated metadata and swap it in with one rename.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import uuid as uuidlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from openxapi.storage import qemu_img
from openxapi.storage.driver import (
    READ_WRITE_FEATURES,
    AttachInfo,
    DiskReader,
    DiskWriter,
    DriverContext,
    LiveSnapshot,
    ProbeResult,
    SRDriver,
    SrStat,
    VdiInfo,
    round_size,
)
from openxapi.storage.errors import (
    BadImage,
    InvalidLocation,
    InvalidSize,
    SrFull,
    VdiMissing,
)
from openxapi.storage.files import FileReader, Piece, SegmentWriter, raw_file_reader
from openxapi.storage.paths import UUID_RE, inside, is_plain_name

log = logging.getLogger("openxapi.storage.localdir")

SUFFIX = ".qcow2"
BASE_PREFIX = ".base-"
TMP_PREFIX = ".tmp-"

T = TypeVar("T")


async def _io(fn: Callable[..., T], *args: Any) -> T:
    """Blocking file-system work, off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _allocated(path: Path) -> int:
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


class LocalDirDriver(SRDriver):
    """SR type ``file``: a directory of qcow2 images."""

    sr_type: ClassVar[str] = "file"
    sm_name: ClassVar[str] = "Local directory of qcow2 images"
    sm_description: ClassVar[str] = (
        "SR plugin which represents disks as qcow2 files in a local directory"
    )
    sm_configuration: ClassVar[Mapping[str, str]] = {
        "location": "directory of the SR (chosen by the server)"
    }
    features: ClassVar[Mapping[str, int]] = {**READ_WRITE_FEATURES, "SR_METADATA": 1}
    image_formats: ClassVar[tuple[str, ...]] = ("qcow2",)

    def __init__(self, ctx: DriverContext, sr_uuid: str, device_config: Mapping[str, str]):
        super().__init__(ctx, sr_uuid, device_config)
        if not UUID_RE.match(sr_uuid):
            raise InvalidLocation(sr_uuid)
        self.root = ctx.sr_root / sr_uuid
        self._lock = asyncio.Lock()
        self._sizes: dict[str, int] = {}
        self._attached = False

    # ---- helpers ----------------------------------------------------------------------
    @property
    def scratch_dir(self) -> Path:
        return self.root

    def pbd_device_config(self) -> dict[str, str]:
        return {**self.device_config, "location": str(self.root)}

    def _top(self, location: str) -> Path:
        if location.startswith(".") or not is_plain_name(location + SUFFIX):
            raise InvalidLocation(location)
        return inside(self.root, location + SUFFIX)

    def _member(self, name: str) -> Path:
        """A file named inside a qcow2 header: it must be a file of this directory."""
        bare = name[1:] if name.startswith(".") else name
        if "/" in name or not is_plain_name(bare):
            raise BadImage(f"a backing file {name!r} outside the SR")
        path = self.root / name
        if os.path.dirname(os.path.realpath(path)) != os.path.realpath(self.root):
            raise BadImage(f"a backing file {name!r} outside the SR")
        return path

    def _chain(self, location: str) -> list[Path]:
        """The disk's image and its backing files, top first (blocking)."""
        top = self._top(location)
        if not top.exists():
            raise VdiMissing(location)
        chain = [top]
        while True:
            header = qemu_img.read_header(chain[-1])
            if header is None or header.has_external_data:
                raise BadImage(f"{chain[-1].name} is not a self-contained qcow2 image")
            if header.backing_file is None:
                return chain
            path = self._member(header.backing_file)
            if path in chain or not path.exists():
                raise BadImage(f"{chain[-1].name} has a broken backing chain")
            chain.append(path)

    def _info(self, location: str) -> VdiInfo:
        """Facts of one disk (blocking)."""
        chain = self._chain(location)
        header = qemu_img.read_header(chain[0])
        assert header is not None
        return VdiInfo(
            location=location,
            virtual_size=header.virtual_size,
            physical_utilisation=_allocated(chain[0]),
            uuid=location if UUID_RE.match(location) else "",
        )

    def _visible(self) -> list[str]:
        out = []
        for name in os.listdir(self.root):
            if name.endswith(SUFFIX) and not name.startswith("."):
                loc = name[: -len(SUFFIX)]
                if is_plain_name(name):
                    out.append(loc)
        return sorted(out)

    def _scan(self) -> list[VdiInfo]:
        infos = []
        for loc in self._visible():
            try:
                infos.append(self._info(loc))
            except (BadImage, InvalidLocation, VdiMissing, OSError) as e:
                log.warning("SR %s: skipping %s: %s", self.sr_uuid, loc, e)
        self._sizes = {i.location: i.virtual_size for i in infos}
        return infos

    def _collect_garbage(self) -> int:
        """Delete hidden bases that no visible disk reaches (blocking; under the lock)."""
        reachable: set[str] = set()
        for loc in self._visible():
            try:
                reachable.update(p.name for p in self._chain(loc)[1:])
            except (BadImage, InvalidLocation, VdiMissing, OSError):
                continue
        removed = 0
        for name in os.listdir(self.root):
            if name.startswith(BASE_PREFIX) and name not in reachable:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.root / name)
                    removed += 1
        return removed

    def _available(self, total: int, excluding: str = "") -> int:
        used = sum(s for loc, s in self._sizes.items() if loc != excluding)
        return total - used

    def _total(self) -> int:
        st = os.statvfs(self.root)
        return st.f_blocks * st.f_frsize

    # ---- the SR -----------------------------------------------------------------------
    @classmethod
    async def probe(cls, ctx: DriverContext, device_config: Mapping[str, str]) -> list[ProbeResult]:
        def find() -> list[ProbeResult]:
            if not ctx.sr_root.is_dir():
                return []
            out = []
            for name in sorted(os.listdir(ctx.sr_root)):
                path = ctx.sr_root / name
                if UUID_RE.match(name) and path.is_dir():
                    st = os.statvfs(path)
                    total = st.f_blocks * st.f_frsize
                    stat = SrStat(total, total - st.f_bavail * st.f_frsize)
                    out.append(ProbeResult({"location": str(path)}, True, name, stat))
            return out

        return await _io(find)

    async def create(self, physical_size: int) -> None:
        def make() -> None:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            _fsync_dir(self.root.parent)

        await _io(make)

    async def delete(self) -> None:
        await _io(lambda: shutil.rmtree(self.root, ignore_errors=True))
        self._sizes.clear()

    async def attach(self, known: Sequence[VdiInfo] = ()) -> None:
        if self._attached:
            return

        def prepare() -> None:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            for name in os.listdir(self.root):
                if name.startswith(TMP_PREFIX):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.root / name)
            self._collect_garbage()
            self._scan()

        async with self._lock:
            await _io(prepare)
            self._attached = True

    async def detach(self) -> None:
        self._attached = False

    async def stat(self) -> SrStat:
        def measure() -> SrStat:
            st = os.statvfs(self.root)
            total = st.f_blocks * st.f_frsize
            return SrStat(total, total - st.f_bavail * st.f_frsize)

        return await _io(measure)

    async def scan(self) -> list[VdiInfo]:
        async with self._lock:
            return await _io(self._scan)

    # ---- disks ----------------------------------------------------------------------
    async def vdi_create(self, size: int, name_label: str = "") -> VdiInfo:
        size = round_size(max(size, 0))
        location = str(uuidlib.uuid4())
        top = self._top(location)
        async with self._lock:
            available = self._available(await _io(self._total))
            if size > available:
                raise SrFull(size, max(available, 0))
            try:
                await qemu_img.create(top, size)
            except BaseException:
                await _io(lambda: top.unlink(missing_ok=True))
                raise
            await _io(_fsync_dir, self.root)
            self._sizes[location] = size
        return await self.vdi_stat(location)

    async def vdi_delete(self, location: str) -> None:
        top = self._top(location)

        def remove() -> None:
            top.unlink(missing_ok=True)
            self._collect_garbage()
            _fsync_dir(self.root)

        async with self._lock:
            await _io(remove)
            self._sizes.pop(location, None)

    async def vdi_stat(self, location: str) -> VdiInfo:
        return await _io(self._info, location)

    async def vdi_introduce(self, location: str) -> VdiInfo:
        info = await self.vdi_stat(location)
        self._sizes[location] = info.virtual_size
        return info

    async def vdi_clone(self, location: str, live: LiveSnapshot | None = None) -> VdiInfo:
        return await self._fork(location, live)

    async def vdi_snapshot(self, location: str, live: LiveSnapshot | None = None) -> VdiInfo:
        return await self._fork(location, live)

    async def _fork(self, location: str, live: LiveSnapshot | None) -> VdiInfo:
        """The source's image becomes a read-only base under two fresh overlays."""
        top = self._top(location)
        new_location = str(uuidlib.uuid4())
        new_top = self._top(new_location)
        base_name = f"{BASE_PREFIX}{uuidlib.uuid4()}{SUFFIX}"
        base = self.root / base_name
        async with self._lock:
            chain = await _io(self._chain, location)
            header = await _io(qemu_img.read_header, chain[0])
            assert header is not None
            size = header.virtual_size
            await _io(os.rename, top, base)
            pivoted = False
            try:
                if live is not None:
                    await qemu_img.create(top, size, backing=base_name)
                    await live.pivot(str(top))
                    pivoted = True
                    await qemu_img.create(new_top, size, backing=base_name)
                else:
                    results = await asyncio.gather(
                        qemu_img.create(top, size, backing=base_name),
                        qemu_img.create(new_top, size, backing=base_name),
                        return_exceptions=True,
                    )
                    for r in results:
                        if isinstance(r, BaseException):
                            raise r
            except BaseException:
                await _io(self._undo_fork, top, new_top, base, pivoted)
                raise

            def settle() -> None:
                os.chmod(base, 0o444)
                _fsync_dir(self.root)

            await _io(settle)
            self._sizes[new_location] = size
        return await self.vdi_stat(new_location)

    @staticmethod
    def _undo_fork(top: Path, new_top: Path, base: Path, pivoted: bool) -> None:
        new_top.unlink(missing_ok=True)
        if not pivoted:
            top.unlink(missing_ok=True)
            os.rename(base, top)

    async def vdi_resize(self, location: str, size: int) -> VdiInfo:
        size = round_size(size)
        async with self._lock:
            info = await _io(self._info, location)
            if size < info.virtual_size:
                raise InvalidSize("shrinking not allowed")
            if size == info.virtual_size:
                return info
            available = self._available(await _io(self._total), excluding=location)
            if size > available:
                raise SrFull(size, max(available, 0))
            await qemu_img.resize(self._top(location), size)
            self._sizes[location] = size
        return await self.vdi_stat(location)

    async def vdi_attach(self, location: str, writable: bool) -> AttachInfo:
        await self.vdi_stat(location)
        return AttachInfo(str(self._top(location)), "qcow2", not writable)

    # ---- data -----------------------------------------------------------------------
    async def open_reader(self, location: str) -> DiskReader:
        chain = await _io(self._chain, location)
        top = chain[0]
        header = await _io(qemu_img.read_header, top)
        assert header is not None
        size = header.virtual_size
        fds = await _io(lambda: [os.open(p, os.O_RDONLY | os.O_CLOEXEC) for p in chain])
        try:
            entries = await qemu_img.extent_map(top)
            pieces: list[Piece] = []
            for e in entries:
                start, length = int(e["start"]), int(e["length"])
                if not e.get("present", True) or e.get("zero", False) or not e.get("data"):
                    pieces.append(Piece(start, length, -1, 0))
                elif "offset" in e and int(e.get("depth", 0)) < len(fds):
                    pieces.append(Piece(start, length, fds[int(e["depth"])], int(e["offset"])))
                else:
                    return await self._converted_reader(top, fds)
            return FileReader(size, pieces, fds)
        except BaseException:
            await FileReader(0, [], fds).close()
            raise

    async def _converted_reader(self, top: Path, fds: list[int]) -> DiskReader:
        """For images with clusters that cannot be read in place (compressed ones):
        a raw copy made by qemu-img, deleted as soon as it is open."""
        await FileReader(0, [], fds).close()
        tmp = self.root / f"{TMP_PREFIX}{uuidlib.uuid4()}.raw"
        try:
            await qemu_img.convert(top, "qcow2", tmp, "raw")
            return await _io(raw_file_reader, str(tmp))
        finally:
            await _io(lambda: tmp.unlink(missing_ok=True))

    async def open_writer(self, location: str) -> DiskWriter:
        info = await self.vdi_stat(location)
        size = info.virtual_size
        tmp = self.root / f"{TMP_PREFIX}{uuidlib.uuid4()}{SUFFIX}"
        try:
            await qemu_img.create(tmp, size, preallocate_metadata=True)
            entries = await qemu_img.extent_map(tmp)
            segments = [
                (int(e["start"]), int(e["length"]), int(e["offset"]))
                for e in entries
                if "offset" in e
            ]
            if sum(s[1] for s in segments) != size:
                raise BadImage("a new image did not map completely")
            fd = await _io(os.open, tmp, os.O_RDWR | os.O_CLOEXEC)
        except BaseException:
            await _io(lambda: tmp.unlink(missing_ok=True))
            raise

        async def finish() -> VdiInfo:
            top = self._top(location)

            def swap() -> None:
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if not top.exists():
                    tmp.unlink(missing_ok=True)
                    raise VdiMissing(location)
                os.replace(tmp, top)
                _fsync_dir(self.root)
                self._collect_garbage()

            async with self._lock:
                await _io(swap)
            return await self.vdi_stat(location)

        async def discard() -> None:
            def drop() -> None:
                with contextlib.suppress(OSError):
                    os.close(fd)
                tmp.unlink(missing_ok=True)

            await _io(drop)

        return SegmentWriter(size, fd, segments, finish, discard)
