"""Ethernet MAC addresses as the reference derives and checks them.

A VIF created with an empty MAC gets one derived from its VM's ``mac_seed`` and its
device number, so the same VM and device always get the same address: clones and
re-imports that keep the seed keep their guests' network identity.
"""

from __future__ import annotations

import hashlib
import re

_MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}$")


def is_valid_mac(mac: str) -> bool:
    """Six colon-separated groups of exactly two hex digits, either case."""
    return _MAC_RE.fullmatch(mac) is not None


def mac_from_bytes(octets: bytes) -> str:
    """Lower-case colon form of six octets, made locally administered and unicast."""
    if len(octets) != 6:
        raise ValueError("a MAC address has six octets")
    first = (octets[0] | 0x02) & ~0x01
    return ":".join(f"{b:02x}" for b in (first, *octets[1:]))


def generate_mac(device: int, seed: str) -> str:
    """The MAC the reference gives VIF ``device`` of a VM whose mac_seed is ``seed``.

    MD5 is applied ``2 * device + 1`` times to the seed; the first four octets of that
    digest and octets 1 and 2 of one further digest make the address.
    """
    if device < 0:
        raise ValueError("device numbers are unsigned")
    h = hashlib.md5(seed.encode(), usedforsecurity=False).digest()
    for _ in range(2 * device):
        h = hashlib.md5(h, usedforsecurity=False).digest()
    h2 = hashlib.md5(h, usedforsecurity=False).digest()
    return mac_from_bytes(h[:4] + h2[1:3])
