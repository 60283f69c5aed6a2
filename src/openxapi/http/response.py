"""Serialising response heads: status lines, Date caching and header checks.

Handlers mostly answer with the same few header lists (the RPC endpoints always do), so a
checked, rendered header block and the status-line prefix built on it are cached and reused;
per reply only Content-Length, Connection and the once-a-second Date are added.
"""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_STATUS_LINES: dict[tuple[str, int], str] = {}
_date_second = -1
_date_text = ""
_tail_second = -1
_TAILS: list[bytes] = [b"", b""]

#: Rendered header blocks by their (name, value) pairs; emptied when full.
_BLOCKS: dict[tuple[tuple[str, str], ...], tuple[str, str | None, bool]] = {}
#: Encoded status line + header block, by version, status and block.
_PREFIXES: dict[tuple[str, int, str], bytes] = {}
_CACHE_LIMIT = 512


def status_line(version: str, status: int) -> str:
    """``HTTP/1.1 200 OK\\r\\n`` for the client's version (cached)."""
    key = (version, status)
    line = _STATUS_LINES.get(key)
    if line is None:
        if not 100 <= status <= 999:
            raise ValueError(f"bad HTTP status {status}")
        reason = _REASONS.get(status, "Status")
        line = f"HTTP/{version} {status} {reason}\r\n"
        _STATUS_LINES[key] = line
    return line


def date_line() -> str:
    """The ``Date:`` header line, formatted at most once a second."""
    global _date_second, _date_text
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_text = f"Date: {formatdate(now, usegmt=True)}\r\n"
    return _date_text


def header_line(name: str, value: str) -> str:
    """One ``Name: value`` line; refuses CR/LF so a value cannot smuggle extra headers."""
    if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
        raise ValueError(f"invalid response header {name!r}")
    return f"{name}: {value}\r\n"


def simple_response(
    status: int, text: str, *, version: str = "1.1", extra: list[tuple[str, str]] | None = None
) -> bytes:
    """A complete short reply that closes the connection (errors the server raises itself)."""
    body = text.encode()
    parts = [
        status_line(version, status),
        "Content-Type: text/plain; charset=utf-8\r\n",
        f"Content-Length: {len(body)}\r\n",
        "Connection: close\r\n",
    ]
    for name, value in extra or ():
        parts.append(header_line(name, value))
    parts.append(date_line())
    parts.append("\r\n")
    return "".join(parts).encode("latin-1") + body


def header_block(headers: list[tuple[str, str]]) -> tuple[str, str | None, bool]:
    """A handler's headers rendered and checked once: the lines to send (without the
    framing headers the server sets itself), the Content-Length the handler gave, if any,
    and whether it asked to close the connection."""
    key = tuple(headers)
    block = _BLOCKS.get(key)
    if block is not None:
        return block
    lines: list[str] = []
    given_length: str | None = None
    close = False
    for name, value in key:
        lname = name.lower()
        if lname == "content-length":
            given_length = value
        elif lname == "connection":
            if "close" in value.lower():
                close = True
        elif lname != "transfer-encoding":
            lines.append(header_line(name, value))
    block = ("".join(lines), given_length, close)
    if len(_BLOCKS) >= _CACHE_LIMIT:
        _BLOCKS.clear()
    _BLOCKS[key] = block
    return block


def head_prefix(version: str, status: int, lines: str) -> bytes:
    """Status line and header block, encoded (cached)."""
    key = (version, status, lines)
    prefix = _PREFIXES.get(key)
    if prefix is None:
        prefix = (status_line(version, status) + lines).encode("latin-1")
        if len(_PREFIXES) >= _CACHE_LIMIT:
            _PREFIXES.clear()
        _PREFIXES[key] = prefix
    return prefix


def head_tail(keep_alive: bool) -> bytes:
    """``Connection``, ``Date`` and the blank line ending a head (rebuilt once a second)."""
    global _tail_second
    now = int(time.time())
    if now != _tail_second:
        date = date_line()
        _TAILS[0] = f"Connection: close\r\n{date}\r\n".encode("latin-1")
        _TAILS[1] = f"Connection: keep-alive\r\n{date}\r\n".encode("latin-1")
        _tail_second = now
    return _TAILS[keep_alive]
