"""Storage seen by the XenAPI SDK: first-start SRs, clone and snapshot isolation, chains,
SR_FULL, and a server started with ``--sim-storage`` and ``--iso-dir``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import XenAPI

from tests.e2e.storage_support import MiB, get_raw, new_vdi, put_raw, sample, sha, wait_task
from tests.e2e.test_sdk_support import failure, logged_in, vm_struct
from tests.serverproc import ServerProcess

pytestmark = pytest.mark.e2e


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


def write(server: ServerProcess, x: Any, sid: str, vdi: str, data: bytes) -> None:
    reply = put_raw(server, sid, vdi, data)
    rec = wait_task(x, reply.task)
    assert rec["status"] == "success", rec["error_info"]


def checksum(server: ServerProcess, sid: str, vdi: str) -> str:
    reply = get_raw(server, sid, vdi)
    assert reply.status == 200
    return sha(reply.body)


def test_fresh_server_storage(x: Any, sr: str) -> None:
    local = x.SR.get_record(sr)
    assert (local["name_label"], local["type"], local["content_type"]) == (
        "Local storage",
        "file",
        "user",
    )
    assert int(local["physical_size"]) > 0 and int(local["physical_utilisation"]) > 0
    (pbd,) = local["PBDs"]
    assert x.PBD.get_currently_attached(pbd) is True
    (iso,) = x.SR.get_by_name_label("ISO library")
    assert x.SR.get_content_type(iso) == "iso"
    types = {x.SM.get_type(ref) for ref in x.SM.get_all()}
    assert types == {"file", "iso", "dummy"}


@pytest.mark.parametrize("op", ["clone", "snapshot"])
def test_writes_after_a_fork_stay_on_their_side(
    server: ServerProcess, x: Any, sid: str, sr: str, op: str
) -> None:
    source = new_vdi(x, sr, 4 * MiB)
    write(server, x, sid, source, sample(4 * MiB, 10))
    before = checksum(server, sid, source)
    fork = getattr(x.VDI, op)(source, {})
    write(server, x, sid, source, sample(4 * MiB, 11))
    assert checksum(server, sid, fork) == before
    assert checksum(server, sid, source) == sha(sample(4 * MiB, 11))
    if op == "clone":
        write(server, x, sid, fork, sample(4 * MiB, 12))
        assert checksum(server, sid, source) == sha(sample(4 * MiB, 11))


def test_chains_survive_their_parents(server: ServerProcess, x: Any, sid: str, sr: str) -> None:
    source = new_vdi(x, sr, 2 * MiB)
    write(server, x, sid, source, sample(2 * MiB, 13))
    original = checksum(server, sid, source)
    snap = x.VDI.snapshot(source, {})
    clone = x.VDI.clone(snap, {})
    x.VDI.destroy(source)
    assert checksum(server, sid, snap) == original
    x.VDI.destroy(snap)
    assert checksum(server, sid, clone) == original
    x.VDI.destroy(clone)


def test_sr_full(x: Any, sr: str) -> None:
    size = int(x.SR.get_physical_size(sr)) + MiB
    err = failure(
        x.VDI.create,
        {
            "SR": sr,
            "virtual_size": str(size),
            "type": "user",
            "sharable": False,
            "read_only": False,
            "other_config": {},
        },
    )
    assert err == ["SR_FULL", str(size), err[2]] and int(err[2]) < size


def test_vm_with_a_disk_and_a_cd(x: Any, sr: str) -> None:
    vm = x.VM.create(vm_struct("storage e2e"))
    vdi = new_vdi(x, sr, MiB)
    disk = x.VBD.create(
        {
            "VM": vm,
            "VDI": vdi,
            "userdevice": "autodetect",
            "bootable": True,
            "mode": "RW",
            "type": "Disk",
            "empty": False,
            "other_config": {},
            "qos_algorithm_type": "",
            "qos_algorithm_params": {},
        }
    )
    cd = x.VBD.create(
        {
            "VM": vm,
            "VDI": "OpaqueRef:NULL",
            "userdevice": "3",
            "bootable": False,
            "mode": "RO",
            "type": "CD",
            "empty": True,
            "other_config": {},
            "qos_algorithm_type": "",
            "qos_algorithm_params": {},
        }
    )
    assert x.VBD.get_userdevice(disk) == "0"
    assert failure(x.VBD.eject, cd) == ["VBD_IS_EMPTY", cd]
    assert failure(x.VBD.plug, disk) == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    x.VM.destroy(vm)
    assert x.VDI.get_VBDs(vdi) == []
    x.VDI.destroy(vdi)


@pytest.fixture(scope="module")
def sim_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = Path(tmp_path_factory.mktemp("simsrv"))
    isos = base / "isos"
    isos.mkdir()
    (isos / "boot.iso").write_bytes(b"\x01" * 4096)
    srv = ServerProcess(base / "data", extra_args=["--sim-storage", "--iso-dir", str(isos)])
    srv.start()
    yield srv
    srv.stop()


def test_simulated_local_storage_and_iso_dir(sim_server: ServerProcess) -> None:
    with logged_in(sim_server.http_url) as s:
        x = s.xenapi
        sr = x.pool.get_default_SR(x.pool.get_all()[0])
        assert x.SR.get_type(sr) == "dummy"
        vdi = new_vdi(x, sr, 1 << 40)
        assert x.VDI.get_virtual_size(vdi) == str(1 << 40)
        clone = x.VDI.clone(vdi, {})
        assert x.SR.get_virtual_allocation(sr) == str(2 << 40)
        x.VDI.destroy(clone)
        (iso,) = x.SR.get_by_name_label("ISO library")
        (disk,) = x.SR.get_VDIs(iso)
        assert x.VDI.get_location(disk) == "boot.iso"
        reply = get_raw(sim_server, s._session, disk)
        assert reply.body == b"\x01" * 4096
