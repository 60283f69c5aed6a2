"""``qemu-img`` run as asyncio subprocesses, and a reader of qcow2 headers.

Every call runs the tool without a shell and never blocks the event loop. Header facts
(virtual size, backing file) are read directly from the file: scanning an SR of
thousands of disks then costs no process starts.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openxapi.storage.errors import BackendFailure

QCOW2_MAGIC = b"QFI\xfb"
QEMU_IMG = "qemu-img"


def available() -> bool:
    """True when ``qemu-img`` is on the PATH."""
    return shutil.which(QEMU_IMG) is not None


async def run(*args: str, check: bool = True) -> tuple[int, str, str]:
    """Run ``qemu-img args…``; (exit status, stdout, stderr). BackendFailure on error."""
    try:
        proc = await asyncio.create_subprocess_exec(
            QEMU_IMG,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise BackendFailure("127", "", "qemu-img is not installed") from None
    out, err = await proc.communicate()
    status = proc.returncode if proc.returncode is not None else -1
    text_out, text_err = out.decode(errors="replace"), err.decode(errors="replace")
    if check and status != 0:
        raise BackendFailure(str(status), text_out, text_err)
    return status, text_out, text_err


async def create(
    path: Path,
    size: int,
    *,
    backing: str | None = None,
    preallocate_metadata: bool = False,
) -> None:
    """A new qcow2 image; with ``backing`` (a name relative to ``path``'s directory) an
    overlay whose unwritten clusters read through to it. The backing file is not opened
    (``-u``): callers pass the size."""
    args = ["create", "-q", "-f", "qcow2"]
    opts = ["cluster_size=65536"]
    if preallocate_metadata:
        opts.append("preallocation=metadata")
    args += ["-o", ",".join(opts)]
    if backing is not None:
        args += ["-u", "-b", backing, "-F", "qcow2"]
    await run(*args, str(path), str(size))


async def resize(path: Path, size: int) -> None:
    await run("resize", "-q", "-f", "qcow2", str(path), str(size))


async def info(path: Path, fmt: str | None = None) -> dict[str, Any]:
    """``qemu-img info --output=json`` of one image (no backing chain)."""
    args = ["info", "--output=json"]
    if fmt:
        args += ["-f", fmt]
    _, out, _ = await run(*args, str(path))
    data = json.loads(out)
    assert isinstance(data, dict)
    return data


async def extent_map(path: Path) -> list[dict[str, Any]]:
    """``qemu-img map --output=json`` of a qcow2 image and its backing chain."""
    _, out, _ = await run("map", "--output=json", "-f", "qcow2", str(path))
    data = json.loads(out)
    assert isinstance(data, list)
    return data


async def convert(
    src: Path, src_fmt: str, dst: Path, dst_fmt: str, options: str = "", *, sparse: bool = True
) -> None:
    """Convert an image; raw output is sparse (zero runs become holes) unless told not."""
    args = ["convert", "-q", "-f", src_fmt, "-O", dst_fmt]
    if options:
        args += ["-o", options]
    if sparse and dst_fmt == "raw":
        args += ["-S", "64k"]
    await run(*args, str(src), str(dst))


@dataclass(frozen=True, slots=True)
class Qcow2Header:
    """The facts of a qcow2 header that storage drivers use."""

    version: int
    virtual_size: int
    cluster_bits: int
    backing_file: str | None
    has_external_data: bool


def read_header(path: Path) -> Qcow2Header | None:
    """The header of a qcow2 file, or None if the file is not qcow2 (blocking, tiny read)."""
    with open(path, "rb") as f:
        head = f.read(112)
        if len(head) < 72 or head[:4] != QCOW2_MAGIC:
            return None
        version, backing_offset, backing_size, cluster_bits, size = struct.unpack(
            ">IQIIQ", head[4:32]
        )
        incompatible = 0
        if version >= 3 and len(head) >= 80:
            (incompatible,) = struct.unpack(">Q", head[72:80])
        backing: str | None = None
        if backing_offset and backing_size:
            if backing_size > 1023:
                return None
            f.seek(backing_offset)
            backing = f.read(backing_size).decode("utf-8", errors="replace")
    return Qcow2Header(version, size, cluster_bits, backing, bool(incompatible & 0x4))
