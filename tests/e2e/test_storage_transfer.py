"""``/import_raw_vdi`` and ``/export_raw_vdi`` with real sockets and the XenAPI SDK."""

from __future__ import annotations

import base64
import http.client
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import XenAPI

from tests.e2e.storage_support import (
    MiB,
    get_raw,
    new_vdi,
    put_raw,
    raw_exchange,
    request,
    result_ref,
    sample,
    sha,
    wait_task,
)
from tests.e2e.test_sdk_support import logged_in, login_works, run_cli, wait_for
from tests.serverproc import ROOT_PASSWORD, ServerProcess

pytestmark = pytest.mark.e2e

SIZE = 4 * MiB


@pytest.fixture(scope="module")
def session(server: ServerProcess) -> Iterator[XenAPI.Session]:
    with logged_in(server.http_url) as s:
        yield s


@pytest.fixture(scope="module")
def x(session: XenAPI.Session) -> Any:
    return session.xenapi


@pytest.fixture(scope="module")
def sid(session: XenAPI.Session) -> str:
    return str(session._session)


@pytest.fixture(scope="module")
def sr(x: Any) -> str:
    return str(x.pool.get_default_SR(x.pool.get_all()[0]))


def sr_dir(server: ServerProcess, x: Any, sr: str) -> str:
    return str(server.data_dir / "sr" / x.SR.get_uuid(sr))


def import_ok(
    server: ServerProcess, x: Any, sid: str, vdi: str, data: bytes, fmt: str = "raw"
) -> dict[str, Any]:
    reply = put_raw(server, sid, vdi, data, fmt)
    assert reply.status == 200, reply.body
    rec = wait_task(x, reply.task)
    assert rec["status"] == "success", rec["error_info"]
    return rec


@pytest.mark.parametrize("fmt", ["raw", "vhd", "qcow2"])
def test_export_import_round_trip(
    server: ServerProcess, x: Any, sid: str, sr: str, fmt: str
) -> None:
    data = sample(SIZE, 1)
    source = new_vdi(x, sr, SIZE)
    import_ok(server, x, sid, source, data)
    exported = get_raw(server, sid, source, fmt)
    assert exported.status == 200
    if fmt == "raw":
        assert sha(exported.body) == sha(data)
    target = new_vdi(x, sr, SIZE)
    import_ok(server, x, sid, target, exported.body, fmt)
    back = get_raw(server, sid, target)
    assert len(back.body) == SIZE and sha(back.body) == sha(data)


def test_export_reply(server: ServerProcess, x: Any, sid: str, sr: str) -> None:
    vdi = new_vdi(x, sr, MiB)
    uuid = x.VDI.get_uuid(vdi)
    for fmt, ctype in (
        ("raw", "application/octet-stream"),
        ("vhd", "application/vhd"),
        ("qcow2", "application/x-qemu-disk"),
    ):
        reply = get_raw(server, sid, uuid, fmt)
        assert reply.status == 200
        assert reply.headers["content-type"] == ctype
        assert reply.headers["content-disposition"] == f'attachment; filename="{uuid}.{fmt}"'
        assert int(reply.headers["content-length"]) == len(reply.body)
        rec = wait_task(x, reply.task)
        assert rec["status"] == "success" and rec["progress"] == 1.0
    reply = request(server, "GET", "/export_raw_vdi/", {"session_id": sid, "vdi": vdi})
    assert reply.status == 200 and reply.body == bytes(MiB)


def test_import_runs_in_the_named_task(server: ServerProcess, x: Any, sid: str, sr: str) -> None:
    vdi = new_vdi(x, sr, MiB)
    task = x.task.create("upload", "")
    reply = request(
        server,
        "PUT",
        "/import_raw_vdi/",
        {"session_id": sid, "vdi": vdi, "task_id": task},
        sample(MiB, 2),
    )
    assert reply.status == 200 and reply.task == task and reply.body == b""
    rec = wait_task(x, task)
    assert rec["status"] == "success" and rec["progress"] == 1.0
    assert result_ref(rec) == vdi


def test_import_into_an_sr_makes_the_vdi(server: ServerProcess, x: Any, sid: str, sr: str) -> None:
    data = sample(2 * MiB, 3)
    for key, value in (("sr_id", sr), ("sr_uuid", x.SR.get_uuid(sr))):
        reply = request(server, "PUT", "/import_raw_vdi", {"session_id": sid, key: value}, data)
        rec = wait_task(x, reply.task)
        assert rec["status"] == "success", rec["error_info"]
        vdi = result_ref(rec)
        vrec = x.VDI.get_record(vdi)
        assert vrec["name_label"] == "Imported VDI" and vrec["virtual_size"] == str(2 * MiB)
        assert sha(get_raw(server, sid, vdi).body) == sha(data)
    vdis = set(x.SR.get_VDIs(sr))
    task = x.task.create("cut short", "")
    head = (
        f"PUT /import_raw_vdi?session_id={sid}&sr_id={sr}&task_id={task} HTTP/1.1\r\n"
        f"Host: x\r\nContent-Length: {2 * MiB}\r\n\r\n"
    ).encode()
    raw_exchange(server, head, b"\x07" * MiB, close_write=True)
    assert wait_task(x, task)["error_info"] == ["IMPORT_ERROR_PREMATURE_EOF"]
    assert wait_for(lambda: set(x.SR.get_VDIs(sr)) == vdis, 5.0)
    task = x.task.create("no target", "")
    reply = request(server, "PUT", "/import_raw_vdi", {"session_id": sid, "task_id": task}, b"x")
    assert reply.status == 400
    assert wait_task(x, task)["error_info"] == [
        "INTERNAL_ERROR",
        "Not enough info supplied to import",
    ]


def test_unknown_format(server: ServerProcess, x: Any, sid: str, sr: str) -> None:
    vdi = new_vdi(x, sr, MiB)
    task = x.task.create("bad format", "")
    reply = request(
        server,
        "PUT",
        "/import_raw_vdi",
        {"session_id": sid, "vdi": vdi, "format": "bogus", "task_id": task},
        b"x",
    )
    assert reply.status == 404
    assert wait_task(x, task)["error_info"] == ["INTERNAL_ERROR", "Unknown format bogus"]
    assert (
        request(
            server, "GET", "/export_raw_vdi", {"session_id": sid, "vdi": vdi, "format": "bogus"}
        ).status
        == 404
    )


def test_transfer_without_a_valid_session_is_refused(
    server: ServerProcess, x: Any, sid: str, sr: str
) -> None:
    vdi = new_vdi(x, sr, MiB)
    assert request(server, "PUT", "/import_raw_vdi", {"vdi": vdi}, b"x").status == 401
    assert request(server, "GET", "/export_raw_vdi", {"vdi": vdi}).status == 401
    task = x.task.create("bad session", "")
    reply = request(
        server,
        "PUT",
        "/import_raw_vdi",
        {"session_id": "OpaqueRef:bogus", "vdi": vdi, "task_id": task},
        b"\x01" * 512,
    )
    assert reply.status == 401
    assert wait_task(x, task)["error_info"] == ["SESSION_AUTHENTICATION_FAILED"]
    bad = base64.b64encode(b"root:wrong").decode()
    reply = request(
        server, "GET", "/export_raw_vdi", {"vdi": vdi}, headers={"Authorization": f"Basic {bad}"}
    )
    assert reply.status == 401
    assert get_raw(server, sid, vdi).body == bytes(MiB)


def test_cookie_and_basic_auth(server: ServerProcess, x: Any, sid: str, sr: str) -> None:
    vdi = new_vdi(x, sr, MiB)
    reply = request(
        server, "GET", "/export_raw_vdi", {"vdi": vdi}, headers={"Cookie": f"session_id={sid}"}
    )
    assert reply.status == 200 and len(reply.body) == MiB
    creds = base64.b64encode(f"root:{ROOT_PASSWORD}".encode()).decode()
    reply = request(
        server, "GET", "/export_raw_vdi", {"vdi": vdi}, headers={"Authorization": f"Basic {creds}"}
    )
    assert reply.status == 200 and len(reply.body) == MiB
    assert wait_task(x, reply.task)["status"] == "success"


def test_roles_are_checked(server: ServerProcess, x: Any, sr: str) -> None:
    vdi = new_vdi(x, sr, MiB)
    for name, role in (("diskreader", "read-only"), ("diskadmin", "vm-admin")):
        run_cli(server.data_dir, "add", name, "--role", role, "--password", f"pw-{name}")
        assert wait_for(lambda n=name: login_works(server.http_url, n, f"pw-{n}"), 10.0)
    with logged_in(server.http_url, "diskreader", "pw-diskreader") as s:
        task = s.xenapi.task.create("denied", "")
        reply = request(
            server,
            "PUT",
            "/import_raw_vdi",
            {"session_id": s._session, "vdi": vdi, "task_id": task},
            b"\x01" * 512,
        )
        assert reply.status == 403
        err = wait_task(x, task)["error_info"]
        assert err[:2] == ["RBAC_PERMISSION_DENIED", "http/put_import_raw_vdi"]
        assert get_raw(server, s._session, vdi).status == 403
    with logged_in(server.http_url, "diskadmin", "pw-diskadmin") as s:
        reply = put_raw(server, s._session, vdi, b"\x02" * 512)
        assert wait_task(x, reply.task)["status"] == "success"


def test_http10_put_runs_to_end_of_connection(
    server: ServerProcess, x: Any, sid: str, sr: str
) -> None:
    vdi = new_vdi(x, sr, 2 * MiB)
    data = sample(2 * MiB - 4096, 4)
    head = f"PUT /import_raw_vdi?session_id={sid}&vdi={vdi} HTTP/1.0\r\n\r\n".encode()
    answer = raw_exchange(server, head, data, close_write=True)
    assert answer.startswith(b"HTTP/1.0 200")
    task = next(
        line.split(b":", 1)[1].strip().decode()
        for line in answer.split(b"\r\n")
        if line.lower().startswith(b"task-id:")
    )
    assert wait_task(x, task)["status"] == "success"
    assert sha(get_raw(server, sid, vdi).body) == sha(data + bytes(4096))


def test_truncated_upload_fails_and_leaves_the_disk_as_it_was(
    server: ServerProcess, x: Any, sid: str, sr: str
) -> None:
    vdi = new_vdi(x, sr, 2 * MiB)
    before = sample(2 * MiB, 5)
    import_ok(server, x, sid, vdi, before)
    vdis = set(x.SR.get_VDIs(sr))
    task = x.task.create("truncated", "")
    head = (
        f"PUT /import_raw_vdi?session_id={sid}&vdi={vdi}&task_id={task} HTTP/1.1\r\n"
        f"Host: x\r\nContent-Length: {2 * MiB}\r\n\r\n"
    ).encode()
    raw_exchange(server, head, b"\x07" * MiB, close_write=True)
    rec = wait_task(x, task)
    assert rec["status"] == "failure" and rec["error_info"] == ["IMPORT_ERROR_PREMATURE_EOF"]
    assert sha(get_raw(server, sid, vdi).body) == sha(before)
    assert set(x.SR.get_VDIs(sr)) == vdis
    assert not [f for f in os.listdir(sr_dir(server, x, sr)) if f.startswith(".tmp-")]


def test_oversized_upload_fails(server: ServerProcess, x: Any, sid: str, sr: str) -> None:
    vdi = new_vdi(x, sr, MiB)
    reply = put_raw(server, sid, vdi, b"\x01" * (MiB + 512))
    rec = wait_task(x, reply.task)
    assert rec["status"] == "failure"
    assert rec["error_info"] == ["VDI_TOO_SMALL", vdi, str(MiB + 512)]
    assert get_raw(server, sid, vdi).body == bytes(MiB)


def test_export_over_https(server: ServerProcess, x: Any, sid: str, sr: str) -> None:
    vdi = new_vdi(x, sr, 2 * MiB)
    data = sample(2 * MiB, 6)
    import_ok(server, x, sid, vdi, data)
    reply = get_raw(server, sid, vdi, tls=True)
    assert reply.status == 200 and sha(reply.body) == sha(data)


def test_interrupted_export_fails_its_task(
    server: ServerProcess, x: Any, sid: str, sr: str
) -> None:
    vdi = new_vdi(x, sr, 64 * MiB)
    import_ok(server, x, sid, vdi, sample(64 * MiB, 7))
    task = x.task.create("interrupted", "")
    head = (
        f"GET /export_raw_vdi?session_id={sid}&vdi={vdi}&task_id={task} HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.http_port)) as s:
        s.sendall(head.encode())
        s.recv(65536)
    rec = wait_task(x, task)
    assert rec["status"] == "failure" and rec["error_info"][0] == "CLIENT_ERROR"
    assert x.VDI.get_current_operations(vdi) == {}


def test_memory_stays_flat(server: ServerProcess, x: Any, sid: str, sr: str) -> None:
    """A 192 MiB upload and download through a server that holds a few MiB at a time."""
    assert server.proc is not None
    size = 192 * MiB
    vdi = new_vdi(x, sr, size)

    def rss() -> int:
        with open(f"/proc/{server.proc.pid}/status") as f:  # type: ignore[union-attr]
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024

    def body() -> Iterator[bytes]:
        block = os.urandom(MiB)
        for i in range(size // MiB):
            yield bytes([i % 255 + 1]) + block[1:]

    before = rss()
    peak = before
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
    conn.putrequest("PUT", f"/import_raw_vdi?session_id={sid}&vdi={vdi}")
    conn.putheader("Content-Length", str(size))
    conn.endheaders()
    for i, chunk in enumerate(body()):
        conn.send(chunk)
        if i % 16 == 0:
            peak = max(peak, rss())
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert wait_task(x, resp.getheader("task-id") or "")["status"] == "success"
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
    conn.request("GET", f"/export_raw_vdi?session_id={sid}&vdi={vdi}")
    resp = conn.getresponse()
    got = 0
    while chunk := resp.read(MiB):
        got += len(chunk)
        if got % (16 * MiB) == 0:
            peak = max(peak, rss())
    conn.close()
    assert got == size
    time.sleep(0.1)
    assert peak - before < 48 * MiB, (before, peak)
    x.VDI.destroy(vdi)
