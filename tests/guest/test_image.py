"""Boot the tiny test guest under QEMU (TCG) and check what a VM's user can observe of it:
the serial markers, the real guest agent, the hello service and ACPI power handling."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.guestimage import guest_image_dir
from tests.serverproc import free_port

QEMU = "qemu-system-x86_64"
READY = "TINYVM-READY"
SHUTDOWN = "TINYVM-SHUTDOWN clean"
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture(scope="session")
def guest_image() -> Path:
    """The image directory, built once into the shared cache (cheap when already built)."""
    if shutil.which(QEMU) is None:
        pytest.skip(f"{QEMU} is not installed")
    image = guest_image_dir()
    for name in ("vmlinuz", "initrd.gz", "os-release", "stamp"):
        assert (image / name).is_file(), name
    assert "ID=tinyvm" in (image / "os-release").read_text()
    return image


@dataclass
class Guest:
    """A running QEMU process and the paths of its serial log, QMP and agent sockets."""

    proc: subprocess.Popen[bytes]
    run: Path
    port: int

    @property
    def serial(self) -> str:
        path = self.run / "a.serial"
        return path.read_text(errors="replace") if path.exists() else ""

    async def wait_serial(self, marker: str, timeout: float) -> str:
        """Wait for a line containing marker on the serial console; fail if QEMU dies first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.serial.splitlines():
                if marker in line:
                    return line
            if self.proc.poll() is not None:
                qemu_log = (self.run / "qemu.log").read_text(errors="replace")
                raise AssertionError(
                    f"QEMU exited ({self.proc.returncode}): {qemu_log}\n{self.serial}"
                )
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {marker!r} within {timeout} s; serial:\n{self.serial}")

    async def wait_exit(self, timeout: float) -> int | None:
        """The exit status, or None if QEMU is still running after timeout seconds."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.proc.poll()


def qemu_command(image: Path, run: Path, port: int, append: str, guest_addr: str) -> list[str]:
    """The reference boot command: TCG, slirp with a loopback port forward, balloon, agent port."""
    return [
        QEMU, "-accel", "tcg", "-m", "128", "-smp", "1",
        "-nodefaults", "-no-user-config", "-display", "none",
        "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.gz"),
        "-append", f"console=ttyS0 quiet panic=-1 {append}".strip(),
        "-chardev", f"file,id=ser0,path={run / 'a.serial'}", "-serial", "chardev:ser0",
        "-qmp", f"unix:{run / 'a.qmp'},server=on,wait=off",
        "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-{guest_addr}:7777",
        "-device", "virtio-net-pci,netdev=n0",
        "-device", "virtio-balloon-pci",
        "-device", "virtio-serial-pci",
        "-chardev", f"socket,id=qga0,path={run / 'a.qga'},server=on,wait=off",
        "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
    ]  # fmt: skip


@asynccontextmanager
async def booted(
    image: Path, run: Path, append: str = "", guest_addr: str = ""
) -> AsyncIterator[Guest]:
    """Start the guest, wait for its ready marker, and always kill QEMU afterwards."""
    port = free_port()
    with open(run / "qemu.log", "wb") as log:
        proc = subprocess.Popen(
            qemu_command(image, run, port, append, guest_addr),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        guest = Guest(proc, run, port)
        await guest.wait_serial(READY, 60)
        yield guest
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def connect_unix(path: Path, timeout: float = 10) -> Stream:
    """Connect to a QEMU server socket, which QEMU creates shortly after it starts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await asyncio.open_unix_connection(str(path), limit=1 << 20)
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def send_json(
    writer: asyncio.StreamWriter, execute: str, arguments: dict[str, Any] | None = None
) -> None:
    msg: dict[str, Any] = {"execute": execute}
    if arguments is not None:
        msg["arguments"] = arguments
    writer.write(json.dumps(msg).encode() + b"\n")
    await writer.drain()


async def read_reply(reader: asyncio.StreamReader) -> Any:
    """The next command reply on a QMP or agent stream, skipping asynchronous events."""
    while True:
        line = await asyncio.wait_for(reader.readline(), 15)
        if not line:
            raise EOFError("socket closed")
        msg = json.loads(line)
        if "event" in msg:
            continue
        if "error" in msg:
            raise AssertionError(f"command failed: {msg['error']}")
        return msg["return"]


@asynccontextmanager
async def qmp(guest: Guest) -> AsyncIterator[Stream]:
    """A QMP session in command mode."""
    reader, writer = await connect_unix(guest.run / "a.qmp")
    try:
        greeting = json.loads(await asyncio.wait_for(reader.readline(), 10))
        assert "QMP" in greeting
        await send_json(writer, "qmp_capabilities")
        await read_reply(reader)
        yield reader, writer
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, BrokenPipeError):
            pass


@asynccontextmanager
async def agent(guest: Guest) -> AsyncIterator[Stream]:
    """A guest-agent session, resynchronised with guest-sync-delimited."""
    reader, writer = await connect_unix(guest.run / "a.qga")
    try:
        await send_json(writer, "guest-sync-delimited", {"id": 123})
        await asyncio.wait_for(reader.readuntil(b"\xff"), 15)
        assert await read_reply(reader) == 123
        yield reader, writer
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, BrokenPipeError):
            pass


async def agent_call(session: Stream, execute: str, arguments: dict[str, Any] | None = None) -> Any:
    reader, writer = session
    await send_json(writer, execute, arguments)
    return await read_reply(reader)


async def read_hello(port: int, timeout: float = 15) -> str:
    """Read the hello service through the port forward.

    slirp accepts the connection before the guest does, so an empty answer means retry."""
    deadline = time.monotonic() + timeout
    while True:
        data = b""
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                data = await asyncio.wait_for(reader.readline(), 5)
            finally:
                writer.close()
                try:
                    await writer.wait_closed()
                except ConnectionError:
                    pass
        except (TimeoutError, ConnectionError):
            pass
        if data or time.monotonic() > deadline:
            return data.decode()
        await asyncio.sleep(0.2)


def ipv4_addresses(interfaces: list[dict[str, Any]], name: str) -> list[str]:
    for iface in interfaces:
        if iface["name"] == name:
            return [
                a["ip-address"]
                for a in iface.get("ip-addresses", [])
                if a["ip-address-type"] == "ipv4"
            ]
    return []


async def test_boot_agent_hello_and_acpi_powerdown(guest_image: Path, tmp_path: Path) -> None:
    async with booted(guest_image, tmp_path) as guest:
        assert f"{READY} ip=10.0.2.15 " in guest.serial

        async with agent(guest) as session:
            osinfo = await agent_call(session, "guest-get-osinfo")
            assert osinfo["id"] == "tinyvm"
            assert osinfo["pretty-name"] == "openxapi tiny guest 1.0"
            interfaces = await agent_call(session, "guest-network-get-interfaces")
            assert "10.0.2.15" in ipv4_addresses(interfaces, "eth0")
            assert "127.0.0.1" in ipv4_addresses(interfaces, "lo")
            assert (await agent_call(session, "guest-get-host-name"))["host-name"] == "tinyvm"

        assert await read_hello(guest.port) == "hello from tinyvm\n"
        assert await read_hello(guest.port) == "hello from tinyvm\n"

        async with qmp(guest) as (reader, writer):
            await send_json(writer, "system_powerdown")
            await read_reply(reader)
        assert await guest.wait_exit(30) == 0
        assert SHUTDOWN in guest.serial


async def test_guest_ignoring_acpi_keeps_running_until_quit(
    guest_image: Path, tmp_path: Path
) -> None:
    async with booted(guest_image, tmp_path, "tinyacpi=ignore") as guest:
        async with qmp(guest) as (reader, writer):
            await send_json(writer, "system_powerdown")
            await read_reply(reader)
            assert await guest.wait_exit(8) is None
            await send_json(writer, "query-status")
            assert (await read_reply(reader))["status"] == "running"
            await send_json(writer, "quit")
            await read_reply(reader)
        assert await guest.wait_exit(10) == 0
        assert SHUTDOWN not in guest.serial


async def test_static_address_hostname_and_agent_shutdown(
    guest_image: Path, tmp_path: Path
) -> None:
    append = "hostname=vm-three tinyip=10.0.2.30/24 tinygw=10.0.2.2 tinyacpi=ignore"
    async with booted(guest_image, tmp_path, append, guest_addr="10.0.2.30") as guest:
        assert f"{READY} ip=10.0.2.30 " in guest.serial
        assert await read_hello(guest.port) == "hello from tinyvm\n"
        async with agent(guest) as session:
            assert (await agent_call(session, "guest-get-host-name"))["host-name"] == "vm-three"
            interfaces = await agent_call(session, "guest-network-get-interfaces")
            assert ipv4_addresses(interfaces, "eth0") == ["10.0.2.30"]
            # guest-shutdown sends no reply on success; QEMU exiting is the answer.
            await send_json(session[1], "guest-shutdown", {"mode": "powerdown"})
            assert await guest.wait_exit(30) == 0
        assert SHUTDOWN in guest.serial
