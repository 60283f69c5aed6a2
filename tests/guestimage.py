"""The tiny test guest (kernel + initramfs with the real qemu-ga), built once and cached."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def guest_image_dir() -> Path:
    """Build (or find cached) the image with ``scripts/guest-image``; its directory."""
    out = subprocess.run(
        [str(ROOT / "scripts" / "guest-image")],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    path = Path(out.stdout.strip().splitlines()[-1])
    assert (path / "vmlinuz").is_file() and (path / "initrd.gz").is_file()
    return path
