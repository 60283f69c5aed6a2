"""Logins through the SDK: failures, the failed-login delay, and root's password change.

Each test here changes or stresses authentication, so the module runs its own servers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_sdk_support import failure, logged_in, login_works, sdk
from tests.serverproc import ROOT_PASSWORD, ServerProcess

pytestmark = pytest.mark.e2e

AUTH_FAIL_DELAY = 2.0


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose failed logins wait AUTH_FAIL_DELAY seconds, as xapi's wait 5 s."""
    srv = ServerProcess(
        Path(tmp_path_factory.mktemp("slow")),
        extra_args=["--auth-fail-delay", str(AUTH_FAIL_DELAY)],
    )
    srv.start()
    yield srv
    srv.stop()


def test_failed_login_error(server: ServerProcess) -> None:
    with sdk(server.http_url) as s:
        err = failure(s.xenapi.login_with_password, "root", "not the password")
        assert err[:2] == ["SESSION_AUTHENTICATION_FAILED", "root"]
        assert len(err) == 3 and err[2]
        err = failure(s.xenapi.login_with_password, "nobody", "x", "1.0", "e2e")
        assert err[:2] == ["SESSION_AUTHENTICATION_FAILED", "nobody"]
        assert s._session is None


def test_failed_login_waits_without_blocking_others(slow_server: ServerProcess) -> None:
    errors: list[list[str]] = []
    durations: list[float] = []

    def bad_login() -> None:
        t0 = time.monotonic()
        with sdk(slow_server.http_url) as s:
            errors.append(failure(s.xenapi.login_with_password, "root", "wrong"))
        durations.append(time.monotonic() - t0)

    with logged_in(slow_server.http_url) as other:
        thread = threading.Thread(target=bad_login)
        thread.start()
        time.sleep(0.3)
        assert thread.is_alive(), "the failed login answered before its delay"
        worst = 0.0
        for _ in range(5):
            t0 = time.monotonic()
            assert other.xenapi.VM.get_all_records()
            other.xenapi.host.get_all()
            worst = max(worst, time.monotonic() - t0)
        t0 = time.monotonic()
        with logged_in(slow_server.http_url) as third:
            assert third.xenapi.pool.get_all()
        worst = max(worst, time.monotonic() - t0)
        assert worst < 0.5, f"other clients waited {worst:.2f} s"
        thread.join(10)
    assert not thread.is_alive()
    assert [e[:2] for e in errors] == [["SESSION_AUTHENTICATION_FAILED", "root"]]
    assert durations[0] >= AUTH_FAIL_DELAY - 0.1


def test_root_change_password(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "srv")
    srv.start()
    try:
        url = srv.http_url
        with logged_in(url) as s:
            err = failure(s.xenapi.session.change_password, "wrong old", "new-pw-1")
            assert err[0] == "SESSION_AUTHENTICATION_FAILED"
            assert login_works(url, "root", ROOT_PASSWORD)
            assert s.xenapi.session.change_password(ROOT_PASSWORD, "new-pw-1") == ""
            # the session that changed it stays valid
            assert s.xenapi.pool.get_all()
        assert login_works(url, "root", "new-pw-1")
        assert not login_works(url, "root", ROOT_PASSWORD)
        with logged_in(url, "root", "new-pw-1") as s:
            s.xenapi.session.change_password("new-pw-1", "new-pw-2")
        assert login_works(url, "root", "new-pw-2")
        assert not login_works(url, "root", "new-pw-1")
        # the change is durable: a restart keeps it
        srv.stop()
        srv.start()
        assert login_works(url, "root", "new-pw-2")
    finally:
        srv.stop()
