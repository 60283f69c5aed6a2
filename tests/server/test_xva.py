"""``GET /export`` and ``PUT /import`` of whole VMs, against a real server with the SDK:
round trips (plain, gzip, zstd) that keep devices and disk contents, the task semantics,
damaged or cut-short uploads and full SRs that leave nothing behind, restores, refusals."""

from __future__ import annotations

import io
import random
import re
import socket
import tarfile
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import XenAPI

from tests.e2e.storage_support import (
    MiB,
    Reply,
    get_raw,
    put_raw,
    raw_exchange,
    request,
    sha,
    wait_task,
)
from tests.e2e.test_sdk_support import logged_in, run_cli
from tests.serverproc import ServerProcess

pytestmark = pytest.mark.e2e

TINY = "openxapi tiny test guest"
DISKS = {"0": 4 * MiB, "1": 3 * MiB + 512}
READER_PASSWORD = "pw-xva-reader"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(Path(tmp_path_factory.mktemp("xva")))
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
def sid(session: XenAPI.Session) -> str:
    return str(session._session)


def disk_data(size: int, seed: int) -> bytes:
    """Random data with a MiB-aligned all-zero stretch (left out of the stream)."""
    data = bytearray(random.Random(seed).randbytes(size))
    data[MiB : 2 * MiB] = bytes(MiB)
    return bytes(data)


def make_vm(server: ServerProcess, x: Any, sid: str, name: str) -> dict[str, Any]:
    """A halted VM with two disks full of known data, an empty CD drive and two VIFs."""
    (tpl,) = x.VM.get_by_name_label(TINY)
    vm = x.VM.clone(tpl, name)
    x.VM.remove_from_other_config(vm, "disks")
    x.VM.add_to_other_config(vm, "disks", "<provision></provision>")
    x.VM.provision(vm)
    x.VM.add_to_other_config(vm, "purpose", "xva test")
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    contents = {}
    for i, (device, size) in enumerate(DISKS.items()):
        vdi = x.VDI.create(
            {
                "name_label": f"{name} disk {device}",
                "SR": sr,
                "virtual_size": str(size),
                "type": "system" if device == "0" else "user",
                "sharable": False,
                "read_only": False,
                "other_config": {"disk": device},
            }
        )
        x.VBD.create(vbd_record(vm, vdi, device, "Disk", "RW", bootable=device == "0"))
        contents[device] = disk_data(size, i + len(name))
        reply = put_raw(server, sid, vdi, contents[device])
        assert reply.status == 200 and wait_task(x, reply.task)["status"] == "success"
    x.VBD.create(vbd_record(vm, "OpaqueRef:NULL", "3", "CD", "RO", empty=True))
    networks = x.network.get_all()
    for device in ("0", "1"):
        x.VIF.create(
            {
                "VM": vm,
                "network": networks[0],
                "device": device,
                "MAC": "",
                "MTU": "1500",
                "other_config": {},
                "qos_algorithm_type": "",
                "qos_algorithm_params": {},
            }
        )
    return {"ref": vm, "contents": contents}


def vbd_record(
    vm: str, vdi: str, device: str, kind: str, mode: str, *, bootable: bool = False, empty=False
) -> dict[str, Any]:
    return {
        "VM": vm,
        "VDI": vdi,
        "userdevice": device,
        "bootable": bootable,
        "mode": mode,
        "type": kind,
        "unpluggable": False,
        "empty": empty,
        "other_config": {},
        "qos_algorithm_type": "",
        "qos_algorithm_params": {},
    }


def disks_of(x: Any, vm: str) -> dict[str, str]:
    """userdevice -> VDI of the VM's disk drives."""
    out = {}
    for vbd in x.VM.get_VBDs(vm):
        rec = x.VBD.get_record(vbd)
        if rec["type"] == "Disk":
            out[rec["userdevice"]] = rec["VDI"]
    return out


def result_refs(rec: dict[str, Any]) -> list[str]:
    body = f"<methodResponse><params><param>{rec['result']}</param></params></methodResponse>"
    (value,), _ = xmlrpc.client.loads(body)
    return list(value)


def export(server: ServerProcess, sid: str, vm_uuid: str, **query: str) -> Reply:
    return request(server, "GET", "/export", {"session_id": sid, "uuid": vm_uuid, **query})


def import_xva(server: ServerProcess, sid: str, data: bytes, **query: str) -> Reply:
    return request(server, "PUT", "/import", {"session_id": sid, **query}, data)


def census(x: Any) -> dict[str, int]:
    """How many objects of each kind an import could make."""
    return {
        cls: len(getattr(x, cls).get_all())
        for cls in ("VM", "VDI", "VBD", "VIF", "network", "VM_metrics", "VM_guest_metrics")
    }


def remove_vm(x: Any, vm: str) -> None:
    vdis = list(disks_of(x, vm).values())
    x.VM.destroy(vm)
    for vdi in vdis:
        x.VDI.destroy(vdi)


@pytest.fixture(scope="module")
def source(server: ServerProcess, x: Any, sid: str) -> dict[str, Any]:
    vm = make_vm(server, x, sid, "xva source")
    vm["uuid"] = x.VM.get_uuid(vm["ref"])
    reply = export(server, sid, vm["uuid"])
    assert reply.status == 200
    assert wait_task(x, reply.task)["status"] == "success"
    vm["xva"] = reply.body
    return vm


@pytest.mark.parametrize("compression", ["", "gzip", "zstd"])
def test_round_trip(
    server: ServerProcess, x: Any, sid: str, source: dict[str, Any], compression: str
) -> None:
    query = {"use_compression": compression} if compression else {}
    task = x.task.create("export", "")
    reply = export(server, sid, source["uuid"], task_id=task, **query)
    assert reply.status == 200 and reply.headers["task-id"] == task
    assert reply.headers["content-disposition"] == 'attachment; filename="export.xva"'
    magic = {"": b"ova.xml", "gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd"}[compression]
    assert reply.body.startswith(magic)
    rec = wait_task(x, task)
    assert (rec["status"], rec["progress"]) == ("success", 1.0)
    assert x.VM.get_current_operations(source["ref"]) == {}

    before = census(x)
    upload = import_xva(server, sid, reply.body)
    assert upload.status == 200 and upload.headers["task-id"]
    done = wait_task(x, upload.headers["task-id"])
    assert done["status"] == "success", done["error_info"]
    assert done["other_config"]["object_creation"] == "complete"
    (new,) = result_refs(done)
    assert census(x)["VM"] == before["VM"] + 1

    old, got = x.VM.get_record(source["ref"]), x.VM.get_record(new)
    assert got["uuid"] != old["uuid"] and got["power_state"] == "Halted"
    for field in (
        "name_label",
        "name_description",
        "memory_static_max",
        "memory_dynamic_max",
        "VCPUs_max",
        "VCPUs_at_startup",
        "PV_args",
        "platform",
        "is_a_template",
    ):
        assert got[field] == old[field], field
    assert got["other_config"]["purpose"] == "xva test"
    assert got["other_config"]["mac_seed"] != old["other_config"]["mac_seed"]
    assert got["current_operations"] == {} and "start" in got["allowed_operations"]

    def vifs(vm: str) -> dict[str, str]:
        return {x.VIF.get_device(v): x.VIF.get_MAC(v) for v in x.VM.get_VIFs(vm)}

    assert vifs(new).keys() == vifs(source["ref"]).keys() == {"0", "1"}
    assert set(vifs(new).values()).isdisjoint(vifs(source["ref"]).values())
    drives = {x.VBD.get_userdevice(v): x.VBD.get_type(v) for v in x.VM.get_VBDs(new)}
    assert drives == {"0": "Disk", "1": "Disk", "3": "CD"}
    for device, vdi in disks_of(x, new).items():
        back = get_raw(server, sid, vdi)
        assert sha(back.body) == sha(source["contents"][device]), device
        assert x.VDI.get_other_config(vdi)["disk"] == device
    remove_vm(x, new)


def test_the_stream_is_an_xva(source: dict[str, Any]) -> None:
    """ova.xml first, disks by export id, each chunk followed by its XXH64, zeros left out."""
    with tarfile.open(fileobj=io.BytesIO(source["xva"])) as tar:
        names = tar.getnames()
        ova = tar.extractfile("ova.xml").read()  # type: ignore[union-attr]
    assert names[0] == "ova.xml"
    chunks = [n for n in names[1:] if not n.endswith(".xxhash")]
    assert [n + ".xxhash" for n in chunks] == [n for n in names[1:] if n.endswith(".xxhash")]
    prefixes = sorted({n.split("/")[0] for n in chunks})
    order = [n.split("/")[0] for n in chunks]
    assert len(prefixes) == 2 and order == sorted(order)
    for prefix in prefixes:
        numbers = [n.split("/")[1] for n in chunks if n.startswith(prefix + "/")]
        assert "00000001" not in numbers  # the all-zero second MiB
        assert numbers[0] == "00000000"
    classes = re.findall(rb"<name>class</name><value>(\w+)</value>", ova)
    assert classes[0] == b"VM" and {b"VM_metrics", b"VBD", b"VIF", b"VDI", b"SR"} <= set(classes)


def corrupted(data: bytes) -> bytes:
    """The stream with one byte of the last disk chunk flipped."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = [m for m in tar.getmembers() if not m.name.endswith(".xxhash")][-1]
    out = bytearray(data)
    out[member.offset_data + 10] ^= 0xFF
    return bytes(out)


def test_a_corrupted_chunk_fails_and_leaves_nothing(
    server: ServerProcess, x: Any, sid: str, source: dict[str, Any]
) -> None:
    before = census(x)
    reply = import_xva(server, sid, corrupted(source["xva"]))
    assert reply.status == 200
    rec = wait_task(x, reply.task)
    assert rec["status"] == "failure"
    assert rec["error_info"][0] == "IMPORT_ERROR"
    assert "checksum failed" in rec["error_info"][1]
    assert census(x) == before
    forced = import_xva(server, sid, corrupted(source["xva"]), force="true")
    rec = wait_task(x, forced.task)
    assert rec["status"] == "success", rec["error_info"]
    remove_vm(x, result_refs(rec)[0])


def test_a_truncated_upload_fails_and_leaves_nothing(
    server: ServerProcess, x: Any, sid: str, source: dict[str, Any]
) -> None:
    before = census(x)
    data = source["xva"]
    half = data[: len(data) * 3 // 4]
    target = f"/import?session_id={sid}"
    for head in (
        f"PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n",
        f"PUT {target} HTTP/1.0\r\nHost: x\r\n\r\n",
    ):
        answer = raw_exchange(server, head.encode(), half, close_write=True)
        assert re.match(rb"HTTP/1\.[01] 200 ", answer)
        (task,) = re.findall(rb"task-id: (\S+)", answer)
        rec = wait_task(x, task.decode())
        assert (rec["status"], rec["error_info"]) == ("failure", ["IMPORT_ERROR_PREMATURE_EOF"])
        assert census(x) == before


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        # one disk claiming a PiB
        (
            f"virtual_size</name><value>{DISKS['1']}<",
            f"virtual_size</name><value>{1 << 50}<",
            "SR_FULL",
        ),
        # a stream layout newer than ours
        (
            "export_vsn</name><value><i4>2<",
            "export_vsn</name><value><i4>3<",
            "IMPORT_INCOMPATIBLE_VERSION",
        ),
    ],
)
def test_refused_ova_xml_leaves_nothing(
    server: ServerProcess,
    x: Any,
    sid: str,
    source: dict[str, Any],
    old: str,
    new: str,
    error: str,
) -> None:
    """An export repacked by Python's tarfile with its ova.xml edited."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(source["xva"])) as src,
        tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as dst,
    ):
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "ova.xml":
                assert old.encode() in data
                data = data.replace(old.encode(), new.encode())
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    before = census(x)
    reply = import_xva(server, sid, out.getvalue())
    rec = wait_task(x, reply.task)
    assert rec["status"] == "failure" and rec["error_info"][0] == error
    assert census(x) == before


def test_restore_keeps_identity(server: ServerProcess, x: Any, sid: str) -> None:
    vm = make_vm(server, x, sid, "restored")
    ref = vm["ref"]
    uuid = x.VM.get_uuid(ref)
    macs = sorted(x.VIF.get_MAC(v) for v in x.VM.get_VIFs(ref))
    vbd_uuids = sorted(x.VBD.get_uuid(v) for v in x.VM.get_VBDs(ref))
    reply = export(server, sid, uuid)
    assert wait_task(x, reply.task)["status"] == "success"
    remove_vm(x, ref)
    first = import_xva(server, sid, reply.body, restore="true")
    rec = wait_task(x, first.task)
    assert rec["status"] == "success", rec["error_info"]
    (back,) = result_refs(rec)
    assert x.VM.get_uuid(back) == uuid
    assert sorted(x.VIF.get_MAC(v) for v in x.VM.get_VIFs(back)) == macs
    assert sorted(x.VBD.get_uuid(v) for v in x.VM.get_VBDs(back)) == vbd_uuids
    again = import_xva(server, sid, reply.body, restore="true")
    rec = wait_task(x, again.task)
    assert rec["status"] == "failure"
    assert rec["error_info"][0] == "VM_TO_IMPORT_IS_NOT_NEWER_VERSION"
    assert rec["error_info"][1] == back
    # Forced, the halted VM holding the uuid is replaced (its disks stay, as the reference).
    old_disks = list(disks_of(x, back).values())
    forced = import_xva(server, sid, reply.body, restore="true", force="true")
    rec = wait_task(x, forced.task)
    assert rec["status"] == "success", rec["error_info"]
    (replacement,) = result_refs(rec)
    assert replacement != back and x.VM.get_uuid(replacement) == uuid
    assert back not in x.VM.get_all()
    assert sorted(x.VBD.get_uuid(v) for v in x.VM.get_VBDs(replacement)) == vbd_uuids
    remove_vm(x, replacement)
    for vdi in old_disks:
        x.VDI.destroy(vdi)


def test_export_refusals(server: ServerProcess, x: Any, sid: str, source: dict[str, Any]) -> None:
    missing = request(server, "GET", "/export", {"session_id": sid, "uuid": "no-such-vm"})
    assert missing.status == 404
    assert wait_task(x, missing.task)["error_info"] == ["UUID_INVALID", "VM", "no-such-vm"]
    x.VM.start(source["ref"], False, False)
    try:
        running = export(server, sid, source["uuid"])
        assert running.status == 500
        info = wait_task(x, running.task)["error_info"]
        assert info[0] == "VM_BAD_POWER_STATE" and info[1] == source["ref"]
    finally:
        x.VM.hard_shutdown(source["ref"])


def test_no_session_is_refused(server: ServerProcess, x: Any, source: dict[str, Any]) -> None:
    # Refused before the body is read: a short one, so the refusal can be read back.
    for method, path, body in (("PUT", "/import", source["xva"][:4096]), ("GET", "/export", None)):
        task = x.task.create("transfer", "")
        query = {"task_id": task, "uuid": source["uuid"]}
        reply = request(server, method, path, query, body)
        assert reply.status == 401
        rec = wait_task(x, task)
        assert (rec["status"], rec["error_info"]) == ("failure", ["SESSION_AUTHENTICATION_FAILED"])
        bad = request(server, method, path, {"session_id": "OpaqueRef:nope", **query}, body)
        assert bad.status == 401


def test_a_read_only_user_is_refused(server: ServerProcess, x: Any, source: dict[str, Any]) -> None:
    run_cli(
        server.data_dir, "add", "xvareader", "--role", "read-only", "--password", READER_PASSWORD
    )
    before = census(x)
    with logged_in(server.http_url, "xvareader", READER_PASSWORD) as reader:
        rsid = str(reader._session)
        for method, path, action, body in (
            ("PUT", "/import", "http/put_import", source["xva"][:4096]),
            ("GET", "/export", "http/get_export", None),
        ):
            task = reader.xenapi.task.create("transfer", "")
            query = {"session_id": rsid, "task_id": task, "uuid": source["uuid"]}
            reply = request(server, method, path, query, body)
            assert reply.status == 403
            rec = wait_task(x, task)
            assert rec["status"] == "failure"
            assert rec["error_info"][:2] == ["RBAC_PERMISSION_DENIED", action]
    assert census(x) == before


def test_a_client_that_stops_reading_fails_the_export(
    server: ServerProcess, x: Any, sid: str
) -> None:
    """The task fails with CLIENT_ERROR and the VM and its disk are free again."""
    (tpl,) = x.VM.get_by_name_label(TINY)
    vm = x.VM.clone(tpl, "abandoned export")
    x.VM.remove_from_other_config(vm, "disks")
    x.VM.add_to_other_config(vm, "disks", "<provision></provision>")
    x.VM.provision(vm)
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    size = 48 * MiB  # more than the socket buffers hold
    vdi = x.VDI.create(
        {
            "name_label": "big",
            "SR": sr,
            "virtual_size": str(size),
            "type": "system",
            "sharable": False,
            "read_only": False,
            "other_config": {},
        }
    )
    x.VBD.create(vbd_record(vm, vdi, "0", "Disk", "RW", bootable=True))
    reply = put_raw(server, sid, vdi, random.Random(5).randbytes(size))
    assert wait_task(x, reply.task)["status"] == "success"
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=60) as s:
        s.sendall(f"GET /export?session_id={sid}&ref={vm} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = s.recv(65536)
        (task,) = re.findall(rb"task-id: (\S+)", head)
    rec = wait_task(x, task.decode())
    assert (rec["status"], rec["error_info"][0]) == ("failure", "CLIENT_ERROR")
    assert x.VM.get_current_operations(vm) == {} and x.VDI.get_current_operations(vdi) == {}
    assert "export" in x.VM.get_allowed_operations(vm)
    remove_vm(x, vm)
