"""``CONNECT /console`` on a real server: a running VM's console as a raw RFB stream.

A VM made from a template and started on the simulator has one rfb console; the tunnel
answers ``200 OK`` and then carries the VM's VNC session, for a session given as query
parameter, cookie or Basic auth. Refusals: no or bad session 401, too weak a role 403,
nothing named 400, unknown or halted 404. A halted VM has no console.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import XenAPI

from tests.e2e.test_events_sdk import close, login
from tests.e2e.test_sdk_support import login_works, run_cli, wait_for
from tests.serverproc import ROOT_PASSWORD, ServerProcess
from tests.xenops.test_sim_console import TIMEOUT, RfbClient

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed file <_io.TextIOWrapper:ResourceWarning"),
]

TEMPLATE = "Debian Bookworm 12"
USERS = {"operator": "vm-operator", "reader": "read-only"}
PASSWORD = "pw-console-user"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        Path(tmp_path_factory.mktemp("console")), extra_args=["--vm-shutdown-timeout", "0.5"]
    )
    srv.start()
    yield srv
    srv.stop()
    assert "Traceback" not in "".join(srv.output)  # refusals and hang-ups are not failures


@pytest.fixture(scope="module")
def users(server: ServerProcess) -> dict[str, str]:
    for name, role in USERS.items():
        run_cli(server.data_dir, "add", name, "--role", role, "--password", PASSWORD)
    for name in USERS:
        assert wait_for(lambda n=name: login_works(server.http_url, n, PASSWORD), 10.0), name
    return USERS


@pytest.fixture
def sdk(server: ServerProcess) -> Iterator[Any]:
    session = login(server.http_url, "console-tests")
    yield session
    close(session)


def started_vm(x: Any, name: str) -> str:
    """A diskless VM cloned from a default template, provisioned and started."""
    (tpl,) = x.VM.get_by_name_label(TEMPLATE)
    vm: str = x.VM.clone(tpl, name)
    x.VM.remove_from_other_config(vm, "disks")
    x.VM.add_to_other_config(vm, "disks", "<provision></provision>")
    x.VM.provision(vm)
    x.VM.start(vm, False, False)
    return vm


async def connect(
    server: ServerProcess, query: str, headers: tuple[str, ...] = ()
) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter]:
    """Send ``CONNECT /console?<query>``; the status line and the open stream after the
    reply's headers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    head = f"CONNECT /console?{query} HTTP/1.0\r\n" + "".join(f"{h}\r\n" for h in headers)
    writer.write(head.encode() + b"\r\n")
    reply = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    return reply.decode("latin-1").split("\r\n", 1)[0], reader, writer


async def status_of(server: ServerProcess, query: str, headers: tuple[str, ...] = ()) -> int:
    """The HTTP status a refused ``CONNECT /console?<query>`` gets."""
    status, _, writer = await connect(server, query, headers)
    writer.close()
    await writer.wait_closed()
    return int(status.split()[1])


async def vnc_session_works(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
    """Complete the RFB handshake and one full update through the tunnel; the VM's name."""
    client = RfbClient(reader, writer)
    init = await client.handshake()
    client.request(0, 0, init.width, init.height)
    geometry, pixels = await client.update()
    assert geometry == (0, 0, 640, 480) and len(pixels) == 640 * 480 * 4
    await client.close()
    return init.name


async def test_a_running_vms_console_is_tunnelled(server: ServerProcess, sdk: Any) -> None:
    x = sdk.xenapi
    vm = started_vm(x, "console-vm")
    (console,) = x.VM.get_consoles(vm)
    rec = x.console.get_record(console)
    host = x.host.get_record(x.host.get_all()[0])
    location = urlsplit(rec["location"])
    assert rec["protocol"] == "rfb" and rec["VM"] == vm
    assert (location.scheme, location.hostname, location.path) == (
        "https",
        host["address"],
        "/console",
    )
    assert parse_qs(location.query) == {"uuid": [rec["uuid"]]}

    status, reader, writer = await connect(server, f"uuid={rec['uuid']}&session_id={sdk._session}")
    assert status == "HTTP/1.1 200 OK"
    assert await vnc_session_works(reader, writer) == "console-vm"

    # The VM itself names its rfb console, by uuid or by ref.
    vm_uuid = x.VM.get_uuid(vm)
    for query in (f"uuid={vm_uuid}", f"ref={vm}", f"ref={console}"):
        status, reader, writer = await connect(server, f"{query}&session_id={sdk._session}")
        assert status == "HTTP/1.1 200 OK", query
        assert await vnc_session_works(reader, writer) == "console-vm"
    x.VM.hard_shutdown(vm)


async def test_cookie_and_basic_auth_are_accepted(server: ServerProcess, sdk: Any) -> None:
    x = sdk.xenapi
    vm = started_vm(x, "console-auth")
    uuid = x.VM.get_uuid(vm)
    basic = base64.b64encode(f"root:{ROOT_PASSWORD}".encode()).decode()
    for header in (f"Cookie: session_id={sdk._session}", f"Authorization: Basic {basic}"):
        status, reader, writer = await connect(server, f"uuid={uuid}", (header,))
        assert status == "HTTP/1.1 200 OK", header
        assert await vnc_session_works(reader, writer) == "console-auth"
    x.VM.hard_shutdown(vm)


async def test_refusals(server: ServerProcess, sdk: Any, users: dict[str, str]) -> None:
    x = sdk.xenapi
    vm = started_vm(x, "console-refusals")
    uuid = x.VM.get_uuid(vm)
    assert await status_of(server, f"uuid={uuid}") == 401
    bad = f"uuid={uuid}&session_id=OpaqueRef:00000000-0000-0000-0000-000000000000"
    assert await status_of(server, bad) == 401
    wrong = base64.b64encode(b"root:wrong").decode()
    assert await status_of(server, f"uuid={uuid}", (f"Authorization: Basic {wrong}",)) == 401
    session = f"session_id={sdk._session}"
    assert await status_of(server, session) == 400
    assert await status_of(server, f"uuid=no-such-thing&{session}") == 404
    assert await status_of(server, f"ref=OpaqueRef:nothing&{session}") == 404

    reader_session = XenAPI.Session(server.http_url)
    reader_session.xenapi.login_with_password("reader", PASSWORD, "1.0", "console-tests")
    try:
        query = f"uuid={uuid}&session_id={reader_session._session}"
        assert await status_of(server, query) == 403
    finally:
        close(reader_session)
    operator = base64.b64encode(f"operator:{PASSWORD}".encode()).decode()
    status, reader, writer = await connect(
        server, f"uuid={uuid}", (f"Authorization: Basic {operator}",)
    )
    assert status == "HTTP/1.1 200 OK"
    assert await vnc_session_works(reader, writer) == "console-refusals"
    x.VM.hard_shutdown(vm)


async def test_a_halted_vm_has_no_console(server: ServerProcess, sdk: Any) -> None:
    x = sdk.xenapi
    vm = started_vm(x, "console-halt")
    (console,) = x.VM.get_consoles(vm)
    console_uuid = x.console.get_uuid(console)
    status, reader, writer = await connect(server, f"uuid={console_uuid}&session_id={sdk._session}")
    assert status == "HTTP/1.1 200 OK"
    await RfbClient(reader, writer).handshake()
    x.VM.clean_shutdown(vm)
    # The domain is gone, so is the VNC server: the tunnel closes too.
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    writer.close()
    await writer.wait_closed()
    assert x.VM.get_consoles(vm) == []
    assert console not in x.console.get_all()
    session = f"session_id={sdk._session}"
    assert await status_of(server, f"uuid={console_uuid}&{session}") == 404
    assert await status_of(server, f"uuid={x.VM.get_uuid(vm)}&{session}") == 404


async def test_a_pool_limit_allows_one_console_session_per_vm(
    server: ServerProcess, sdk: Any
) -> None:
    x = sdk.xenapi
    pool = x.pool.get_all()[0]
    vm = started_vm(x, "console-limit")
    query = f"uuid={x.VM.get_uuid(vm)}&session_id={sdk._session}"
    x.pool.set_limit_console_sessions(pool, True)
    try:
        status, reader, writer = await connect(server, query)
        assert status == "HTTP/1.1 200 OK"
        await RfbClient(reader, writer).handshake()
        assert await status_of(server, query) == 503
        writer.close()  # the viewer leaves: its session ends on the server too
        await writer.wait_closed()
        for _ in range(100):
            status, reader, writer = await connect(server, query)
            if status == "HTTP/1.1 200 OK":
                break
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(0.05)
        assert status == "HTTP/1.1 200 OK"
        assert await vnc_session_works(reader, writer) == "console-limit"
    finally:
        x.pool.set_limit_console_sessions(pool, False)
    x.VM.hard_shutdown(vm)
