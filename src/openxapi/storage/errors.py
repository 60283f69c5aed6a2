"""Failures a storage driver reports, in storage terms; the API layer names the objects.

Drivers know locations, not refs, so these carry what the driver knows and the API layer
turns them into the reference's error codes with the right SR and VDI references.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every failure a driver raises on purpose."""


class SrFull(StorageError):
    """Not enough capacity: ``requested`` bytes asked for, ``available`` left (SR_FULL)."""

    def __init__(self, requested: int, available: int) -> None:
        super().__init__(f"requested {requested} bytes, {available} available")
        self.requested = requested
        self.available = available


class VdiMissing(StorageError):
    """No disk at this location (VDI_MISSING / VDI_LOCATION_MISSING)."""

    def __init__(self, location: str) -> None:
        super().__init__(f"no disk at location {location!r}")
        self.location = location


class InvalidLocation(StorageError):
    """A location or name that would leave the SR's directory, or is not a valid name."""

    def __init__(self, location: str) -> None:
        super().__init__(f"invalid location {location!r}")
        self.location = location


class NotSupported(StorageError):
    """The driver lacks the capability for this operation (SR_OPERATION_NOT_SUPPORTED)."""

    def __init__(self, operation: str) -> None:
        super().__init__(f"operation {operation} not supported")
        self.operation = operation


class InvalidSize(StorageError):
    """A size the driver cannot honour, e.g. shrinking a disk."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ImageTooLarge(StorageError):
    """Data or an image larger than the target disk (VDI_TOO_SMALL with ``needed``)."""

    def __init__(self, needed: int) -> None:
        super().__init__(f"the target disk must hold {needed} bytes")
        self.needed = needed


class BadImage(StorageError):
    """An uploaded image that cannot be read, or that refers to files outside itself."""


class BackendFailure(StorageError):
    """A tool the driver runs failed (SR_BACKEND_FAILURE [status, stdout, stderr])."""

    def __init__(self, status: str, stdout: str, stderr: str) -> None:
        super().__init__(f"backend failure {status}: {stderr.strip() or stdout.strip()}")
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
