"""Give freed heap memory back to the system.

A burst of record rewrites (re-adopting thousands of domains at start-up, a big import)
leaves glibc's heap holding hundreds of MB it no longer uses; ``malloc_trim`` returns it.
Elsewhere (another C library) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger("openxapi.memory")


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_TRIM = _load_trim()


def release_free_memory() -> bool:
    """Return unused heap pages to the system; True if the C library supports it."""
    if _TRIM is None:
        return False
    try:
        _TRIM(0)
    except Exception:  # never let housekeeping fail over this
        log.debug("malloc_trim failed", exc_info=True)
        return False
    return True
