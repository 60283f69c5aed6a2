"""Events and tasks in a running server: long polls and disconnects, shutdown, the GC job."""

from __future__ import annotations

import asyncio
import time
import xmlrpc.client
from pathlib import Path

import pytest

from openxapi.api import gc
from openxapi.api.context import CallContext
from openxapi.api.events import EventHub
from openxapi.api.tasks import tasks_of
from openxapi.server.app import App
from openxapi.spec.values import from_timestamp
from tests.server.test_app import _config


async def _open(tmp_path: Path) -> tuple[App, EventHub, str]:
    app = App(_config(tmp_path / "d"), root_password="pw")
    await app.start()
    assert app.state is not None
    hub = app.state.extras["events"]
    assert isinstance(hub, EventHub)
    session = await asyncio.get_running_loop().run_in_executor(None, _login, app.config.http_port)
    return app, hub, session


def _login(port: int) -> str:
    with xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}") as proxy:
        reply = proxy.session.login_with_password("root", "pw")
    value = reply["Value"]
    assert isinstance(value, str)
    return value


async def _until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def _poll_request(session: str, timeout: float) -> bytes:
    body = xmlrpc.client.dumps((session, ["no_such_class"], "", timeout), "event.from")
    data = body.encode()
    head = f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode()
    return head + data


async def test_a_client_that_disconnects_frees_its_waiter(tmp_path: Path) -> None:
    app, hub, session = await _open(tmp_path)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", app.config.http_port)
        writer.write(_poll_request(session, 60.0))
        await writer.drain()
        await _until(lambda: hub.waiting == 1)
        writer.close()
        await _until(lambda: hub.waiting == 0)
    finally:
        await app.stop()


async def test_stop_answers_waiting_calls_at_once(tmp_path: Path) -> None:
    app, hub, session = await _open(tmp_path)
    reader, writer = await asyncio.open_connection("127.0.0.1", app.config.http_port)
    try:
        writer.write(_poll_request(session, 60.0))
        await writer.drain()
        await _until(lambda: hub.waiting == 1)
        t0 = time.monotonic()
        await app.stop()
        assert time.monotonic() - t0 < 3
        reply = await asyncio.wait_for(reader.read(), 5)
        assert reply.startswith(b"HTTP/1.1 200") and b"<name>token</name>" in reply
    finally:
        writer.close()


async def test_the_gc_job_removes_old_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gc, "GC_INTERVAL", 0.05)
    app, _, _ = await _open(tmp_path)
    try:
        assert app.state is not None
        store = app.state.store
        tasks = tasks_of(app.state)
        old = tasks.create("old", "", CallContext())
        long_ago = from_timestamp(time.time() - 10_000)
        store.update("task", old, {"status": "success", "created": long_ago, "finished": long_ago})
        await _until(lambda: store.get("task", old) is None)
    finally:
        await app.stop()
