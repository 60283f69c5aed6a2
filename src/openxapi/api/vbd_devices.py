"""VBD device names as the reference reads them: validity, clashes and "autodetect".

A ``userdevice`` is ``"autodetect"``, a decimal disk number, or a Linux device name
(``xvda``, ``hdb``, ``sdc2``, ``fda``). Two devices clash when some reading of one equals
some reading of the other: ``"1"`` is disk 1 on the Xen bus or (below 4) on the IDE bus,
so it clashes with ``xvdb`` and ``hdb``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

AUTODETECT = "autodetect"
MAX_DISK = 254
MAX_DISK_CONTROL_DOMAIN = 255
IDE_DISKS = 4

_LINUX = re.compile(r"^(xvd|hd|sd|fd)([a-z])(\d*)$")
_BUS = {"xvd": "xen", "hd": "ide", "sd": "scsi", "fd": "floppy"}
_LAST_LETTER = {"xvd": "p", "hd": "p", "sd": "p", "fd": "b"}

Device = tuple[str, int, int]  # (bus, disk number, partition)


def readings(name: str) -> set[Device]:
    """Every (bus, disk, partition) ``name`` may denote; empty if it denotes none."""
    if name.isdigit():
        n = int(name)
        out = {("xen", n, 0)}
        if n < IDE_DISKS:
            out.add(("ide", n, 0))
        return out
    m = _LINUX.match(name)
    if m is None:
        return set()
    prefix, letter, part = m.groups()
    return {(_BUS[prefix], ord(letter) - ord("a"), int(part) if part else 0)}


def is_valid(name: str, vbd_type: str) -> bool:
    """The reference's syntax check of a userdevice."""
    if name == AUTODETECT:
        return True
    m = _LINUX.match(name)
    if m is not None:
        prefix, letter, _ = m.groups()
        return letter <= _LAST_LETTER[prefix]
    return vbd_type != "Floppy" and name.isdigit()


def used(names: Iterable[str]) -> set[Device]:
    """The devices taken by existing VBDs (their ``device`` and ``userdevice`` fields)."""
    out: set[Device] = set()
    for n in names:
        out |= readings(n)
    return out


def clashes(name: str, taken: set[Device]) -> bool:
    return bool(readings(name) & taken)


def autodetect(taken: set[Device], vbd_type: str, control_domain: bool = False) -> str | None:
    """The lowest free device: a disk number as a decimal string (a floppy: its Linux
    name), or None when every allowed one is taken."""
    if vbd_type == "Floppy":
        for name in ("fda", "fdb"):
            if not clashes(name, taken):
                return name
        return None
    last = MAX_DISK_CONTROL_DOMAIN if control_domain else MAX_DISK
    for n in range(last + 1):
        if not clashes(str(n), taken):
            return str(n)
    return None


def linux_name(userdevice: str, hvm: bool) -> str:
    """The device name a guest sees for a userdevice (``VBD.device`` once plugged)."""
    if not userdevice.isdigit():
        return userdevice
    n = int(userdevice)
    prefix = "hd" if hvm and n < IDE_DISKS else "xvd"
    return prefix + _letters(n)


def _letters(n: int) -> str:
    """0 → a, 25 → z, 26 → aa: the kernel's naming of disks beyond the 26th."""
    out = ""
    n += 1
    while n:
        n, r = divmod(n - 1, 26)
        out = chr(ord("a") + r) + out
    return out
