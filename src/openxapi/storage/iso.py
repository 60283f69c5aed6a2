"""An ISO library SR: a directory of ``.iso`` images, read-only, found by scanning.

The directory is one the administrator allows (``--iso-dir``, or ``<data-dir>/iso``), or
a directory of the server's own under the SR root. Each ``*.iso`` file directly in it is
a read-only disk whose location is its file name; the server never writes there.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from openxapi.storage.driver import (
    AttachInfo,
    DiskReader,
    DriverContext,
    ProbeResult,
    SRDriver,
    SrStat,
    VdiInfo,
)
from openxapi.storage.errors import InvalidLocation, VdiMissing
from openxapi.storage.files import raw_file_reader
from openxapi.storage.paths import UUID_RE, inside, is_plain_name, within

ISO_SUFFIX = ".iso"


def _stat(path: Path) -> SrStat:
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    return SrStat(total, total - st.f_bavail * st.f_frsize)


class IsoDriver(SRDriver):
    """SR type ``iso``: ISO images in one directory."""

    sr_type: ClassVar[str] = "iso"
    sm_name: ClassVar[str] = "ISO"
    sm_description: ClassVar[str] = "Handles ISO images stored as files in a local directory"
    sm_configuration: ClassVar[Mapping[str, str]] = {
        "location": "directory holding the ISO images (one the server allows)"
    }
    features: ClassVar[Mapping[str, int]] = {
        "SR_CREATE": 1,
        "SR_ATTACH": 1,
        "SR_DETACH": 1,
        "SR_SCAN": 1,
        "SR_PROBE": 1,
        "SR_UPDATE": 1,
        "VDI_ATTACH": 1,
        "VDI_DETACH": 1,
        "VDI_ACTIVATE": 1,
        "VDI_DEACTIVATE": 1,
        "VDI_INTRODUCE": 1,
        "VDI_UPDATE": 1,
    }
    image_formats: ClassVar[tuple[str, ...]] = ("raw",)

    def __init__(self, ctx: DriverContext, sr_uuid: str, device_config: Mapping[str, str]):
        super().__init__(ctx, sr_uuid, device_config)
        if not UUID_RE.match(sr_uuid):
            raise InvalidLocation(sr_uuid)
        requested = self.device_config.get("location", "")
        if requested:
            allowed = (*ctx.iso_roots, ctx.sr_root / sr_uuid)
            found = within(allowed, requested)
            if found is None:
                raise InvalidLocation(requested)
            self.root = found
        else:
            self.root = ctx.sr_root / sr_uuid

    def pbd_device_config(self) -> dict[str, str]:
        return {**self.device_config, "location": str(self.root)}

    def _file(self, location: str) -> Path:
        if not location.endswith(ISO_SUFFIX) or not is_plain_name(location):
            raise InvalidLocation(location)
        return inside(self.root, location)

    def _info(self, location: str) -> VdiInfo:
        path = self._file(location)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise VdiMissing(location) from None
        if not os.path.isfile(path):
            raise VdiMissing(location)
        return VdiInfo(
            location=location,
            virtual_size=st.st_size,
            physical_utilisation=st.st_size,
            read_only=True,
            name_label=location,
        )

    @classmethod
    async def probe(cls, ctx: DriverContext, device_config: Mapping[str, str]) -> list[ProbeResult]:
        def find() -> list[ProbeResult]:
            wanted = device_config.get("location", "")
            roots = ctx.iso_roots
            if wanted:
                found = within(roots, wanted)
                roots = (found,) if found is not None else ()
            return [
                ProbeResult({"location": str(r)}, True, "", _stat(r)) for r in roots if r.is_dir()
            ]

        return await asyncio.to_thread(find)

    async def create(self, physical_size: int) -> None:
        await asyncio.to_thread(self.root.mkdir, 0o755, True, True)

    async def attach(self, known: Sequence[VdiInfo] = ()) -> None:
        if not await asyncio.to_thread(self.root.is_dir):
            await asyncio.to_thread(self.root.mkdir, 0o755, True, True)

    async def stat(self) -> SrStat:
        return await asyncio.to_thread(_stat, self.root)

    async def scan(self) -> list[VdiInfo]:
        def listing() -> list[VdiInfo]:
            out = []
            for name in sorted(os.listdir(self.root)):
                if name.endswith(ISO_SUFFIX) and is_plain_name(name):
                    try:
                        out.append(self._info(name))
                    except (InvalidLocation, VdiMissing):
                        continue
            return out

        return await asyncio.to_thread(listing)

    async def vdi_stat(self, location: str) -> VdiInfo:
        return await asyncio.to_thread(self._info, location)

    async def vdi_attach(self, location: str, writable: bool) -> AttachInfo:
        await self.vdi_stat(location)
        return AttachInfo(str(self._file(location)), "raw", True)

    async def open_reader(self, location: str) -> DiskReader:
        info = await self.vdi_stat(location)
        path = str(self._file(location))
        return await asyncio.to_thread(raw_file_reader, path, info.virtual_size)
