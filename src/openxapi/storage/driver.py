"""The storage-repository driver interface: what every SR backend promises.

A driver manages the disks of one SR. It knows nothing of the object store or the API:
it takes plain values (locations, sizes) and returns plain results (:class:`VdiInfo`,
:class:`SrStat`); the API layer records them. Each method's docstring states its
contract — the end state, whether repeating it is harmless, and what a failure leaves
behind — and one contract test-suite runs against every implementation.

Capabilities are reported as the reference's SM feature names (``VDI_CLONE``,
``SR_PROBE``…) in :attr:`SRDriver.features`, so callers branch on what a driver supports
and the API layer derives SR/VDI allowed operations and SM records from the same map.

Locations are driver-chosen names of disks inside the SR. Drivers refuse any location
that is not a plain name of theirs (:class:`~openxapi.storage.errors.InvalidLocation`):
nothing a client passes can reach outside the SR.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

#: Every SM feature name the reference knows, in its order.
ALL_FEATURES: tuple[str, ...] = (
    "SR_CREATE",
    "SR_DELETE",
    "SR_ATTACH",
    "SR_DETACH",
    "SR_SCAN",
    "SR_PROBE",
    "SR_UPDATE",
    "SR_SUPPORTS_LOCAL_CACHING",
    "SR_METADATA",
    "SR_TRIM",
    "SR_MULTIPATH",
    "SR_CACHING",
    "SR_STATS",
    "VDI_CREATE",
    "VDI_DELETE",
    "VDI_ATTACH",
    "VDI_DETACH",
    "VDI_MIRROR",
    "VDI_MIRROR_IN",
    "VDI_RESIZE",
    "VDI_RESIZE_ONLINE",
    "VDI_CLONE",
    "VDI_SNAPSHOT",
    "VDI_ACTIVATE",
    "VDI_ACTIVATE_READONLY",
    "VDI_DEACTIVATE",
    "VDI_UPDATE",
    "VDI_INTRODUCE",
    "VDI_GENERATE_CONFIG",
    "VDI_ATTACH_OFFLINE",
    "VDI_RESET_ON_BOOT",
    "VDI_CONFIG_CBT",
    "VDI_COMPOSE",
    "LARGE_VDI",
    "THIN_PROVISIONING",
    "VDI_READ_CACHING",
    "VDI_REVERT",
)

SECTOR = 512

#: What disk writers accept: bytes, or a view of a buffer the caller reuses afterwards.
Buffer = bytes | bytearray | memoryview


def round_size(size: int) -> int:
    """Disk sizes are whole sectors; drivers round requests up to the next one."""
    return -(-size // SECTOR) * SECTOR


@dataclass(frozen=True, slots=True)
class VdiInfo:
    """One disk as its driver sees it.

    ``uuid`` is the identity the driver proposes for a disk it found (``""``: none, the
    caller picks one); ``virtual_size`` is what the guest sees, ``physical_utilisation``
    the bytes the disk itself occupies (shared bases not included).
    """

    location: str
    virtual_size: int
    physical_utilisation: int
    read_only: bool = False
    uuid: str = ""
    name_label: str = ""
    sm_config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SrStat:
    """Capacity of an SR in bytes: its total size and what is used of it."""

    physical_size: int
    physical_utilisation: int

    @property
    def free(self) -> int:
        return max(self.physical_size - self.physical_utilisation, 0)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One SR (or partial configuration) that SR.probe found for a device_config."""

    configuration: Mapping[str, str]
    complete: bool
    sr_uuid: str = ""
    stat: SrStat | None = None
    extra_info: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Extent:
    """A run of a disk's guest-visible bytes; ``data`` False means it reads as zeros."""

    start: int
    length: int
    data: bool


@dataclass(frozen=True, slots=True)
class AttachInfo:
    """How a hypervisor opens a disk: a path and its format (``None`` path: no file,
    the disk is simulated), and whether it must be opened read-only."""

    path: str | None
    format: str
    read_only: bool


class LiveSnapshot(Protocol):
    """Supplied by the hypervisor when the disk is in use by a running VM.

    ``pivot(new_top)``: from now on the VM writes to the image ``new_top``, whose backing
    file is the image the VM writes to until now; it returns once the switch is made.
    """

    async def pivot(self, new_top: str) -> None: ...


@dataclass(frozen=True, slots=True)
class DriverContext:
    """Server-wide facts drivers need: where SR directories live, which ISO
    directories the administrator allows, and a directory for temporary files."""

    sr_root: Path
    iso_roots: tuple[Path, ...]
    scratch: Path


class DiskReader(abc.ABC):
    """Read access to a disk's guest-visible contents as they were when opened.

    ``extents()`` covers ``[0, size)`` in order; ``read(offset, length)`` returns bytes of
    a data extent. When ``blocking`` is True, ``read`` does file I/O and callers run it
    in an executor. ``close()`` releases whatever the reader holds; it is idempotent.
    """

    size: int
    blocking: bool = True

    @abc.abstractmethod
    def extents(self) -> list[Extent]: ...

    @abc.abstractmethod
    def read(self, offset: int, length: int) -> bytes: ...

    @abc.abstractmethod
    async def close(self) -> None: ...


class DiskWriter(abc.ABC):
    """Writes a disk's new contents, invisible until :meth:`commit`.

    The writer starts from an all-zero disk of ``size`` bytes, so callers may skip
    writing zeros. ``write`` does not keep ``data``: the caller may reuse its buffer.
    ``write`` and ``flush`` block when ``blocking`` is True (run them in an executor).
    ``commit()`` makes the new contents durable and atomically replaces the disk's
    contents with them; ``abort()`` discards everything written and leaves the disk
    exactly as it was. After either, the writer is finished; ``abort`` after ``commit``
    does nothing.
    """

    size: int
    blocking: bool = True

    @abc.abstractmethod
    def write(self, offset: int, data: Buffer) -> None: ...

    @abc.abstractmethod
    def flush(self) -> None: ...

    @abc.abstractmethod
    async def commit(self) -> VdiInfo: ...

    @abc.abstractmethod
    async def abort(self) -> None: ...


class SRDriver(abc.ABC):
    """The disks of one SR. One instance per attached SR; safe under concurrent calls.

    Construction does no I/O. Every method that can fail raises a
    :class:`~openxapi.storage.errors.StorageError`; anything else is a bug.
    """

    #: The SR type clients name in SR.create (``SR.type``).
    sr_type: ClassVar[str]
    #: SM record facts: name, description, vendor, copyright, version, configuration.
    sm_name: ClassVar[str]
    sm_description: ClassVar[str]
    sm_configuration: ClassVar[Mapping[str, str]] = {}
    #: Capabilities as the reference's SM feature names, each with its version (≥ 1).
    features: ClassVar[Mapping[str, int]]
    #: Image formats the SR stores disks in (``SM.supported_image_formats``).
    image_formats: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ctx: DriverContext, sr_uuid: str, device_config: Mapping[str, str]):
        self.ctx = ctx
        self.sr_uuid = sr_uuid
        self.device_config = dict(device_config)

    def has(self, feature: str) -> bool:
        return feature in self.features

    @property
    def scratch_dir(self) -> Path:
        """Where transfers may put temporary files for this SR (same filesystem if any)."""
        return self.ctx.scratch

    def pbd_device_config(self) -> dict[str, str]:
        """The device_config the SR's PBD should record once created."""
        return dict(self.device_config)

    # ---- the SR -----------------------------------------------------------------------
    @classmethod
    async def probe(cls, ctx: DriverContext, device_config: Mapping[str, str]) -> list[ProbeResult]:
        """SRs of this type that ``device_config`` reaches. Reads only; repeatable."""
        return []

    async def create(self, physical_size: int) -> None:
        """Make new, empty storage for this SR (SR.create). Afterwards the SR can be
        attached. On failure nothing is left behind. Requires ``SR_CREATE``."""
        raise NotImplementedError

    async def delete(self) -> None:
        """Remove the SR's storage and every disk in it (SR.destroy). Idempotent: deleting
        storage that is already gone succeeds. Requires ``SR_DELETE``."""
        raise NotImplementedError

    @abc.abstractmethod
    async def attach(self, known: Sequence[VdiInfo] = ()) -> None:
        """Make the SR usable (PBD.plug); idempotent. ``known`` lists the disks the caller
        has on record: drivers that keep no state of their own (the simulator) recreate
        them, others ignore it. Leftovers of interrupted operations are cleaned up here."""

    async def detach(self) -> None:
        """Stop using the SR (PBD.unplug); idempotent; disks are kept."""
        return None

    @abc.abstractmethod
    async def stat(self) -> SrStat:
        """Current capacity. Reads only."""

    @abc.abstractmethod
    async def scan(self) -> list[VdiInfo]:
        """Every visible disk of the SR, as stored now (SR.scan). Hidden internal images
        (clone bases, temporary files) are never listed. Reads only."""

    # ---- disks --------------------------------------------------------------------------
    async def vdi_create(self, size: int, name_label: str = "") -> VdiInfo:
        """A new all-zero disk of at least ``size`` bytes (rounded up to whole sectors).

        Fails with ``SrFull`` when the SR's size minus the virtual sizes of its disks is
        less than ``size``; nothing is created then. Requires ``VDI_CREATE``.
        """
        raise NotImplementedError

    async def vdi_delete(self, location: str) -> None:
        """Remove a disk. Internal images no remaining disk depends on are removed too
        before it returns. Idempotent: a missing disk is not an error. Disks cloned from
        or snapshotted from this one keep their contents. Requires ``VDI_DELETE``."""
        raise NotImplementedError

    @abc.abstractmethod
    async def vdi_stat(self, location: str) -> VdiInfo:
        """The disk's current facts, or ``VdiMissing``. Reads only."""

    async def vdi_introduce(self, location: str) -> VdiInfo:
        """Check that a disk exists at ``location`` (created outside the server) and
        return its facts, or ``VdiMissing``/``InvalidLocation``. Requires
        ``VDI_INTRODUCE``; changes nothing."""
        return await self.vdi_stat(location)

    async def vdi_clone(self, location: str, live: LiveSnapshot | None = None) -> VdiInfo:
        """A new disk whose contents equal ``location``'s now, and from then on never
        share a write with it: a write to either is never visible in the other. Cheap —
        no data is copied. With ``live`` (the disk is in use by a running VM) the VM is
        switched through ``live.pivot`` before the new disk exists. On failure the source
        is unchanged and no new disk exists. Requires ``VDI_CLONE``."""
        raise NotImplementedError

    async def vdi_snapshot(self, location: str, live: LiveSnapshot | None = None) -> VdiInfo:
        """As :meth:`vdi_clone`, for a snapshot; requires ``VDI_SNAPSHOT``."""
        raise NotImplementedError

    async def vdi_resize(self, location: str, size: int) -> VdiInfo:
        """Grow a disk to at least ``size`` bytes; new space reads as zeros. Same size:
        no change. Shrinking fails with ``InvalidSize``; no room: ``SrFull``. Requires
        ``VDI_RESIZE``."""
        raise NotImplementedError

    async def vdi_attach(self, location: str, writable: bool) -> AttachInfo:
        """Where a hypervisor finds the disk (VBD plug, VM start). Idempotent."""
        info = await self.vdi_stat(location)
        return AttachInfo(None, "null", info.read_only or not writable)

    async def vdi_detach(self, location: str) -> None:
        """Undo :meth:`vdi_attach`; idempotent."""
        return None

    @abc.abstractmethod
    async def open_reader(self, location: str) -> DiskReader:
        """A reader of the disk's contents (export, copy). The contents read are those
        at the time of opening. ``VdiMissing`` if there is no such disk."""

    async def open_writer(self, location: str) -> DiskWriter:
        """A writer of new contents for an existing disk (import, copy into). Nothing is
        visible until commit; abort leaves the disk untouched. Not for read-only SRs."""
        raise NotImplementedError


#: The SM features of a driver that creates, clones, snapshots and resizes disks itself.
READ_WRITE_FEATURES: Mapping[str, int] = {
    name: 1
    for name in (
        "SR_CREATE",
        "SR_DELETE",
        "SR_ATTACH",
        "SR_DETACH",
        "SR_SCAN",
        "SR_PROBE",
        "SR_UPDATE",
        "VDI_CREATE",
        "VDI_DELETE",
        "VDI_ATTACH",
        "VDI_DETACH",
        "VDI_ACTIVATE",
        "VDI_DEACTIVATE",
        "VDI_CLONE",
        "VDI_SNAPSHOT",
        "VDI_RESIZE",
        "VDI_INTRODUCE",
        "VDI_UPDATE",
        "THIN_PROVISIONING",
        "LARGE_VDI",
    )
}
