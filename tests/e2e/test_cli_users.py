"""``openxapi user add/list/remove/passwd`` with and without a running server.

The server mirrors each local account as a subject record (``local:NAME`` and the refs
of its role records) and follows changes the command line makes while it runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_sdk_support import failure, logged_in, login_works, run_cli, wait_for
from tests.serverproc import ServerProcess

pytestmark = pytest.mark.e2e


def listed(data_dir: Path) -> dict[str, list[str]]:
    """``user list`` parsed: account name -> roles."""
    out = run_cli(data_dir, "list").stdout
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    return {name: roles.split(",") for name, roles in rows}


def subjects(x: Any) -> dict[str, dict[str, Any]]:
    """subject_identifier -> subject record (with its ref under ``_ref``)."""
    return {
        rec["subject_identifier"]: {**rec, "_ref": ref}
        for ref, rec in x.subject.get_all_records().items()
    }


def role_refs(x: Any) -> dict[str, str]:
    return {rec["name_label"]: ref for ref, rec in x.role.get_all_records().items()}


def test_round_trip_without_a_server(tmp_path: Path) -> None:
    d = tmp_path / "data"
    assert listed(d) == {}
    out = run_cli(d, "add", "alice", "--role", "read-only", "--password", "a-pw").stdout
    assert "alice" in out
    run_cli(d, "add", "bob", "--role", "vm-admin", "--role", "vm-operator", "--password", "b")
    assert listed(d) == {"alice": ["read-only"], "bob": ["vm-admin", "vm-operator"]}
    dup = run_cli(d, "add", "alice", "--role", "read-only", "--password", "x", check=False)
    assert dup.returncode != 0 and "alice" in dup.stderr
    bad_role = run_cli(d, "add", "carol", "--role", "superhero", "--password", "x", check=False)
    assert bad_role.returncode != 0
    run_cli(d, "passwd", "alice", "--password", "a-pw-2")
    run_cli(d, "remove", "bob")
    assert listed(d) == {"alice": ["read-only"]}
    gone = run_cli(d, "remove", "bob", check=False)
    assert gone.returncode != 0 and "bob" in gone.stderr
    nobody = run_cli(d, "passwd", "nobody", "--password", "x", check=False)
    assert nobody.returncode != 0

    # a server started afterwards knows the accounts, their roles and passwords
    srv = ServerProcess(d)
    srv.start()
    try:
        assert login_works(srv.http_url, "alice", "a-pw-2")
        assert not login_works(srv.http_url, "alice", "a-pw")
        assert not login_works(srv.http_url, "bob", "b")
        with logged_in(srv.http_url) as s:
            subs = subjects(s.xenapi)
            assert set(subs) == {"local:alice"}
            assert subs["local:alice"]["roles"] == [role_refs(s.xenapi)["read-only"]]
        assert "root" in listed(d)
        root_removal = run_cli(d, "remove", "root", check=False)
        assert root_removal.returncode != 0
    finally:
        srv.stop()


def test_accounts_follow_the_cli_while_the_server_runs(server: ServerProcess) -> None:
    d = server.data_dir
    url = server.http_url
    with logged_in(url) as root:
        x = root.xenapi
        roles = role_refs(x)
        assert set(roles) >= {
            "pool-admin",
            "pool-operator",
            "vm-power-admin",
            "vm-admin",
            "vm-operator",
            "read-only",
        }

        # frank: added, then known at once when he logs in
        run_cli(d, "add", "frank", "--role", "vm-admin", "--password", "f-pw")
        assert wait_for(lambda: login_works(url, "frank", "f-pw"), 10.0)
        frank = subjects(x)["local:frank"]
        assert frank["roles"] == [roles["vm-admin"]]

        # dave added and frank removed: the server notices both by itself
        run_cli(
            d, "add", "dave", "--role", "vm-operator", "--role", "read-only", "--password", "d-pw"
        )
        run_cli(d, "remove", "frank")
        listing = listed(d)
        assert listing["dave"] == ["vm-operator", "read-only"] and "frank" not in listing
        assert "root" in listing
        assert wait_for(
            lambda: (s := subjects(x)).keys() >= {"local:dave"} and "local:frank" not in s,
            10.0,
        )
        assert failure(x.subject.get_record, frank["_ref"])[0] == "HANDLE_INVALID"
        assert not login_works(url, "frank", "f-pw")
        dave = subjects(x)["local:dave"]
        assert sorted(dave["roles"]) == sorted([roles["vm-operator"], roles["read-only"]])
        assert dave["other_config"].get("subject-name") == "dave"
        assert x.subject.get_by_uuid(dave["uuid"]) == dave["_ref"]
        assert x.subject.get_subject_identifier(dave["_ref"]) == "local:dave"
        assert login_works(url, "dave", "d-pw")
        with logged_in(url, "dave", "d-pw") as s:
            rec = s.xenapi.session.get_record(s._session)
            assert rec["subject"] == dave["_ref"]
            assert rec["auth_user_sid"] == "local:dave"
            assert rec["is_local_superuser"] is False

        # a password change takes effect for the next login
        run_cli(d, "passwd", "dave", "--password", "d-pw-2")
        assert wait_for(lambda: login_works(url, "dave", "d-pw-2"), 10.0)
        assert not login_works(url, "dave", "d-pw")
        run_cli(d, "remove", "dave")
        assert not login_works(url, "dave", "d-pw-2")


def test_data_dir_after_the_subcommand(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "openxapi.cli.main",
            "user",
            "add",
            "erin",
            "--role",
            "read-only",
            "--password",
            "e",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert listed(tmp_path) == {"erin": ["read-only"]}
