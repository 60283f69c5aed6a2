"""The ``openxapi`` command line: parsing, the defaults of rulings §10, account commands."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from openxapi.auth.accounts import AccountBook
from openxapi.cli.main import build_parser, config_from, main
from openxapi.config import Config


@pytest.fixture
def as_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    return tmp_path / "home"


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)


def _serve(*args: str) -> Config:
    return config_from(build_parser().parse_args(["serve", *args]))


def test_defaults_as_a_user(as_user: Path) -> None:
    cfg = _serve()
    assert cfg.http_port == 8080 and cfg.https_port == 8443
    assert cfg.data_dir == as_user / ".local" / "share" / "openxapi"
    assert cfg.socket_path == cfg.data_dir / "xapi.sock"
    assert cfg.db_path.parent == cfg.data_dir
    assert cfg.tls_cert == cfg.data_dir / "tls" / "server.pem"
    assert cfg.tls_key == cfg.data_dir / "tls" / "server.key"
    assert cfg.listen == "" and cfg.http_listen is None
    assert cfg.durable is True
    assert cfg.auth_fail_delay == 5.0
    assert cfg.backend == "auto"


def test_xdg_data_home_is_honoured(as_user: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", "/srv/xdg")
    assert _serve().data_dir == Path("/srv/xdg/openxapi")


def test_defaults_as_root(as_root: None) -> None:
    cfg = _serve()
    assert cfg.http_port == 80 and cfg.https_port == 443
    assert cfg.data_dir == Path("/var/lib/openxapi")
    assert cfg.socket_path == Path("/var/lib/xcp/xapi")


def test_every_serve_option(as_user: Path, tmp_path: Path) -> None:
    cfg = _serve(
        "--data-dir",
        str(tmp_path / "d"),
        "--listen",
        "10.0.0.1",
        "--http-port",
        "0",
        "--https-port",
        "9443",
        "--unix-socket",
        str(tmp_path / "s.sock"),
        "--backend",
        "simulator",
        "--cert",
        str(tmp_path / "c.pem"),
        "--key",
        str(tmp_path / "k.pem"),
        "--auth-fail-delay",
        "0.5",
        "--no-durability",
        "--allow-custom-uefi-certs",
        "--plugin-dir",
        str(tmp_path / "p"),
        "--extension-dir",
        str(tmp_path / "e"),
    )
    assert cfg.data_dir == tmp_path / "d"
    assert cfg.listen == "10.0.0.1"
    assert cfg.http_port == 0 and cfg.https_port == 9443
    assert cfg.socket_path == tmp_path / "s.sock"
    assert cfg.backend == "simulator"
    assert cfg.tls_cert == tmp_path / "c.pem" and cfg.tls_key == tmp_path / "k.pem"
    assert cfg.auth_fail_delay == 0.5
    assert cfg.durable is False
    assert cfg.allow_custom_uefi_certs is True
    assert cfg.plugins_path == tmp_path / "p" and cfg.extensions_path == tmp_path / "e"
    assert _serve().allow_custom_uefi_certs is False


def test_explicit_socket_wins_as_root(as_root: None, tmp_path: Path) -> None:
    assert _serve("--unix-socket", str(tmp_path / "x")).socket_path == tmp_path / "x"


@pytest.mark.parametrize(
    "argv",
    [[], ["serve", "--backend", "xen"], ["serve", "--http-port", "http"], ["user"], ["bogus"]],
)
def test_bad_command_lines_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    capsys.readouterr()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("openxapi ")


def test_user_add_requires_a_known_role(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["user", "add", "bob", "--role", "god"])
    capsys.readouterr()
    ns = build_parser().parse_args(
        ["user", "add", "bob", "--role", "read-only", "--role", "vm-admin"]
    )
    assert ns.role == ["read-only", "vm-admin"]


def test_user_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path)
    assert (
        main(["user", "--data-dir", d, "add", "bob", "--role", "read-only", "--password", "pw"])
        == 0
    )
    assert main(["user", "--data-dir", d, "list"]) == 0
    assert "bob\tread-only" in capsys.readouterr().out
    assert main(["user", "--data-dir", d, "passwd", "bob", "--password", "new"]) == 0
    book = AccountBook(tmp_path)
    book.reload()
    assert book.verify("bob", "new") is not None
    assert (
        main(["user", "--data-dir", d, "add", "bob", "--role", "read-only", "--password", "x"]) == 1
    )
    assert "already exists" in capsys.readouterr().err
    assert main(["user", "--data-dir", d, "remove", "bob"]) == 0
    assert main(["user", "--data-dir", d, "remove", "bob"]) == 1


def test_user_password_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENXAPI_PASSWORD", "from-env")
    assert main(["user", "--data-dir", str(tmp_path), "add", "eve", "--role", "read-only"]) == 0
    book = AccountBook(tmp_path)
    book.reload()
    assert book.verify("eve", "from-env") is not None
    capsys.readouterr()


def test_user_commands_default_to_the_default_data_dir(
    as_user: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["user", "add", "dan", "--role", "read-only", "--password", "pw"]) == 0
    assert (as_user / ".local" / "share" / "openxapi" / "accounts.json").exists()
    capsys.readouterr()
