"""Role-based access control seen by real clients, with accounts made by ``openxapi user``.

A read-only account reads everything and is refused every message its role lacks; a
vm-admin does VM work but not pool work; messages with an empty role list are root's.
The accounts are created with the command line while the server runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import XenAPI

from openxapi.spec.model import Message, load
from tests.e2e.test_sdk_support import (
    RawXmlRpc,
    dummy_args,
    failure,
    jsonrpc,
    logged_in,
    login_works,
    run_cli,
    vm_struct,
    wait_for,
)
from tests.serverproc import ROOT_PASSWORD, ServerProcess

pytestmark = pytest.mark.e2e

API = load()
ACCOUNTS = {"reader": "read-only", "vmadmin": "vm-admin", "pooladmin": "pool-admin"}
PASSWORDS = {name: f"pw-{name}-secret" for name in ACCOUNTS}
READ_CLASSES = [
    "pool",
    "host",
    "host_metrics",
    "host_cpu",
    "VM",
    "VM_metrics",
    "role",
    "subject",
    "network",
    "SR",
    "task",
]
DENIED_PREFIX = "No permission in user session. (Roles with this permission: "


def with_session(role: str | None) -> list[Message]:
    """Messages taking a session whose roles lack ``role`` (None: whose role list is empty)."""
    out = []
    for m in sorted(API.messages.values(), key=lambda m: m.wire_name):
        if not m.session:
            continue
        if (role is None and not m.roles) or (role is not None and role not in m.roles):
            out.append(m)
    return out


def denial_problem(description: list[str], msg: Message) -> str | None:
    """Why ``description`` is not the reference's RBAC_PERMISSION_DENIED for ``msg``."""
    if len(description) != 3 or description[0] != "RBAC_PERMISSION_DENIED":
        return f"{msg.wire_name}: {description}"
    if description[1] != msg.wire_name:
        return f"{msg.wire_name}: permission named {description[1]!r}"
    text = description[2]
    if not (text.startswith(DENIED_PREFIX) and text.endswith(")")):
        return f"{msg.wire_name}: text {text!r}"
    listed = {r for r in text[len(DENIED_PREFIX) : -1].split(", ") if r}
    if listed != set(msg.roles):
        return f"{msg.wire_name}: roles listed {sorted(listed)} != {sorted(msg.roles)}"
    return None


def expect_all_denied(url: str, session: str, messages: list[Message]) -> int:
    """Call every message (sync, and Async where it exists); all must be denied."""
    raw = RawXmlRpc(url)
    problems: list[str] = []
    calls = 0
    try:
        for msg in messages:
            args = dummy_args(msg, API)
            names = [msg.wire_name] + ([f"Async.{msg.wire_name}"] if msg.is_async else [])
            for name in names:
                reply = raw.call(name, session, *args)
                calls += 1
                if reply.get("Status") != "Failure":
                    problems.append(f"{name}: answered {reply!r}")
                    continue
                problem = denial_problem(reply["ErrorDescription"], msg)
                if problem:
                    problems.append(problem if name == msg.wire_name else f"Async {problem}")
    finally:
        raw.close()
    assert not problems, f"{len(problems)} not denied, e.g.:\n" + "\n".join(problems[:25])
    return calls


@pytest.fixture(scope="module")
def accounts(server: ServerProcess) -> dict[str, str]:
    """Accounts added with the command line while the server runs; usable within 10 s."""
    for name, role in ACCOUNTS.items():
        run_cli(server.data_dir, "add", name, "--role", role, "--password", PASSWORDS[name])
    for name in ACCOUNTS:
        assert wait_for(lambda n=name: login_works(server.http_url, n, PASSWORDS[n]), 10.0), name
    return PASSWORDS


@pytest.fixture
def reader(server: ServerProcess, accounts: dict[str, str]) -> Iterator[XenAPI.Session]:
    with logged_in(server.http_url, "reader", accounts["reader"]) as s:
        yield s


def test_read_only_account_reads(reader: XenAPI.Session) -> None:
    x = reader.xenapi
    ref = reader._session
    rec = x.session.get_record(ref)
    assert rec["is_local_superuser"] is False
    assert rec["auth_user_name"] == "reader"
    assert rec["auth_user_sid"] == "local:reader"
    subject = x.subject.get_record(rec["subject"])
    assert subject["subject_identifier"] == "local:reader"
    assert "VM.get_record" in rec["rbac_permissions"]
    assert "VM.create" not in rec["rbac_permissions"]
    for cname in READ_CLASSES:
        records = getattr(x, cname).get_all_records()
        for r, v in list(records.items())[:1]:
            assert getattr(x, cname).get_record(r) == v
            assert getattr(x, cname).get_uuid(r) == v["uuid"]
    host = x.host.get_all()[0]
    assert x.host.get_software_version(host)["product_brand"] == "openxapi"
    assert isinstance(x.host.get_servertime(host).value, str)
    assert x.VM.get_all_records_where('field "is_control_domain" = "true"')
    task = x.task.create("reader's task", "")
    x.task.destroy(task)


def test_read_only_account_is_denied_every_write(
    server: ServerProcess, reader: XenAPI.Session
) -> None:
    messages = with_session("read-only")
    assert len(messages) > 500
    calls = expect_all_denied(server.http_url, reader._session, messages)
    assert calls > len(messages)


def test_read_only_denials_through_the_sdk(reader: XenAPI.Session) -> None:
    x = reader.xenapi
    vm = x.VM.get_all()[0]
    err = failure(x.VM.set_name_label, vm, "renamed")
    assert err == [
        "RBAC_PERMISSION_DENIED",
        "VM.set_name_label",
        DENIED_PREFIX + ", ".join(API.messages["VM.set_name_label"].roles) + ")",
    ]
    assert failure(x.VM_set_name_label, vm, "renamed")[:2] == [
        "RBAC_PERMISSION_DENIED",
        "VM.set_name_label",
    ]
    assert failure(x.Async.VM.destroy, vm)[:2] == ["RBAC_PERMISSION_DENIED", "VM.destroy"]
    assert x.VM.get_name_label(vm) != "renamed"


def test_read_only_denials_over_jsonrpc(server: ServerProcess, reader: XenAPI.Session) -> None:
    messages = with_session("read-only")
    sample = messages[::12] + [
        API.messages[w] for w in ("VM.create", "pool.set_name_label", "host.get_sched_gran")
    ]
    for i, msg in enumerate(sample):
        reply = jsonrpc(
            server.http_url,
            msg.wire_name,
            [reader._session, *dummy_args(msg, API, "json")],
            req_id=i,
        )
        assert reply.get("jsonrpc") == "2.0" and reply.get("id") == i, reply
        assert "result" not in reply, reply
        error = reply["error"]
        assert error["code"] == 1
        problem = denial_problem([error["message"], *error["data"]], msg)
        assert problem is None, problem
    reads = jsonrpc(server.http_url, "VM.get_all_records", [reader._session])
    assert isinstance(reads["result"], dict) and reads["result"]


def test_vm_admin_does_vm_work_but_not_pool_work(
    server: ServerProcess, accounts: dict[str, str]
) -> None:
    with logged_in(server.http_url, "vmadmin", accounts["vmadmin"]) as s:
        x = s.xenapi
        vm = x.VM.create(vm_struct("made by vm-admin"))
        x.VM.set_name_label(vm, "renamed by vm-admin")
        x.VM.add_tags(vm, "mine")
        x.VM.add_to_other_config(vm, "owner", "vmadmin")
        assert x.VM.get_name_label(vm) == "renamed by vm-admin"
        x.VM.destroy(vm)
        pool = x.pool.get_all()[0]
        host = x.host.get_all()[0]
        for fn, args, name in (
            (x.pool.set_name_label, (pool, "no"), "pool.set_name_label"),
            (x.host.set_name_label, (host, "no"), "host.set_name_label"),
            (x.pool.add_to_other_config, (pool, "k", "v"), "pool.add_to_other_config"),
        ):
            err = failure(fn, *args)
            assert denial_problem(err, API.messages[name]) is None, err
        denied = with_session("vm-admin")
        assert {"pool.set_name_label", "host.shutdown"} <= {m.wire_name for m in denied}
        expect_all_denied(server.http_url, s._session, denied)


def test_empty_role_messages_are_root_only(server: ServerProcess, accounts: dict[str, str]) -> None:
    root_only = with_session(None)
    assert "host.get_sched_gran" in {m.wire_name for m in root_only}
    assert "session.change_password" not in {m.wire_name for m in root_only}
    with logged_in(server.http_url, "pooladmin", accounts["pooladmin"]) as s:
        x = s.xenapi
        pool = x.pool.get_all()[0]
        before = x.pool.get_name_label(pool)
        x.pool.set_name_label(pool, "pool-admin was here")
        x.pool.set_name_label(pool, before)
        expect_all_denied(server.http_url, s._session, root_only)
    with logged_in(server.http_url) as root:
        x = root.xenapi
        err = failure(x.session.change_password, "not the password", "whatever")
        assert err[0] == "SESSION_AUTHENTICATION_FAILED"
        host = x.host.get_all()[0]
        try:
            x.host.get_sched_gran(host)
        except XenAPI.Failure as e:
            assert e.details[0] != "RBAC_PERMISSION_DENIED", e.details


def test_role_change_needs_no_restart(server: ServerProcess, accounts: dict[str, str]) -> None:
    """Removing and re-adding an account with another role changes what it may do."""
    name, pw = "shifter", "pw-shifter"
    run_cli(server.data_dir, "add", name, "--role", "read-only", "--password", pw)
    assert wait_for(lambda: login_works(server.http_url, name, pw), 10.0)
    with logged_in(server.http_url, name, pw) as s:
        assert failure(s.xenapi.VM.create, vm_struct("no"))[0] == "RBAC_PERMISSION_DENIED"
    run_cli(server.data_dir, "remove", name)
    assert wait_for(lambda: not login_works(server.http_url, name, pw), 10.0)
    run_cli(server.data_dir, "add", name, "--role", "vm-admin", "--password", pw)
    t0 = time.monotonic()
    assert wait_for(lambda: login_works(server.http_url, name, pw), 10.0)
    assert time.monotonic() - t0 < 10.0
    with logged_in(server.http_url, name, pw) as s:
        vm = s.xenapi.VM.create(vm_struct("now allowed"))
        s.xenapi.VM.destroy(vm)


def test_any_account_changes_its_own_password(server: ServerProcess) -> None:
    """rulings §9: session.change_password works for every account, on its own password."""
    name, pw = "selfservice", "pw-self-1"
    run_cli(server.data_dir, "add", name, "--role", "read-only", "--password", pw)
    assert wait_for(lambda: login_works(server.http_url, name, pw), 10.0)
    with logged_in(server.http_url, name, pw) as s:
        err = failure(s.xenapi.session.change_password, "wrong", "pw-self-2")
        assert err[0] == "SESSION_AUTHENTICATION_FAILED"
        assert s.xenapi.session.change_password(pw, "pw-self-2") == ""
    assert login_works(server.http_url, name, "pw-self-2")
    assert not login_works(server.http_url, name, pw)
    assert login_works(server.http_url, "root", ROOT_PASSWORD)
