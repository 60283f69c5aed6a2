"""Re-encoding an XML-RPC struct of which few members changed.

A record that changed one field of a hundred is re-encoded by copying the unchanged
members' bytes from its previous encoding: an event about a renamed VM then costs one
member encode, not a hundred. Members are compared by identity, which is exact for the
store's records: an update builds a new record sharing every value it did not set.
"""

from __future__ import annotations

from array import array
from itertools import compress, count
from operator import is_not
from typing import Any, TypeAlias

from openxapi.wire.xmlrpc import encode_member

_OPEN = b"<value><struct>"
_CLOSE = b"</struct></value>"

#: Where each member starts in an encoded struct, then where the last one ends.
Offsets: TypeAlias = "array[int]"


def encode_indexed(record: dict[str, Any]) -> tuple[bytes, Offsets]:
    """The struct's encoding (the same bytes as ``encode_value``) and its member offsets."""
    pieces = [_OPEN]
    pos = len(_OPEN)
    offsets = array("I", [pos])
    for key, value in record.items():
        member = encode_member(key, value)
        pieces.append(member)
        pos += len(member)
        offsets.append(pos)
    pieces.append(_CLOSE)
    return b"".join(pieces), offsets


def reencode(
    old: bytes, offsets: Offsets, old_record: dict[str, Any], record: dict[str, Any]
) -> tuple[bytes, Offsets] | None:
    """``record`` encoded by reusing the members it shares with ``old_record`` (encoded as
    ``old``); None when the two do not have the same keys in the same order."""
    if len(offsets) != len(record) + 1 or list(record) != list(old_record):
        return None
    # The comparison runs in C; only the changed members are visited in Python.
    changed = list(compress(count(), map(is_not, record.values(), old_record.values())))
    if not changed:
        return old, offsets
    view = memoryview(old)
    keys = list(record)
    pieces: list[bytes | memoryview] = []
    new_offsets = array("I", offsets)
    start = 0  # where in ``old`` the unchanged bytes not yet copied begin
    for i in changed:
        key = keys[i]
        member = encode_member(key, record[key])
        pieces.append(view[start : offsets[i]])
        pieces.append(member)
        start = offsets[i + 1]
        delta = len(member) - (offsets[i + 1] - offsets[i])
        if delta:
            # Offsets after this member move by what the members so far changed in length.
            for j in range(i + 1, len(new_offsets)):
                new_offsets[j] += delta
    pieces.append(view[start:])
    return b"".join(pieces), new_offsets
