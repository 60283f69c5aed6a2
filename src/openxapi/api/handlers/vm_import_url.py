"""VM.import: fetch an XVA from an http(s) URL and import it into an SR, streaming.

As in the reference: the SR needs a plugged PBD, only a 200 answer is imported,
redirections are followed up to five times, and any other answer is
IMPORT_ERROR_GENERIC with its status. VM.import_convert needs the reference's
"conversion" plugin, which this server does not have.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http
import logging
import ssl
import urllib.parse
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.registry import handler
from openxapi.api.state import ServerState
from openxapi.api.storage_access import storage_of
from openxapi.api.vm_import import VmImport, import_xva
from openxapi.errors import ApiError
from openxapi.storage.xva_format import XvaReader

log = logging.getLogger("openxapi.vm")

MAX_REDIRECTS = 5
#: Longest status line or header line accepted from the server.
LINE_LIMIT = 16384
MAX_HEADERS = 200


def _generic(why: str) -> ApiError:
    return ApiError("IMPORT_ERROR_GENERIC", why)


def status_text(code: int) -> str:
    """A status as the reference names it ("404 Not Found"; just the number if unknown)."""
    try:
        return f"{code} {http.HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


class HttpBody:
    """A response body as a byte source: by Content-Length, chunked, or to the end of the
    connection. A body cut short ends early; the XVA reader reports that."""

    def __init__(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> None:
        self.reader = reader
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length", "")
        self.left: int | None = int(length) if length.isdigit() and not self.chunked else None
        self.chunk_left = 0
        self.done = False

    async def read(self, n: int = 65536) -> bytes:
        if self.done:
            return b""
        if self.chunked:
            return await self._read_chunked(n)
        want = n if self.left is None else min(n, self.left)
        if want <= 0:
            self.done = True
            return b""
        data = await self.reader.read(want)
        if not data:
            self.done = True
        elif self.left is not None:
            self.left -= len(data)
        return data

    async def _read_chunked(self, n: int) -> bytes:
        if self.chunk_left == 0:
            line = await self.reader.readline()
            size = line.split(b";", 1)[0].strip()
            try:
                self.chunk_left = int(size, 16)
            except ValueError:
                self.done = True  # a broken chunk header ends the body
                return b""
            if self.chunk_left == 0:
                self.done = True
                return b""
        data = await self.reader.read(min(n, self.chunk_left))
        if not data:
            self.done = True
            return b""
        self.chunk_left -= len(data)
        if self.chunk_left == 0:
            await self.reader.readline()
        return data


def _connect_error(e: OSError) -> ApiError:
    name = errno.errorcode.get(e.errno or 0, "EUNKNOWNERR")
    return ApiError("INTERNAL_ERROR", f'Unix.Unix_error(Unix.{name}, "connect", "")')


async def _open(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme:
        raise ApiError("INTERNAL_ERROR", f"Failed to parse URI: {url}")
    if parts.scheme not in ("http", "https"):
        raise ApiError("INTERNAL_ERROR", f"Unsupported URI scheme: {parts.scheme}")
    try:
        port = parts.port
    except ValueError:
        port = None
        parts = parts._replace(netloc="")
    if not parts.hostname:
        raise ApiError("INTERNAL_ERROR", f"Failed to parse host and port from URI: {url}")
    tls = ssl.create_default_context() if parts.scheme == "https" else None
    port = port or (443 if tls else 80)
    try:
        return await asyncio.open_connection(parts.hostname, port, ssl=tls, limit=LINE_LIMIT)
    except ssl.SSLError as e:
        raise ApiError("INTERNAL_ERROR", f"Connection failed: {e.reason or e}.") from None
    except OSError as e:
        raise _connect_error(e) from None


async def _send_get(writer: asyncio.StreamWriter, url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    head = (
        f"GET {target} HTTP/1.1\r\n"
        f"Host: {parts.netloc.rpartition('@')[2]}\r\n"
        "User-Agent: openxapi\r\n"
        "Accept: */*\r\n"
        "Connection: close\r\n\r\n"
    )
    writer.write(head.encode("latin-1"))
    await writer.drain()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status code and headers (names lower-cased) of the answer."""
    try:
        line = await reader.readline()
        if not line:
            raise ApiError("IMPORT_ERROR_PREMATURE_EOF")
        fields = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(fields) < 2 or not fields[0].startswith("HTTP/"):
            raise _generic(f"Malformed response first line: {line.decode('latin-1').strip()}")
        if not (fields[1].isdigit() and len(fields[1]) == 3):
            raise _generic(f"Malformed response status: {fields[1]}")
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS):
            raw = await reader.readline()
            if not raw:
                raise ApiError("IMPORT_ERROR_PREMATURE_EOF")
            text = raw.decode("latin-1").rstrip("\r\n")
            if not text:
                return int(fields[1]), headers
            name, sep, value = text.partition(":")
            if not sep:
                raise _generic(f"Malformed header: {text}")
            headers[name.strip().lower()] = value.strip()
        raise _generic("Too many headers")
    except (ValueError, asyncio.LimitOverrunError):
        raise _generic("A response line is too long") from None
    except OSError as e:
        raise ApiError("INTERNAL_ERROR", f"Connection failed: {e}") from None


def _check_sr(state: ServerState, sr: str) -> None:
    """The reference picks a plugged PBD of the SR to run the import on."""
    rec = state.record("SR", sr)
    for pbd in rec["PBDs"]:
        prec = state.store.get("PBD", pbd)
        if prec is not None and prec["currently_attached"]:
            return
    raise ApiError("SR_NO_PBDS", sr)


async def _import_stream(
    state: ServerState, ctx: CallContext, body: HttpBody, sr: str, restore: bool, force: bool
) -> list[str]:
    """The XVA in ``body`` imported into ``sr``; everything made is removed on failure."""
    if state.record("SR", sr)["content_type"] == "iso":
        raise ApiError("SR_OPERATION_NOT_SUPPORTED")
    await storage_of(state).driver(sr)
    reader = XvaReader(body)
    job = VmImport(state, ctx, sr, restore=restore, force=force)
    try:
        return await import_xva(job, reader, force)
    finally:
        await reader.close()


@handler("VM.import")
async def import_vm(
    state: ServerState, ctx: CallContext, url: str, sr: str, full_restore: bool, force: bool
) -> Any:
    _check_sr(state, sr)
    for _ in range(MAX_REDIRECTS + 1):
        reader, writer = await _open(url)
        try:
            await _send_get(writer, url)
            code, headers = await _read_head(reader)
            if code == 200:
                body = HttpBody(reader, headers)
                try:
                    refs = await _import_stream(state, ctx, body, sr, full_restore, force)
                except OSError as e:
                    raise ApiError("INTERNAL_ERROR", f"Connection failed: {e}") from None
                await state.store.sync()
                return refs
            if 300 <= code < 400:
                location = headers.get("location")
                if location is None:
                    raise _generic("Redirect with no new location")
                url = urllib.parse.urljoin(url, location)
                continue
            raise _generic(status_text(code))
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    raise _generic("Maximum redirect limit reached")


@handler("VM.import_convert")
async def import_convert(
    state: ServerState,
    ctx: CallContext,
    kind: str,
    username: str,
    password: str,
    sr: str,
    remote_config: dict[str, str],
) -> Any:
    """The reference asks its "conversion" plugin for a converter first."""
    raise ApiError("XENAPI_MISSING_PLUGIN", "conversion")
