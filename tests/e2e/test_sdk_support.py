"""Helpers for the end-to-end tests that drive a real server with the PyPI ``XenAPI`` SDK.

Sessions over HTTP, HTTPS and the unix socket built the way the SDK builds them, raw
XML-RPC and JSON-RPC calls for what the SDK hides, arguments of the right types for any
message of the description, and the ``openxapi user`` command line.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
import xmlrpc.client
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import XenAPI

from openxapi.spec import types as T
from openxapi.spec.model import NULL_REF, Api, Message
from tests.serverproc import ROOT_PASSWORD, ServerProcess

DUMMY_DATETIME = "20250102T03:04:05Z"
_links = itertools.count()


def close(session: xmlrpc.client.ServerProxy) -> None:
    """Close the SDK's (or a raw proxy's) kept-alive connection."""
    session("close")()


@contextmanager
def sdk(url: str, **kwargs: Any) -> Iterator[XenAPI.Session]:
    """A not-yet-logged-in SDK session whose connection is closed afterwards."""
    s = XenAPI.Session(url, **kwargs)
    try:
        yield s
    finally:
        close(s)


@contextmanager
def logged_in(
    url: str, user: str = "root", password: str = ROOT_PASSWORD, **kwargs: Any
) -> Iterator[XenAPI.Session]:
    """An SDK session logged in (4-argument form) and logged out afterwards."""
    with sdk(url, **kwargs) as s:
        s.xenapi.login_with_password(user, password, "1.0", "openxapi-e2e")
        try:
            yield s
        finally:
            if s._session is not None:
                try:
                    s.xenapi.session.logout()
                except XenAPI.Failure:
                    pass


def verified_transport(server: ServerProcess) -> xmlrpc.client.SafeTransport:
    """An HTTPS transport that trusts exactly the server's self-signed certificate."""
    ctx = ssl.create_default_context(cafile=str(server.cert_path))
    return xmlrpc.client.SafeTransport(context=ctx)


def unix_url(socket_path: Path) -> str:
    """The URL the SDK's ``UDSTransport`` turns back into ``socket_path``.

    The SDK maps ``_`` in the host name to ``/``, so a path containing ``_`` is reached
    through a symbolic link whose path has none.
    """
    path = str(socket_path)
    if "_" in path:
        link = Path(f"/tmp/oxe2e-{os.getpid()}-{next(_links)}.sock")
        link.unlink(missing_ok=True)
        link.symlink_to(socket_path)
        atexit.register(link.unlink, missing_ok=True)
        path = str(link)
    return "http://" + path.replace("/", "_") + "/"


def unix_session(socket_path: Path) -> XenAPI.Session:
    """An SDK session over the unix socket, with the SDK's own transport."""
    return XenAPI.Session(unix_url(socket_path), transport=XenAPI.UDSTransport())


def failure(fn: Callable[..., Any], *args: Any) -> list[str]:
    """Call an SDK method that must fail; returns the ErrorDescription list."""
    try:
        value = fn(*args)
    except XenAPI.Failure as e:
        return list(e.details)
    raise AssertionError(f"expected a XenAPI.Failure, got the value {value!r}")


def raw_call(url: str, method: str, *params: Any) -> Any:
    """One XML-RPC call without the SDK: the reply struct as the server sent it."""
    proxy = xmlrpc.client.ServerProxy(url, allow_none=True)
    try:
        return getattr(proxy, method)(*params)
    finally:
        close(proxy)


class RawXmlRpc:
    """A kept-alive XML-RPC connection for many calls; replies are returned unparsed."""

    def __init__(self, url: str) -> None:
        self.proxy = xmlrpc.client.ServerProxy(url, allow_none=True)

    def call(self, method: str, *params: Any) -> dict[str, Any]:
        reply = getattr(self.proxy, method)(*params)
        assert isinstance(reply, dict), reply
        return reply

    def close(self) -> None:
        close(self.proxy)


def jsonrpc(url: str, method: str, params: list[Any], req_id: int = 1) -> dict[str, Any]:
    """One JSON-RPC 2.0 call on ``/jsonrpc``; returns the decoded reply object."""
    body = json.dumps({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params})
    req = urllib.request.Request(
        url + "/jsonrpc",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        reply: dict[str, Any] = json.loads(resp.read())
    return reply


def dummy_value(t: T.Type, api: Api, codec: str = "xml") -> Any:
    """A value of type ``t`` that the server's type checks accept."""
    if isinstance(t, T.Prim):
        return {
            "string": "x",
            "int": 1,
            "float": 1.0,
            "bool": False,
            "datetime": xmlrpc.client.DateTime(DUMMY_DATETIME)
            if codec == "xml"
            else DUMMY_DATETIME,
        }[t.name]
    if isinstance(t, T.Ref):
        return NULL_REF
    if isinstance(t, T.Enum):
        return api.enums[t.name][0]
    if isinstance(t, T.Set):
        return []
    if isinstance(t, (T.Map, T.Record)):
        return {}
    if isinstance(t, T.Option):
        return dummy_value(t.inner, api, codec)
    raise AssertionError(f"no dummy value for {t}")


def dummy_args(msg: Message, api: Api, codec: str = "xml") -> list[Any]:
    """Well-typed arguments (session excluded) for every parameter of ``msg``."""
    return [dummy_value(p.type, api, codec) for p in msg.params]


def vm_struct(name: str, **extra: Any) -> dict[str, Any]:
    """The smallest VM.create struct: only the members without a default."""
    mem = str(256 * 2**20)
    return {
        "name_label": name,
        "user_version": "1",
        "is_a_template": False,
        "affinity": NULL_REF,
        "memory_static_max": mem,
        "memory_dynamic_max": mem,
        "memory_dynamic_min": mem,
        "memory_static_min": mem,
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
        "HVM_boot_params": {"order": "dc"},
        "platform": {},
        "PCI_bus": "",
        "other_config": {},
        "recommendations": "",
        **extra,
    }


def run_cli(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``openxapi user --data-dir D ARGS...`` in a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "openxapi.cli.main", "user", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OPENXAPI_PASSWORD": ""},
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def login_works(url: str, user: str, password: str) -> bool:
    """True if a login with these credentials succeeds (and logs out again)."""
    with sdk(url) as s:
        try:
            s.xenapi.login_with_password(user, password)
        except XenAPI.Failure:
            return False
        s.xenapi.session.logout()
        return True
