"""VM.import from a URL, against a real server: an exported XVA served over loopback
HTTP arrives as a VM with its disk, redirects are followed (up to five), and failed
fetches give the reference's errors and leave nothing behind."""

from __future__ import annotations

import http.server
import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import XenAPI

from tests.e2e.storage_support import MiB, get_raw, put_raw, request, wait_task
from tests.e2e.test_sdk_support import logged_in
from tests.serverproc import ServerProcess

pytestmark = pytest.mark.e2e

TINY = "openxapi tiny test guest"
DISK = bytes(range(256)) * (MiB // 256) * 2


class _Handler(http.server.BaseHTTPRequestHandler):
    """/vm.xva (Content-Length), /chunked/vm.xva, /short (cut off), /missing (404),
    /hop/N (redirects N+1 times before /vm.xva), /noloc (a redirect without Location)."""

    protocol_version = "HTTP/1.1"
    xva: Path

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path
        size = self.xva.stat().st_size
        if path == "/vm.xva":
            self._head(200, {"Content-Length": str(size)})
            with self.xva.open("rb") as f:
                shutil.copyfileobj(f, self.wfile)
        elif path == "/chunked/vm.xva":
            self._head(200, {"Transfer-Encoding": "chunked"})
            with self.xva.open("rb") as f:
                while block := f.read(100_000):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/short":
            self._head(200, {"Content-Length": str(size)})
            with self.xva.open("rb") as f:
                self.wfile.write(f.read(size // 2))
            self.close_connection = True
        elif m := re.fullmatch(r"/hop/([0-9]+)", path):
            n = int(m.group(1))
            self._head(302, {"Location": f"/hop/{n - 1}" if n else "/vm.xva"})
        elif path == "/noloc":
            self._head(302, {})
        else:
            self._head(404, {})

    def _head(self, code: int, headers: dict[str, str]) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        if code != 200:
            self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(Path(tmp_path_factory.mktemp("import-url")))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def session(server: ServerProcess) -> Iterator[XenAPI.Session]:
    with logged_in(server.http_url) as s:
        yield s


@pytest.fixture(scope="module")
def x(session: XenAPI.Session) -> Any:
    return session.xenapi


@pytest.fixture(scope="module")
def sr(x: Any) -> str:
    return str(x.pool.get_default_SR(x.pool.get_all()[0]))


@pytest.fixture(scope="module")
def source(
    server: ServerProcess,
    session: XenAPI.Session,
    x: Any,
    sr: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A VM with one disk of known data, exported to a file."""
    sid = str(session._session)
    (tpl,) = x.VM.get_by_name_label(TINY)
    vm = x.VM.clone(tpl, "from a url")
    vdi = x.VDI.create(
        {
            "name_label": "url disk",
            "SR": sr,
            "virtual_size": str(len(DISK)),
            "type": "user",
            "sharable": False,
            "read_only": False,
            "other_config": {},
        }
    )
    reply = put_raw(server, sid, vdi, DISK)
    assert reply.status == 200 and wait_task(x, reply.task)["status"] == "success"
    x.VBD.create(
        {
            "VM": vm,
            "VDI": vdi,
            "userdevice": "1",
            "bootable": False,
            "mode": "RW",
            "type": "Disk",
            "unpluggable": True,
            "empty": False,
            "other_config": {},
            "qos_algorithm_type": "",
            "qos_algorithm_params": {},
        }
    )
    reply = request(server, "GET", "/export", {"session_id": sid, "ref": vm})
    assert reply.status == 200 and wait_task(x, reply.task)["status"] == "success"
    path = tmp_path_factory.mktemp("xva") / "vm.xva"
    path.write_bytes(reply.body)
    return path


@pytest.fixture(scope="module")
def base_url(source: Path) -> Iterator[str]:
    handler = type("Handler", (_Handler,), {"xva": source})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def named(x: Any, name: str) -> list[str]:
    return list(x.VM.get_by_name_label(name))


def check_imported(server: ServerProcess, x: Any, sid: str, refs: list[str]) -> None:
    (vm,) = refs
    rec = x.VM.get_record(vm)
    assert rec["name_label"] == "from a url" and rec["power_state"] == "Halted"
    disks = [x.VBD.get_VDI(v) for v in rec["VBDs"] if x.VBD.get_type(v) == "Disk"]
    (vdi,) = disks
    assert get_raw(server, sid, vdi).body == DISK
    x.VM.destroy(vm)
    x.VDI.destroy(vdi)


@pytest.mark.parametrize("path", ["/vm.xva", "/chunked/vm.xva", "/hop/4"])
def test_import_from_url(
    server: ServerProcess, session: XenAPI.Session, x: Any, sr: str, base_url: str, path: str
) -> None:
    before = len(named(x, "from a url"))
    refs = getattr(x.VM, "import")(base_url + path, sr, False, False)
    assert len(named(x, "from a url")) == before + 1
    check_imported(server, x, str(session._session), refs)


def test_import_as_a_task(
    server: ServerProcess, session: XenAPI.Session, x: Any, sr: str, base_url: str
) -> None:
    task = getattr(x.Async.VM, "import")(base_url + "/vm.xva", sr, False, False)
    rec = wait_task(x, task, timeout=60)
    assert rec["status"] == "success"
    refs = re.findall(r"OpaqueRef:[0-9a-f-]+", rec["result"])
    check_imported(server, x, str(session._session), refs)


def failure(x: Any, url: str, sr: str) -> list[str]:
    with pytest.raises(XenAPI.Failure) as e:
        getattr(x.VM, "import")(url, sr, False, False)
    return list(e.value.details)


def test_failed_fetches_give_the_reference_errors(x: Any, sr: str, base_url: str) -> None:
    vms = len(x.VM.get_all())
    vdis = len(x.VDI.get_all())
    assert failure(x, base_url + "/missing", sr) == ["IMPORT_ERROR_GENERIC", "404 Not Found"]
    assert failure(x, base_url + "/hop/5", sr) == [
        "IMPORT_ERROR_GENERIC",
        "Maximum redirect limit reached",
    ]
    assert failure(x, base_url + "/noloc", sr) == [
        "IMPORT_ERROR_GENERIC",
        "Redirect with no new location",
    ]
    assert failure(x, base_url + "/short", sr) == ["IMPORT_ERROR_PREMATURE_EOF"]
    assert failure(x, "ftp://127.0.0.1/vm.xva", sr) == [
        "INTERNAL_ERROR",
        "Unsupported URI scheme: ftp",
    ]
    assert len(x.VM.get_all()) == vms and len(x.VDI.get_all()) == vdis


def test_import_convert_needs_the_conversion_plugin(x: Any, sr: str) -> None:
    with pytest.raises(XenAPI.Failure) as e:
        x.VM.import_convert("vmware", "u", "p", sr, {})
    assert e.value.details == ["XENAPI_MISSING_PLUGIN", "conversion"]


def test_sr_without_a_plugged_pbd_is_refused_before_fetching(x: Any, base_url: str) -> None:
    lonely = x.SR.introduce(str(uuid.uuid4()), "no pbds", "", "ext", "", False, {})
    assert failure(x, base_url + "/vm.xva", lonely) == ["SR_NO_PBDS", lonely]
    x.SR.forget(lonely)
