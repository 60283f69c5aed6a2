"""Durability of a real server process: acknowledged writes survive SIGKILL, a clean stop
keeps everything, logins are accepted within 5 s of start, one server per data directory.

Clients are threads, each with its own XML-RPC connection and session; every write they
see acknowledged is recorded, and after a crash and restart each must be there.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
import xmlrpc.client
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from openxapi.spec import types as T
from openxapi.spec.model import NULL_REF, load
from tests.serverproc import ROOT_PASSWORD, ServerProcess

pytestmark = pytest.mark.e2e

API = load()
VM_FIELDS = [f.name for f in API.classes["VM"].fields]
CLIENTS = 4
ACKS_BEFORE_KILL = 150
LOGIN_DEADLINE = 5.0


class Failure(Exception):
    """A call answered with Status Failure."""


class _Transport(xmlrpc.client.Transport):
    """Plain HTTP with a socket timeout, so a dead server cannot hang a client."""

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        conn = super().make_connection(host)
        conn.timeout = 10
        return conn


@contextmanager
def proxy(url: str) -> Iterator[xmlrpc.client.ServerProxy]:
    p = xmlrpc.client.ServerProxy(url, transport=_Transport(), allow_none=True)
    try:
        yield p
    finally:
        p("close")()


def ok(reply: dict[str, Any]) -> Any:
    if reply.get("Status") != "Success":
        raise Failure(reply.get("ErrorDescription"))
    return reply.get("Value")


def login(p: xmlrpc.client.ServerProxy, originator: str = "durability") -> str:
    ref = ok(p.session.login_with_password("root", ROOT_PASSWORD, "1.0", originator))
    assert isinstance(ref, str)
    return ref


def _wire_empty(t: T.Type) -> Any:
    if isinstance(t, T.Prim):
        return {"string": "", "int": "0", "float": 0.0, "bool": False}.get(
            t.name, "19700101T00:00:00Z"
        )
    if isinstance(t, T.Ref):
        return NULL_REF
    if isinstance(t, T.Enum):
        return API.enums[t.name][0]
    if isinstance(t, T.Set):
        return []
    return {}


def vm_args(label: str) -> dict[str, Any]:
    """A small VM as a client would create it (every required constructor member)."""
    args = {
        f.name: _wire_empty(f.type)
        for f in API.classes["VM"].fields
        if f.in_constructor and not f.has_default
    }
    mem = str(256 << 20)
    args.update(
        name_label=label,
        memory_static_max=mem,
        memory_dynamic_max=mem,
        memory_dynamic_min=mem,
        memory_static_min=mem,
        VCPUs_max="1",
        VCPUs_at_startup="1",
        other_config={"durability": "yes"},
    )
    return args


@dataclass
class Ledger:
    """What every client saw acknowledged, and what was in flight when the server died."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    created: dict[str, str] = field(default_factory=dict)  # ref -> label at creation
    renamed: dict[str, str] = field(default_factory=dict)
    configured: dict[str, str] = field(default_factory=dict)  # ref -> other_config["k"]
    destroyed: set[str] = field(default_factory=set)
    attempted_labels: set[str] = field(default_factory=set)
    in_flight: dict[int, tuple[str, str]] = field(default_factory=dict)  # client -> (op, ref)
    failures: list[str] = field(default_factory=list)
    acks: int = 0

    def ack(self) -> None:
        with self.lock:
            self.acks += 1


def client(tid: int, url: str, ledger: Ledger, stop: threading.Event) -> None:
    """Create, rename, configure and sometimes destroy VMs until the server goes away."""
    try:
        with proxy(url) as p:
            session = login(p, f"client-{tid}")
            for i in itertools.count():
                if stop.is_set():
                    return
                label = f"dur-{tid}-{i}"
                with ledger.lock:
                    ledger.attempted_labels.add(label)
                ledger.in_flight[tid] = ("create", label)
                ref = ok(p.VM.create(session, vm_args(label)))
                with ledger.lock:
                    ledger.created[ref] = label
                ledger.ack()
                ledger.in_flight[tid] = ("rename", ref)
                ok(p.VM.set_name_label(session, ref, label + "-renamed"))
                ledger.renamed[ref] = label + "-renamed"
                ledger.ack()
                ledger.in_flight[tid] = ("configure", ref)
                ok(p.VM.add_to_other_config(session, ref, "k", label))
                ledger.configured[ref] = label
                ledger.ack()
                if i % 3 == 2:
                    ledger.in_flight[tid] = ("destroy", ref)
                    ok(p.VM.destroy(session, ref))
                    ledger.destroyed.add(ref)
                    ledger.ack()
                ledger.in_flight.pop(tid, None)
    except Failure as e:
        ledger.failures.append(f"client {tid}: {e}")
    except (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError):
        if not stop.is_set():
            ledger.failures.append(f"client {tid}: connection lost before the kill")


def timed_start(srv: ServerProcess) -> float:
    """Start the server and log in; seconds from process start to the first session."""
    t0 = time.monotonic()
    srv.start()
    with proxy(srv.http_url) as p:
        login(p)
    return time.monotonic() - t0


def snapshot(url: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every VM and VM_metrics record, as a client sees them."""
    with proxy(url) as p:
        s = login(p)
        vms = ok(p.VM.get_all_records(s))
        metrics = ok(p.VM_metrics.get_all_records(s))
        ok(p.session.logout(s))
    return vms, metrics


def check_consistent(vms: dict[str, dict[str, Any]], metrics: dict[str, Any]) -> None:
    """No half-written object: full records, references to objects that exist."""
    uuids: set[str] = set()
    for ref, rec in vms.items():
        assert list(rec) == VM_FIELDS, ref
        assert rec["uuid"] not in uuids
        uuids.add(rec["uuid"])
        if rec["metrics"] != NULL_REF:
            assert rec["metrics"] in metrics, (ref, rec["metrics"])
        if rec["name_label"].startswith(("dur-", "keep-")):
            assert rec["VBDs"] == [] and rec["VIFs"] == [], ref
            assert rec["other_config"].get("durability") == "yes", ref
            assert rec["power_state"] == "Halted"
            assert int(rec["memory_static_max"]) == 256 << 20
    owned = [rec["metrics"] for rec in vms.values() if rec["metrics"] != NULL_REF]
    assert len(owned) == len(set(owned)), "two VMs share a VM_metrics"
    assert set(metrics) <= set(owned), "a VM_metrics outlived or preceded its VM"


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data")
    first_start = timed_start(srv)
    assert first_start < LOGIN_DEADLINE
    ledger = Ledger()
    stop = threading.Event()
    threads = [
        threading.Thread(target=client, args=(i, srv.http_url, ledger, stop), daemon=True)
        for i in range(CLIENTS)
    ]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while ledger.acks < ACKS_BEFORE_KILL and time.monotonic() < deadline:
            assert not ledger.failures, ledger.failures
            time.sleep(0.01)
        busy = sum(t.is_alive() for t in threads)
        stop.set()
        srv.kill()
    finally:
        stop.set()
        srv.kill()
        for t in threads:
            t.join(15)
    assert not ledger.failures, ledger.failures
    assert ledger.acks >= ACKS_BEFORE_KILL
    assert busy == CLIENTS, "the kill must land while every client is writing"

    again = ServerProcess(srv.data_dir)
    restart = timed_start(again)
    try:
        vms, metrics = snapshot(again.http_url)
    finally:
        assert again.stop() == 0
    assert restart < LOGIN_DEADLINE

    check_consistent(vms, metrics)
    unsure = {ref for op, ref in ledger.in_flight.values() if op != "create"}
    for ref, label in ledger.created.items():
        if ref in ledger.destroyed:
            assert ref not in vms, f"acknowledged destroy of {label} lost"
            continue
        if ref in unsure and ref not in vms:
            continue  # a destroy was in flight
        assert ref in vms, f"acknowledged create of {label} lost"
        rec = vms[ref]
        if ref in ledger.renamed:
            assert rec["name_label"] == ledger.renamed[ref]
        else:
            assert rec["name_label"] in (label, label + "-renamed")
        if ref in ledger.configured:
            assert rec["other_config"]["k"] == ledger.configured[ref]
        else:
            assert rec["other_config"].get("k") in (None, label)
    ours = {ref for ref, rec in vms.items() if rec["name_label"].startswith("dur-")}
    for ref in ours - set(ledger.created):
        base = vms[ref]["name_label"].removesuffix("-renamed")
        assert base in ledger.attempted_labels, vms[ref]["name_label"]
    assert len(ours - set(ledger.created)) <= CLIENTS


def test_clean_shutdown_keeps_everything(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data")
    srv.start()
    try:
        with proxy(srv.http_url) as p:
            s = login(p)
            refs = [ok(p.VM.create(s, vm_args(f"keep-{i}"))) for i in range(5)]
            ok(p.VM.set_name_label(s, refs[0], "renamed"))
            ok(p.VM.add_to_other_config(s, refs[1], "k", "v"))
            ok(p.VM.destroy(s, refs[2]))
        before, _ = snapshot(srv.http_url)
    finally:
        code = srv.stop()
    assert code == 0
    assert not (srv.data_dir / "xapi.sock").exists()

    again = ServerProcess(srv.data_dir)
    again.start()
    try:
        after, metrics = snapshot(again.http_url)
    finally:
        assert again.stop() == 0
    check_consistent(after, metrics)
    assert after[refs[0]]["name_label"] == "renamed"
    assert after[refs[1]]["other_config"]["k"] == "v"
    assert refs[2] not in after
    assert set(after) == set(before)
    for ref in refs:
        assert after.get(ref) == before.get(ref)


def test_second_server_on_the_same_data_dir_refuses(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data")
    srv.start()
    try:
        rival = ServerProcess(srv.data_dir)
        with pytest.raises(RuntimeError):
            rival.start()
        assert "another openxapi server uses" in "".join(rival.output)
        with proxy(srv.http_url) as p:
            login(p)
    finally:
        assert srv.stop() == 0
