"""What the storage end-to-end tests share: uploads and downloads over real sockets."""

from __future__ import annotations

import hashlib
import http.client
import random
import socket
import ssl
import time
import xmlrpc.client
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from tests.serverproc import ServerProcess

MiB = 1 << 20


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def task(self) -> str:
        return self.headers.get("task-id", "")


def connection(server: ServerProcess, tls: bool = False) -> http.client.HTTPConnection:
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return http.client.HTTPSConnection("127.0.0.1", server.https_port, context=ctx, timeout=60)
    return http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)


def request(
    server: ServerProcess,
    method: str,
    path: str,
    query: dict[str, str],
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    tls: bool = False,
) -> Reply:
    conn = connection(server, tls)
    try:
        conn.request(method, f"{path}?{urlencode(query)}", body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def put_raw(
    server: ServerProcess, session: str, vdi: str, data: bytes, fmt: str = "raw", **query: str
) -> Reply:
    q = {"session_id": session, "vdi": vdi, **query}
    if fmt != "raw":
        q["format"] = fmt
    return request(server, "PUT", "/import_raw_vdi", q, data)


def get_raw(
    server: ServerProcess, session: str, vdi: str, fmt: str = "raw", tls: bool = False
) -> Reply:
    q = {"session_id": session, "vdi": vdi}
    if fmt != "raw":
        q["format"] = fmt
    return request(server, "GET", "/export_raw_vdi", q, tls=tls)


def raw_exchange(server: ServerProcess, head: bytes, body: bytes, close_write: bool) -> bytes:
    """Send a hand-made request; with ``close_write`` the body ends when the socket's
    sending side is shut, as an HTTP/1.0 client with no Content-Length does."""
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=60) as s:
        s.sendall(head + body)
        if close_write:
            s.shutdown(socket.SHUT_WR)
        parts = []
        while chunk := s.recv(65536):
            parts.append(chunk)
    return b"".join(parts)


def wait_task(x: Any, task: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        rec: dict[str, Any] = x.task.get_record(task)
        if rec["status"] != "pending" or time.monotonic() > deadline:
            return rec
        time.sleep(0.02)


def result_ref(rec: dict[str, Any]) -> str:
    """The ref a task's XML-RPC ``result`` holds."""
    body = f"<methodResponse><params><param>{rec['result']}</param></params></methodResponse>"
    (value,), _ = xmlrpc.client.loads(body)
    return str(value)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_vdi(x: Any, sr: str, size: int, name: str = "e2e disk") -> str:
    ref: str = x.VDI.create(
        {
            "name_label": name,
            "SR": sr,
            "virtual_size": str(size),
            "type": "user",
            "sharable": False,
            "read_only": False,
            "other_config": {},
        }
    )
    return ref


def sample(size: int, seed: int) -> bytes:
    """Deterministic random data with a hole of zeros in the middle."""
    data = bytearray(random.Random(seed).randbytes(size))
    hole = size // 3 - size // 3 % 65536
    data[hole : hole + 65536 * 3] = bytes(65536 * 3)
    return bytes(data)
