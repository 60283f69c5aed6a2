"""The ``openxapi`` command: ``serve`` runs the server, ``user`` manages local accounts."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from openxapi import __version__
from openxapi.auth.accounts import ROLES, AccountBook, AccountError
from openxapi.config import Config, default_data_dir


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the XenAPI server")
    p.add_argument("--data-dir", type=Path, default=None, help="state directory")
    p.add_argument(
        "--listen",
        default=None,
        help="address to listen on (default: all for HTTPS, loopback for plain HTTP)",
    )
    p.add_argument("--http-port", type=int, default=None, help="plain HTTP port (0: off)")
    p.add_argument("--https-port", type=int, default=None, help="HTTPS port (0: off)")
    p.add_argument("--unix-socket", type=Path, default=None, help="unix socket path")
    p.add_argument(
        "--backend",
        choices=["auto", "simulator", "qemu"],
        default="auto",
        help="domain backend (auto: QEMU when qemu-system-x86_64 is installed, else simulator)",
    )
    p.add_argument(
        "--accel",
        choices=["auto", "kvm", "tcg"],
        default=None,
        help="QEMU accelerator (auto: KVM once a probe boot proves it works, else TCG)",
    )
    p.add_argument(
        "--allow-guest-nat",
        action="store_true",
        help="let guests on the NAT network connect out through the host "
        "(default: DHCP and forwarded ports only)",
    )
    p.add_argument(
        "--allow-custom-uefi-certs",
        action="store_true",
        help="let pool.set_custom_uefi_certificates replace the default Secure Boot keys",
    )
    p.add_argument(
        "--guest-image-dir",
        type=Path,
        default=None,
        help="directory of the tiny test guest's vmlinuz and initrd.gz",
    )
    p.add_argument(
        "--iso-dir", type=Path, default=None, help="ISO library directory (default <data-dir>/iso)"
    )
    p.add_argument(
        "--plugin-dir",
        type=Path,
        default=None,
        help="host plugins for host.call_plugin (default <data-dir>/plugins)",
    )
    p.add_argument(
        "--extension-dir",
        type=Path,
        default=None,
        help="API extensions for host.call_extension (default <data-dir>/extensions)",
    )
    p.add_argument(
        "--sim-storage",
        action="store_true",
        help="first start: make 'Local storage' a simulated SR (no disk I/O)",
    )
    p.add_argument(
        "--sim-host-memory", type=_size, default=None, help="simulated host memory (e.g. 4T)"
    )
    p.add_argument("--sim-host-cpus", type=int, default=None, help="simulated host CPUs")
    p.add_argument("--sim-boot-time", type=float, default=None, help="simulated boot seconds")
    p.add_argument(
        "--sim-shutdown-time", type=float, default=None, help="simulated shutdown seconds"
    )
    p.add_argument(
        "--vm-shutdown-timeout",
        type=float,
        default=None,
        help="seconds a clean shutdown or reboot waits for the guest (default 1200)",
    )
    p.add_argument("--cert", type=Path, default=None, help="TLS certificate (PEM)")
    p.add_argument("--key", type=Path, default=None, help="TLS private key (PEM)")
    p.add_argument(
        "--auth-fail-delay",
        type=float,
        default=None,
        help="seconds a failed login waits before answering (default 5)",
    )
    p.add_argument(
        "--no-durability",
        action="store_true",
        help="benchmarks only: keep state in memory, write nothing to disk",
    )
    p.add_argument("-v", "--verbose", action="store_true")


def _user_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS)
    p = sub.add_parser("user", help="manage local accounts")
    p.add_argument("--data-dir", type=Path, default=None)
    us = p.add_subparsers(dest="user_cmd", required=True)
    add = us.add_parser("add", help="create an account", parents=[common])
    add.add_argument("name")
    add.add_argument("--role", action="append", choices=list(ROLES), required=True)
    add.add_argument(
        "--password", default=None, help="password (default: $OPENXAPI_PASSWORD, else asked for)"
    )
    us.add_parser("list", help="list accounts", parents=[common])
    rm = us.add_parser("remove", help="delete an account", parents=[common])
    rm.add_argument("name")
    pw = us.add_parser("passwd", help="set an account's password", parents=[common])
    pw.add_argument("name")
    pw.add_argument("--password", default=None)


def _size(text: str) -> int:
    """A byte count, optionally with a K/M/G/T suffix (powers of 1024)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="openxapi", description="An open XenAPI server")
    ap.add_argument("--version", action="version", version=f"openxapi {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    _serve_parser(sub)
    _user_parser(sub)
    return ap


def config_from(ns: argparse.Namespace) -> Config:
    cfg = Config()
    if ns.data_dir is not None:
        cfg.data_dir = ns.data_dir
    if ns.listen is not None:
        cfg.listen = ns.listen
    if ns.http_port is not None:
        cfg.http_port = ns.http_port
    if ns.https_port is not None:
        cfg.https_port = ns.https_port
    if ns.unix_socket is not None:
        cfg.unix_socket = ns.unix_socket
    cfg.backend = ns.backend
    cfg.guest_nat = bool(getattr(ns, "allow_guest_nat", False))
    cfg.allow_custom_uefi_certs = bool(getattr(ns, "allow_custom_uefi_certs", False))
    if getattr(ns, "accel", None) is not None:
        cfg.accel = ns.accel
    if getattr(ns, "guest_image_dir", None) is not None:
        cfg.guest_image_dir = ns.guest_image_dir
    cfg.iso_dir = getattr(ns, "iso_dir", None)
    cfg.plugin_dir = getattr(ns, "plugin_dir", None)
    cfg.extension_dir = getattr(ns, "extension_dir", None)
    cfg.sim_storage = bool(getattr(ns, "sim_storage", False))
    cfg.cert_file, cfg.key_file = ns.cert, ns.key
    for name in (
        "sim_host_memory",
        "sim_host_cpus",
        "sim_boot_time",
        "sim_shutdown_time",
        "vm_shutdown_timeout",
    ):
        if getattr(ns, name, None) is not None:
            setattr(cfg, name, getattr(ns, name))
    if ns.auth_fail_delay is not None:
        cfg.auth_fail_delay = ns.auth_fail_delay
    if ns.no_durability:
        cfg.durable = False
    return cfg


def _raise_nofile_limit() -> None:
    """Many clients mean many sockets: take the open-file limit up to its hard limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _serve(cfg: Config) -> int:
    from openxapi.server.app import AlreadyRunning, App

    app = App(cfg, root_password=os.environ.get("OPENXAPI_ROOT_PASSWORD") or None)
    try:
        await app.start()
    except AlreadyRunning as e:
        print(f"openxapi: {e}", file=sys.stderr)
        return 1
    if app.generated_password:
        print(f"root password (shown once): {app.generated_password}", flush=True)
    for lst in app.listeners:
        where = lst.address if lst.kind == "unix" else f"{lst.address}:{lst.port}"
        print(f"listening: {lst.kind} {where}", flush=True)
    if cfg.https_port:
        print(f"TLS certificate: {cfg.tls_cert}", flush=True)
    await app.wait_backends()
    print(f"openxapi ready (data directory {cfg.data_dir})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("openxapi stopping", flush=True)
    await app.stop()
    return 0


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _password(given: str | None, prompt: str) -> str:
    if given:
        return given
    env = os.environ.get("OPENXAPI_PASSWORD")
    if env:
        return env
    first = getpass.getpass(prompt)
    if getpass.getpass("again: ") != first:
        raise AccountError("the passwords differ")
    return first


def _user(ns: argparse.Namespace) -> int:
    book = AccountBook(ns.data_dir or default_data_dir())
    try:
        if ns.user_cmd == "add":
            book.add(ns.name, _password(ns.password, f"password for {ns.name}: "), ns.role)
            print(f"added {ns.name} ({', '.join(ns.role)})")
        elif ns.user_cmd == "list":
            book.reload()
            for a in book.all():
                print(f"{a.name}\t{','.join(a.roles)}")
        elif ns.user_cmd == "remove":
            book.remove(ns.name)
            print(f"removed {ns.name}")
        elif ns.user_cmd == "passwd":
            book.set_password(ns.name, _password(ns.password, f"new password for {ns.name}: "))
            print(f"password changed for {ns.name}")
    except AccountError as e:
        print(f"openxapi: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    if ns.cmd == "serve":
        logging.basicConfig(
            level=logging.DEBUG if ns.verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        _raise_nofile_limit()
        cfg = config_from(ns)
        return _run(_serve(cfg))
    if ns.cmd == "user":
        return _user(ns)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
