"""The destination of a cross-pool migration as the sender reaches it.

``host.migrate_receive`` on the destination hands out the reference's dest map: ``SM`` and
``xenops`` (its migration services, with the session in their query), ``master`` (its
API), ``host`` and ``session_id``. The sender calls the destination's API over JSON-RPC and
its migration service (``/services/xenops/<action>``) over plain HTTP(S); a destination
that cannot be reached at all is VM_MIGRATE_CONTACT_REMOTE_SERVICE_FAILED.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from openxapi.errors import ApiError

SM_KEY, HOST_KEY, XENOPS_KEY, SESSION_KEY, MASTER_KEY = (
    "SM",
    "host",
    "xenops",
    "session_id",
    "master",
)
#: Seconds a remote call may take before the destination counts as unreachable.
CALL_TIMEOUT = 60.0
#: Seconds a migration service request may take (a disk copy or a memory stream).
SERVICE_TIMEOUT = 3600.0
_ids = itertools.count(1)


class Unreachable(Exception):
    """The destination did not answer (refused, reset, timed out, not HTTP)."""


def unreachable() -> ApiError:
    return ApiError("VM_MIGRATE_CONTACT_REMOTE_SERVICE_FAILED")


@dataclass(frozen=True, slots=True)
class Url:
    scheme: str
    host: str
    port: int
    path: str
    query: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Url:
        parts = urllib.parse.urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ApiError("INTERNAL_ERROR", f"Cannot extract foreign IP address from: {text}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ApiError(
                "INTERNAL_ERROR", f"Cannot extract foreign IP address from: {text}"
            ) from None
        query = dict(urllib.parse.parse_qsl(parts.query))
        return cls(parts.scheme, parts.hostname, port, parts.path or "/", query)

    def target(self, path: str, query: Mapping[str, str]) -> str:
        q = urllib.parse.urlencode({**self.query, **query})
        return f"{path}?{q}" if q else path


@dataclass(frozen=True, slots=True)
class Remote:
    """The parsed dest map."""

    session: str
    host: str
    master: Url
    xenops: Url
    sm: Url

    @property
    def remote_ip(self) -> str:
        return self.xenops.host


def remote_of_dest(dest: Mapping[str, str]) -> Remote:
    """The dest map read as the reference reads it (a missing key is Not_found)."""
    for key in (MASTER_KEY, XENOPS_KEY, SESSION_KEY, HOST_KEY, SM_KEY):
        if key not in dest:
            raise ApiError("INTERNAL_ERROR", "Not_found")
    return Remote(
        session=dest[SESSION_KEY],
        host=dest[HOST_KEY],
        master=Url.parse(dest[MASTER_KEY]),
        xenops=Url.parse(dest[XENOPS_KEY]),
        sm=Url.parse(dest[SM_KEY]),
    )


async def _request(
    url: Url,
    method: str,
    target: str,
    body: bytes | AsyncIterator[bytes],
    headers: Mapping[str, str],
    timeout: float,
) -> tuple[int, bytes]:
    """One HTTP/1.1 exchange on a fresh connection: (status, body)."""
    ctx: ssl.SSLContext | None = None
    if url.scheme == "https":
        # A cross-pool destination's certificate is not known here (the reference does
        # not verify it either for cross-pool migrations).
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(url.host, url.port, ssl=ctx), CALL_TIMEOUT
        )
    except (OSError, TimeoutError, ssl.SSLError) as e:
        raise Unreachable(str(e)) from None
    try:
        head = [f"{method} {target} HTTP/1.1", f"Host: {url.host}:{url.port}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head.append("Connection: close")
        if isinstance(body, bytes):
            head.append(f"Content-Length: {len(body)}")
        else:
            head.append("Transfer-Encoding: chunked")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        if isinstance(body, bytes):
            writer.write(body)
        else:
            async for piece in body:
                if piece:
                    writer.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
                    await writer.drain()
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    except (OSError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError) as e:
        raise Unreachable(str(e)) from None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return _parse_response(raw)


def _parse_response(raw: bytes) -> tuple[int, bytes]:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2) if lines else []
    if not sep or len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise Unreachable("not an HTTP answer")
    fields = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        fields[k.strip().lower()] = v.strip()
    if "chunked" in fields.get("transfer-encoding", "").lower():
        rest = _dechunk(rest)
    elif fields.get("content-length", "").isdigit():
        rest = rest[: int(fields["content-length"])]
    return int(parts[1]), rest


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        line, _, data = data.partition(b"\r\n")
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)


class RemoteApi:
    """Calls to the destination: its XenAPI (as the dest map's session) and its
    migration service."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote

    async def call(self, method: str, *params: Any) -> Any:
        """``method`` on the destination's API; its XenAPI errors are raised as they are."""
        doc = {
            "jsonrpc": "2.0",
            "method": method,
            "params": [self.remote.session, *params],
            "id": next(_ids),
        }
        status, body = await _request(
            self.remote.master,
            "POST",
            "/jsonrpc",
            json.dumps(doc).encode(),
            {"Content-Type": "application/json"},
            CALL_TIMEOUT,
        )
        try:
            reply = json.loads(body)
        except ValueError:
            raise Unreachable(f"HTTP {status} from the destination's API") from None
        error = reply.get("error") if isinstance(reply, dict) else None
        if error:
            if isinstance(error, dict):
                data = error.get("data") or []
                raise ApiError(str(error.get("message", "")), *[str(d) for d in data])
            raise ApiError(*[str(e) for e in error])
        return reply.get("result") if isinstance(reply, dict) else None

    async def service(
        self,
        action: str,
        query: Mapping[str, str] | None = None,
        body: bytes | AsyncIterator[bytes] = b"",
        method: str = "POST",
    ) -> Any:
        """``/services/xenops/<action>`` on the destination; its answer's value, or the
        XenAPI error it reports."""
        url = self.remote.xenops
        target = url.target(url.path.rstrip("/") + "/" + action, query or {})
        status, raw = await _request(
            url, method, target, body, {"Content-Type": "application/json"}, SERVICE_TIMEOUT
        )
        try:
            reply = json.loads(raw)
        except ValueError:
            raise Unreachable(f"HTTP {status} from the destination's migration service") from None
        if not isinstance(reply, dict):
            raise Unreachable("a malformed answer from the destination's migration service")
        if "error" in reply:
            err = [str(e) for e in reply["error"]] or ["INTERNAL_ERROR"]
            raise ApiError(*err)
        return reply.get("value")
