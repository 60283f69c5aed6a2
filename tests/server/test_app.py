"""The server's start and stop in-process: listeners, the data-directory lock, first start."""

from __future__ import annotations

import asyncio
import stat
import xmlrpc.client
from pathlib import Path

import pytest

from openxapi.config import Config
from openxapi.server.app import AlreadyRunning, App
from tests.serverproc import free_port


def _config(data_dir: Path) -> Config:
    return Config(
        data_dir=data_dir,
        listen="127.0.0.1",
        backend="simulator",
        http_port=free_port(),
        https_port=0,
        unix_socket=data_dir / "xapi.sock",
        auth_fail_delay=0.0,
    )


async def _login(port: int, password: str) -> dict[str, object]:
    def call() -> dict[str, object]:
        proxy = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}")
        try:
            reply: dict[str, object] = proxy.session.login_with_password("root", password)
            return reply
        finally:
            proxy("close")()

    return await asyncio.get_running_loop().run_in_executor(None, call)


async def test_start_serves_and_stop_cleans_up(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "d")
    app = App(cfg, root_password="pw")
    await app.start()
    try:
        assert app.generated_password is None
        kinds = {lst.kind: lst for lst in app.listeners}
        assert set(kinds) == {"http", "unix"}
        assert kinds["http"].port == cfg.http_port
        reply = await _login(cfg.http_port, "pw")
        assert reply["Status"] == "Success"
        assert stat.S_IMODE(cfg.socket_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(cfg.pool_secret_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(cfg.data_dir.stat().st_mode) == 0o700
    finally:
        await app.stop()
    assert not cfg.socket_path.exists()


async def test_second_server_on_the_same_data_dir_refuses(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "d")
    first = App(cfg, root_password="pw")
    await first.start()
    try:
        second = App(_config(cfg.data_dir), root_password="pw")
        with pytest.raises(AlreadyRunning):
            await second.start()
    finally:
        await first.stop()
    third = App(_config(cfg.data_dir), root_password="pw")
    await third.start()
    await third.stop()


async def test_first_start_generates_a_root_password_once(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "d")
    app = App(cfg)
    await app.start()
    try:
        generated = app.generated_password
        assert generated
        assert (await _login(cfg.http_port, generated))["Status"] == "Success"
    finally:
        await app.stop()
    again = App(_config(cfg.data_dir))
    await again.start()
    try:
        assert again.generated_password is None
    finally:
        await again.stop()


async def test_objects_survive_a_restart(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "d")
    app = App(cfg, root_password="pw")
    await app.start()
    assert app.state is not None
    host, pool = app.state.host_ref, app.state.pool_ref
    await app.stop()
    app = App(_config(cfg.data_dir), root_password="pw")
    await app.start()
    try:
        assert app.state is not None
        assert (app.state.host_ref, app.state.pool_ref) == (host, pool)
        assert len(app.state.store.table("host")) == 1
        assert len(app.state.store.table("pool")) == 1
        vms = app.state.store.table("VM").values()
        assert sum(1 for rec in vms if rec["is_control_domain"]) == 1
    finally:
        await app.stop()
