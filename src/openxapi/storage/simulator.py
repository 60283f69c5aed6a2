"""A simulated SR: disks with sizes and no disk I/O, for tests, demos and scale runs.

Every operation is a few dictionary updates, so thousands of disks cost nothing. Data
written through a writer is kept in memory as 64 KiB blocks (all-zero blocks are not
stored) in layers shared the way a qcow2 chain shares its bases: clone and snapshot
freeze the current layer and give both disks an empty layer on top, so written data
behaves exactly as on a real SR and the one contract test-suite runs against both. The
memory kept for data is capped (:data:`MAX_STORED`); the simulator's state lives only
in the process — on restart it recreates the disks it is told about, all zero.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from openxapi.storage.driver import (
    READ_WRITE_FEATURES,
    AttachInfo,
    Buffer,
    DiskReader,
    DiskWriter,
    DriverContext,
    Extent,
    LiveSnapshot,
    SRDriver,
    SrStat,
    VdiInfo,
    round_size,
)
from openxapi.storage.errors import InvalidLocation, InvalidSize, SrFull, VdiMissing
from openxapi.storage.paths import is_plain_name

BLOCK = 1 << 16
ZERO_BLOCK = bytes(BLOCK)
DEFAULT_SIZE = 64 << 40
#: Bytes of written data the simulator keeps in memory, per SR, at most.
MAX_STORED = 1 << 30


@dataclass(eq=False, slots=True)
class _Layer:
    blocks: dict[int, bytes] = field(default_factory=dict)

    @property
    def stored(self) -> int:
        return len(self.blocks) * BLOCK


@dataclass(slots=True)
class _Disk:
    size: int
    layers: list[_Layer]
    read_only: bool = False


class _Reader(DiskReader):
    blocking = False

    def __init__(self, size: int, layers: list[_Layer]) -> None:
        self.size = size
        self._layers = [_Layer(dict(layers[0].blocks)), *layers[1:]]

    def _block(self, index: int) -> bytes:
        for layer in self._layers:
            data = layer.blocks.get(index)
            if data is not None:
                return data
        return ZERO_BLOCK

    def extents(self) -> list[Extent]:
        present = sorted({i for layer in self._layers for i in layer.blocks})
        out: list[Extent] = []
        pos = 0
        for i in present:
            start = i * BLOCK
            if start >= self.size:
                break
            end = min(start + BLOCK, self.size)
            if start > pos:
                out.append(Extent(pos, start - pos, False))
            if out and out[-1].data and out[-1].start + out[-1].length == start:
                last = out[-1]
                out[-1] = Extent(last.start, last.length + end - start, True)
            else:
                out.append(Extent(start, end - start, True))
            pos = end
        if pos < self.size:
            out.append(Extent(pos, self.size - pos, False))
        return out

    def read(self, offset: int, length: int) -> bytes:
        parts = []
        end = offset + length
        while offset < end:
            index, within = divmod(offset, BLOCK)
            n = min(BLOCK - within, end - offset)
            parts.append(self._block(index)[within : within + n])
            offset += n
        return b"".join(parts)

    async def close(self) -> None:
        self._layers = [_Layer()]


class _Writer(DiskWriter):
    blocking = False

    def __init__(self, driver: SimulatorDriver, location: str, size: int) -> None:
        self.size = size
        self._driver = driver
        self._location = location
        self._layer = _Layer()
        self._done = False

    def write(self, offset: int, data: Buffer) -> None:
        if offset < 0 or offset + len(data) > self.size:
            raise ValueError("write beyond the end of the disk")
        blocks = self._layer.blocks
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            index, within = divmod(offset + pos, BLOCK)
            n = min(BLOCK - within, len(view) - pos)
            if within == 0 and n == BLOCK:
                block = bytes(view[pos : pos + n])
            else:
                current = bytearray(blocks.get(index, ZERO_BLOCK))
                current[within : within + n] = view[pos : pos + n]
                block = bytes(current)
            if block == ZERO_BLOCK:
                blocks.pop(index, None)
            else:
                if index not in blocks:
                    self._driver._reserve(BLOCK)
                blocks[index] = block
            pos += n

    def flush(self) -> None:
        return None

    async def commit(self) -> VdiInfo:
        if self._done:
            raise RuntimeError("writer already finished")
        self._done = True
        disk = self._driver._disk(self._location)
        self._driver._pending -= self._layer.stored
        disk.layers = [self._layer]
        self._driver._recount()
        return self._driver._info(self._location)

    async def abort(self) -> None:
        if not self._done:
            self._done = True
            self._driver._pending -= self._layer.stored


class SimulatorDriver(SRDriver):
    """SR type ``dummy`` (the reference's name for its test SR): disks in memory."""

    sr_type: ClassVar[str] = "dummy"
    sm_name: ClassVar[str] = "dummy"
    sm_description: ClassVar[str] = "Simulated storage: disks kept in memory, for tests"
    sm_configuration: ClassVar[Mapping[str, str]] = {"size": "capacity in bytes (optional)"}
    features: ClassVar[Mapping[str, int]] = {**READ_WRITE_FEATURES, "SR_METADATA": 1}
    image_formats: ClassVar[tuple[str, ...]] = ("raw",)

    def __init__(self, ctx: DriverContext, sr_uuid: str, device_config: Mapping[str, str]):
        super().__init__(ctx, sr_uuid, device_config)
        text = self.device_config.get("size", "")
        self.capacity = int(text) if text.isdigit() and int(text) > 0 else DEFAULT_SIZE
        self._disks: dict[str, _Disk] = {}
        self._pending = 0
        self._used = 0

    def pbd_device_config(self) -> dict[str, str]:
        return {**self.device_config, "size": str(self.capacity)}

    # ---- bookkeeping ------------------------------------------------------------------
    def _disk(self, location: str) -> _Disk:
        if not is_plain_name(location):
            raise InvalidLocation(location)
        disk = self._disks.get(location)
        if disk is None:
            raise VdiMissing(location)
        return disk

    def _stored(self) -> int:
        layers = {id(layer): layer for d in self._disks.values() for layer in d.layers}
        return sum(layer.stored for layer in layers.values())

    def _reserve(self, n: int) -> None:
        limit = min(MAX_STORED, self.capacity)
        if self._used + self._pending + n > limit:
            raise SrFull(n, max(limit - self._used - self._pending, 0))
        self._pending += n

    def _recount(self) -> None:
        self._used = self._stored()

    def _allocated(self, excluding: str = "") -> int:
        return sum(d.size for loc, d in self._disks.items() if loc != excluding)

    def _info(self, location: str) -> VdiInfo:
        disk = self._disk(location)
        return VdiInfo(
            location=location,
            virtual_size=disk.size,
            physical_utilisation=disk.layers[0].stored,
            read_only=disk.read_only,
            uuid=location,
        )

    # ---- the SR -----------------------------------------------------------------------
    async def create(self, physical_size: int) -> None:
        if physical_size > 0:
            self.capacity = physical_size

    async def delete(self) -> None:
        self._disks.clear()
        self._used = 0

    async def attach(self, known: Sequence[VdiInfo] = ()) -> None:
        for info in known:
            if info.location not in self._disks and is_plain_name(info.location):
                self._disks[info.location] = _Disk(
                    round_size(info.virtual_size), [_Layer()], info.read_only
                )

    async def stat(self) -> SrStat:
        return SrStat(self.capacity, self._used)

    async def scan(self) -> list[VdiInfo]:
        return [self._info(loc) for loc in sorted(self._disks)]

    # ---- disks ------------------------------------------------------------------------
    async def vdi_create(self, size: int, name_label: str = "") -> VdiInfo:
        size = round_size(max(size, 0))
        available = self.capacity - self._allocated()
        if size > available:
            raise SrFull(size, max(available, 0))
        location = str(uuidlib.uuid4())
        self._disks[location] = _Disk(size, [_Layer()])
        return self._info(location)

    async def vdi_delete(self, location: str) -> None:
        if not is_plain_name(location):
            raise InvalidLocation(location)
        if self._disks.pop(location, None) is not None:
            self._recount()

    async def vdi_stat(self, location: str) -> VdiInfo:
        return self._info(location)

    async def vdi_clone(self, location: str, live: LiveSnapshot | None = None) -> VdiInfo:
        return self._fork(location)

    async def vdi_snapshot(self, location: str, live: LiveSnapshot | None = None) -> VdiInfo:
        return self._fork(location)

    def _fork(self, location: str) -> VdiInfo:
        disk = self._disk(location)
        base = disk.layers if disk.layers[0].blocks else disk.layers[1:]
        disk.layers = [_Layer(), *base]
        new_location = str(uuidlib.uuid4())
        self._disks[new_location] = _Disk(disk.size, [_Layer(), *base])
        return self._info(new_location)

    async def vdi_resize(self, location: str, size: int) -> VdiInfo:
        disk = self._disk(location)
        size = round_size(size)
        if size < disk.size:
            raise InvalidSize("shrinking not allowed")
        available = self.capacity - self._allocated(excluding=location)
        if size > available:
            raise SrFull(size, max(available, 0))
        disk.size = size
        return self._info(location)

    async def vdi_attach(self, location: str, writable: bool) -> AttachInfo:
        disk = self._disk(location)
        return AttachInfo(None, "null", disk.read_only or not writable)

    async def open_reader(self, location: str) -> DiskReader:
        disk = self._disk(location)
        return _Reader(disk.size, disk.layers)

    async def open_writer(self, location: str) -> DiskWriter:
        disk = self._disk(location)
        return _Writer(self, location, disk.size)
