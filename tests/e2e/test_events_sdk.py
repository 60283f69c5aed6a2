"""Events with the XenAPI SDK over real sockets: event.from (full sync, changes made by
another client, tokens across restarts and crashes, logout while waiting), event.inject and
the legacy register / next API."""

from __future__ import annotations

import threading
import time
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import XenAPI  # type: ignore[import-untyped]

from tests.serverproc import ROOT_PASSWORD, ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed file <_io.TextIOWrapper:ResourceWarning"),
]

GIB = 1024**3


def login(url: str, originator: str = "e2e-events") -> Any:
    session = XenAPI.Session(url)
    session.xenapi.login_with_password("root", ROOT_PASSWORD, "1.0", originator)
    return session


def close(session: Any) -> None:
    try:
        session.xenapi.session.logout()
    finally:
        session("close")()


@pytest.fixture
def sdk(server: ServerProcess) -> Iterator[Any]:
    session = login(server.http_url)
    yield session
    close(session)


def event_from(x: Any, classes: list[str], token: str, timeout: float) -> dict[str, Any]:
    out: dict[str, Any] = getattr(x.event, "from")(classes, token, timeout)
    return out


def vm_args(label: str) -> dict[str, Any]:
    return {
        "name_label": label,
        "name_description": "",
        "user_version": "1",
        "is_a_template": False,
        "affinity": "OpaqueRef:NULL",
        "memory_static_max": str(GIB),
        "memory_dynamic_max": str(GIB),
        "memory_dynamic_min": str(GIB),
        "memory_static_min": str(GIB),
        "VCPUs_params": {},
        "VCPUs_max": "1",
        "VCPUs_at_startup": "1",
        "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart",
        "actions_after_crash": "restart",
        "PV_bootloader": "",
        "PV_kernel": "",
        "PV_ramdisk": "",
        "PV_args": "",
        "PV_bootloader_args": "",
        "PV_legacy_args": "",
        "HVM_boot_policy": "BIOS order",
        "HVM_boot_params": {},
        "platform": {},
        "PCI_bus": "",
        "other_config": {},
        "recommendations": "",
    }


class Background:
    """A call run on a thread, so the test can act while it blocks."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn, *args), daemon=True)
        self.thread.start()

    def _run(self, fn: Any, *args: Any) -> None:
        try:
            self.result = fn(*args)
        except BaseException as e:
            self.error = e

    def join(self, timeout: float = 10.0) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the call is still blocked"
        if self.error is not None:
            raise self.error
        return self.result


def test_an_empty_token_gives_every_object(sdk: Any) -> None:
    x = sdk.xenapi
    vm = x.VM.create(vm_args("full-sync"))
    reply = event_from(x, ["*"], "", 0.0)
    assert set(reply) == {"events", "valid_ref_counts", "token"}
    token = reply["token"]
    assert len(token) == 41 and token[20] == "," and token.replace(",", "").isdigit()
    counts = reply["valid_ref_counts"]
    assert isinstance(counts["task"], int) and isinstance(counts["vm"], int)  # <i4> on the wire
    assert counts["vm"] == len(x.VM.get_all())
    by_ref = {e["ref"]: e for e in reply["events"]}
    event = by_ref[vm]
    assert event["class"] == "vm" and event["operation"] == "add"
    assert event["timestamp"] == "0.0"
    assert event["snapshot"] == x.VM.get_record(vm)
    assert {e["class"] for e in reply["events"]}.isdisjoint({"session", "user", "secret"})
    assert all(e["class"] == e["class"].lower() for e in reply["events"])


def test_a_change_by_another_client_wakes_a_waiting_call(server: ServerProcess, sdk: Any) -> None:
    x = sdk.xenapi
    vm = x.VM.create(vm_args("watched"))
    token = event_from(x, ["vm"], "", 0.0)["token"]
    waiting = Background(event_from, x, ["VM"], token, 30.0)
    time.sleep(0.2)
    assert waiting.thread.is_alive()
    other = login(server.http_url, "e2e-other")
    try:
        t0 = time.monotonic()
        other.xenapi.VM.set_name_label(vm, "changed elsewhere")
        reply = waiting.join()
        assert time.monotonic() - t0 < 2
    finally:
        close(other)
    (event,) = reply["events"]
    assert (event["operation"], event["ref"]) == ("mod", vm)
    assert event["snapshot"]["name_label"] == "changed elsewhere"
    assert reply["token"] > token


def test_a_timeout_returns_an_empty_batch(sdk: Any) -> None:
    x = sdk.xenapi
    token = event_from(x, ["vm"], "", 0.0)["token"]
    t0 = time.monotonic()
    reply = event_from(x, ["vm"], token, 0.5)
    assert 0.4 < time.monotonic() - t0 < 5
    assert reply["events"] == [] and reply["token"] >= token


def test_errors_of_event_from(sdk: Any) -> None:
    x = sdk.xenapi
    with pytest.raises(XenAPI.Failure) as e:
        event_from(x, ["vm"], "not-a-token", 0.0)
    assert e.value.details == ["EVENT_FROM_TOKEN_PARSE_FAILURE", "not-a-token"]
    with pytest.raises(XenAPI.Failure) as e:
        event_from(x, ["/OpaqueRef:x"], "", 0.0)
    assert e.value.details == ["EVENT_SUBSCRIPTION_PARSE_FAILURE", "/OpaqueRef:x"]


def test_inject_then_from(sdk: Any) -> None:
    x = sdk.xenapi
    pool = x.pool.get_all()[0]
    token = x.event.inject("pool", pool)
    reply = event_from(x, ["pool"], token, 5.0)
    assert [(e["operation"], e["ref"]) for e in reply["events"]] == [("mod", pool)]


def test_logout_by_another_client_ends_a_waiting_call(server: ServerProcess) -> None:
    victim = login(server.http_url, "e2e-victim")
    ref = victim._session
    token = event_from(victim.xenapi, ["vm"], "", 0.0)["token"]
    # The raw call (the SDK's own wrapper would log in again and retry).
    waiting = Background(getattr(victim, "event.from"), ref, ["vm"], token, 60.0)
    time.sleep(0.2)
    with xmlrpc.client.ServerProxy(server.http_url) as other:
        assert other.session.logout(ref)["Status"] == "Success"
    reply = waiting.join()
    assert reply == {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", ref]}
    victim("close")()


def test_the_sdk_logs_in_again_after_session_invalid(server: ServerProcess) -> None:
    session = login(server.http_url, "e2e-relogin")
    try:
        first = session._session
        token = event_from(session.xenapi, ["vm"], "", 0.0)["token"]
        waiting = Background(event_from, session.xenapi, ["vm"], token, 1.0)
        time.sleep(0.2)
        with xmlrpc.client.ServerProxy(server.http_url) as other:
            other.session.logout(first)
        reply = waiting.join()
        assert reply["events"] == [] or all(e["class"] == "vm" for e in reply["events"])
        assert session._session != first
    finally:
        close(session)


def test_legacy_register_and_next(server: ServerProcess, sdk: Any) -> None:
    x = sdk.xenapi
    with pytest.raises(XenAPI.Failure) as e:
        x.event.next()
    assert e.value.details[0] == "SESSION_NOT_REGISTERED"
    assert e.value.details[1].startswith("trackid=")
    x.event.register(["vm"])
    waiting = Background(x.event.next)
    time.sleep(0.2)
    other = login(server.http_url, "e2e-other")
    try:
        vm = other.xenapi.VM.create(vm_args("legacy"))
    finally:
        close(other)
    events = waiting.join()
    assert {e["ref"] for e in events} == {vm}
    assert events[0]["operation"] == "add" and events[0]["class"] == "vm"
    assert int(events[0]["id"]) <= int(x.event.get_current_id())
    x.event.unregister(["vm"])


def _restart_case(tmp_path: Path, crash: bool) -> None:
    srv = ServerProcess(tmp_path / "data")
    srv.start()
    try:
        session = login(srv.http_url)
        x = session.xenapi
        kept = x.VM.create(vm_args("kept"))
        doomed = x.VM.create(vm_args("doomed"))
        token = event_from(x, ["vm"], "", 0.0)["token"]
        x.VM.set_name_label(kept, "renamed before the restart")
        x.VM.destroy(doomed)
        added = x.VM.create(vm_args("added"))
        session("close")()
        if crash:
            srv.kill()
        else:
            srv.stop()
        srv.start()
        session = login(srv.http_url)
        x = session.xenapi
        reply = event_from(x, ["vm"], token, 5.0)
        got = {e["ref"]: e for e in reply["events"]}
        assert got[kept]["operation"] == "mod"
        assert got[kept]["snapshot"]["name_label"] == "renamed before the restart"
        assert got[doomed]["operation"] == "del" and "snapshot" not in got[doomed]
        assert got[added]["operation"] == "add"
        # And the token it returns carries on from there.
        later = event_from(x, ["vm"], reply["token"], 0.0)
        assert later["events"] == []
        x.VM.set_name_label(kept, "after")
        again = event_from(x, ["vm"], reply["token"], 5.0)
        assert [(e["operation"], e["ref"]) for e in again["events"]] == [("mod", kept)]
        close(session)
    finally:
        srv.stop()


def test_a_token_from_before_a_restart_still_works(tmp_path: Path) -> None:
    _restart_case(tmp_path, crash=False)


def test_a_token_from_before_a_crash_still_works(tmp_path: Path) -> None:
    _restart_case(tmp_path, crash=True)
