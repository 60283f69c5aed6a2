"""Serialising response heads: status lines, Date caching and header checks."""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_STATUS_LINES: dict[tuple[str, int], str] = {}
_date_second = -1
_date_text = ""


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
