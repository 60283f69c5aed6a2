"""Database replication to metadata VDIs and database sessions (VDI.open_database)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from openxapi.api.vm_domains import stop_domains
from openxapi.db import image
from tests.api.handlers.dr_kit import flush, replicated_sr
from tests.api.handlers.vm_kit import MIB, dom0, new_vm, rec
from tests.api.storage_kit import new_sr, new_vdi
from tests.api.world import World


@pytest.fixture
async def w(world: World) -> AsyncIterator[World]:
    yield world
    await stop_domains(world.state)


async def test_replication_keeps_a_copy_on_a_metadata_vdi(w: World) -> None:
    sr, vdi = await replicated_sr(w)
    v = rec(w, "VDI", vdi)
    assert (v["name_label"], v["type"], v["metadata_latest"]) == (
        "Metadata for DR",
        "metadata",
        True,
    )
    assert v["metadata_of_pool"] == w.state.pool_ref
    assert v["sm_config"] == {"type": "raw"}
    (vbd,) = v["VBDs"]
    assert rec(w, "VBD", vbd)["VM"] == dom0(w)
    assert rec(w, "VBD", vbd)["currently_attached"] is True
    await w.call("SR.enable_database_replication", w.root, sr)  # again: nothing new
    assert rec(w, "VDI", vdi)["VBDs"] == [vbd]
    assert len(rec(w, "SR", sr)["VDIs"]) == 1

    vm = await new_vm(w, name_label="made later")
    db = await w.call("VDI.open_database", w.root, vdi)
    assert await w.call("VM.get_by_name_label", db, "made later") == []
    await w.call("session.logout", db)
    for _ in range(60):  # the copy follows within moments, with no call to ask for it
        await asyncio.sleep(0.1)
        db = await w.call("VDI.open_database", w.root, vdi)
        found = await w.call("VM.get_by_name_label", db, "made later")
        await w.call("session.logout", db)
        if found:
            break
    assert found == [vm]


async def test_a_database_session_reads_the_copy_only(w: World) -> None:
    _sr, vdi = await replicated_sr(w)
    vm = await new_vm(w, name_label="before")
    await flush(w)
    await w.call("VM.set_name_label", w.root, vm, "after")
    db = await w.call("VDI.open_database", w.root, vdi)
    s = rec(w, "session", db)
    assert (s["auth_user_name"], s["auth_user_sid"], s["is_local_superuser"]) == (
        "disaster-recovery",
        "readonly-sid",
        False,
    )
    assert "VM.get_all_records" in s["rbac_permissions"]
    assert await w.call("VM.get_name_label", db, vm) == "before"
    records = await w.call("VM.get_all_records_where", db, 'field "name__label" = "before"')
    assert list(records) == [vm]
    assert await w.fail("VM.set_name_label", db, vm, "x") == [
        "RBAC_PERMISSION_DENIED",
        "VM.set_name_label",
        "No permission in user session. (Roles with this permission: "
        "pool-admin, pool-operator, vm-power-admin, vm-admin)",
    ]
    assert (await w.fail("VM.get_allowed_VBD_devices", db, vm))[0] == "OPERATION_NOT_ALLOWED"
    assert await w.call("session.get_uuid", db, db) == s["uuid"]
    await w.call("session.logout", db)
    assert await w.fail("VM.get_name_label", db, vm) == ["SESSION_INVALID", db]
    assert await w.call("VM.get_name_label", w.root, vm) == "after"


async def test_open_database_errors(w: World) -> None:
    sr = await new_sr(w, "dummy")
    disk = await new_vdi(w, sr, MIB)
    assert await w.fail("VDI.open_database", w.root, disk) == [
        "VDI_INCOMPATIBLE_TYPE",
        disk,
        "user",
    ]
    blank = await new_vdi(w, sr, MIB, type="metadata")
    assert await w.fail("VDI.open_database", w.root, blank) == [
        "COULD_NOT_IMPORT_DATABASE",
        "the disk holds no database",
    ]
    bad = "OpaqueRef:nope"
    assert await w.fail("VDI.open_database", w.root, bad) == ["HANDLE_INVALID", "VDI", bad]


async def test_which_srs_support_replication(w: World) -> None:
    sr = await new_sr(w, "dummy")
    await w.call("SR.assert_supports_database_replication", w.root, sr)
    iso = next(r for r, v in w.store.table("SR").items() if v["type"] == "iso")
    assert await w.fail("SR.assert_supports_database_replication", w.root, iso) == [
        "SR_OPERATION_NOT_SUPPORTED",
        iso,
    ]
    (pbd,) = rec(w, "SR", sr)["PBDs"]
    w.store.update("PBD", pbd, {"currently_attached": False})
    for name in ("SR.assert_supports_database_replication", "SR.enable_database_replication"):
        assert await w.fail(name, w.root, sr) == ["SR_NO_PBDS", sr]
    w.store.update("pool", w.state.pool_ref, {"restrictions": {"restrict_dr": "true"}})
    assert await w.fail("SR.enable_database_replication", w.root, sr) == [
        "LICENCE_RESTRICTION",
        "DR",
    ]


async def test_disable_destroys_the_metadata_vdis(w: World) -> None:
    sr, vdi = await replicated_sr(w)
    await w.call("SR.disable_database_replication", w.root, sr)
    assert w.store.get("VDI", vdi) is None
    assert [v for v in w.store.table("VBD").values() if v["VDI"] == vdi] == []
    await w.call("SR.disable_database_replication", w.root, sr)  # nothing left: no error


async def test_pool_uuid_of_a_foreign_database(w: World) -> None:
    _sr, vdi = await replicated_sr(w)
    assert await w.call("VDI.read_database_pool_uuid", w.root, vdi) == ""
    await flush(w)
    # The same disk seen as another pool's (its SR brought over from elsewhere).
    w.store.update("VDI", vdi, {"metadata_of_pool": "OpaqueRef:another-pool"})
    pool_uuid = rec(w, "pool", w.state.pool_ref)["uuid"]
    assert await w.call("VDI.read_database_pool_uuid", w.root, vdi) == pool_uuid


async def test_create_from_db_file(w: World, tmp_path: Path) -> None:
    vm = await new_vm(w, name_label="in the file")
    path = tmp_path / "copy.db"
    path.write_bytes(image.dump(image.take(w.store)))
    db = await w.call("session.create_from_db_file", w.root, str(path))
    assert rec(w, "session", db)["auth_user_name"] == "db-from-file"
    assert await w.call("VM.get_name_label", db, vm) == "in the file"
    (path.parent / "junk").write_bytes(b"not a database")
    junk = await w.fail("session.create_from_db_file", w.root, str(path.parent / "junk"))
    assert junk[0] == "COULD_NOT_IMPORT_DATABASE"
    missing = await w.fail("session.create_from_db_file", w.root, str(tmp_path / "none"))
    assert missing[0] == "COULD_NOT_IMPORT_DATABASE"


async def test_replication_resumes_after_a_restart(data_dir: Path) -> None:
    from openxapi.api.dr_replication import replicated, resume_replication, stop_replication
    from tests.api.storage_kit import default_sr
    from tests.api.world import open_world

    w = await open_world(data_dir, durable=True)
    try:
        sr = await default_sr(w)
        await w.call("SR.enable_database_replication", w.root, sr)
        (vdi,) = [v for v in rec(w, "SR", sr)["VDIs"] if rec(w, "VDI", v)["type"] == "metadata"]
        vm = await new_vm(w, name_label="last words")
        await w.store.sync()
        await stop_replication(w.state)  # what the server does when it stops
        db = await w.call("VDI.open_database", w.root, vdi)  # the last copy has everything
        assert await w.call("VM.get_name_label", db, vm) == "last words"
    finally:
        await stop_domains(w.state)
        await w.close()
    w = await open_world(data_dir, durable=True)
    try:
        from openxapi.api.storage_setup import start_storage

        await start_storage(w.state)
        await resume_replication(w.state)
        assert list(replicated(w.state)) == [vdi]
        db = await w.call("VDI.open_database", w.root, vdi)
        assert await w.call("VM.get_name_label", db, vm) == "last words"
    finally:
        await stop_replication(w.state)
        await stop_domains(w.state)
        await w.close()
