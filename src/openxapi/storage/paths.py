"""Names and paths from clients, checked so that they never reach outside an SR.

A location is a plain file name of the SR's own directory: no separators, no leading dot
(dot-names are the driver's hidden files), nothing a filesystem would resolve elsewhere.
The resolved path must still lie inside the SR's directory, so a symbolic link planted in
it cannot lead out either.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from openxapi.storage.errors import InvalidLocation

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+~@=,-]{0,254}$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def is_plain_name(name: str) -> bool:
    """True for a name that can only denote a file directly inside a directory."""
    return bool(_NAME.match(name)) and name not in (".", "..")


def inside(root: Path, name: str) -> Path:
    """``root/name`` after checking ``name`` and where it resolves; InvalidLocation if not
    a plain name or if it resolves outside ``root`` (through a link, say)."""
    if not is_plain_name(name):
        raise InvalidLocation(name)
    path = root / name
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if os.path.dirname(real) != real_root:
        raise InvalidLocation(name)
    return path


def within(roots: tuple[Path, ...], candidate: str) -> Path | None:
    """The resolved ``candidate`` directory if it lies in (or is) one of ``roots``."""
    if not candidate or "\x00" in candidate:
        return None
    real = Path(os.path.realpath(candidate))
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if real == real_root or real_root in real.parents:
            return real
    return None
