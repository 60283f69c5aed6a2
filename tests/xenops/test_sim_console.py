"""The simulator's consoles: a real RFB server per domain, spoken to as a VNC viewer would."""

from __future__ import annotations

import asyncio
import struct
import uuid as uuidlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from openxapi.xenops.backend import DomainInfo, DomainSpec, SuspendImage
from openxapi.xenops.simulator import SimulatorBackend

MIB = 1 << 20
TIMEOUT = 5.0


@dataclass
class ServerInit:
    width: int
    height: int
    bits_per_pixel: int
    name: str


class RfbClient:
    """A minimal VNC viewer over an already connected stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read(self, n: int) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(n), TIMEOUT)

    async def handshake(self, version: bytes = b"RFB 003.008\n") -> ServerInit:
        """Version, security None and the init messages; the server's description."""
        assert await self.read(12) == b"RFB 003.008\n"
        self.writer.write(version)
        if version == b"RFB 003.003\n":
            assert struct.unpack(">I", await self.read(4)) == (1,)
        else:
            (count,) = await self.read(1)
            assert list(await self.read(count)) == [1]
            self.writer.write(b"\x01")
            if version == b"RFB 003.008\n":
                assert struct.unpack(">I", await self.read(4)) == (0,)
        self.writer.write(b"\x01")  # ClientInit: shared
        width, height = struct.unpack(">HH", await self.read(4))
        fmt = await self.read(16)
        (length,) = struct.unpack(">I", await self.read(4))
        name = (await self.read(length)).decode()
        return ServerInit(width, height, fmt[0], name)

    def request(self, x: int, y: int, w: int, h: int, incremental: bool = False) -> None:
        self.writer.write(struct.pack(">BBHHHH", 3, int(incremental), x, y, w, h))

    async def update(self, bytes_per_pixel: int = 4) -> tuple[tuple[int, int, int, int], bytes]:
        """One FramebufferUpdate of one Raw rectangle: its geometry and pixel data."""
        kind, count = struct.unpack(">BxH", await self.read(4))
        assert (kind, count) == (0, 1)
        x, y, w, h, encoding = struct.unpack(">HHHHi", await self.read(12))
        assert encoding == 0
        return (x, y, w, h), await self.read(w * h * bytes_per_pixel)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def connect(vnc: str) -> RfbClient:
    assert vnc.startswith("unix:")
    reader, writer = await asyncio.open_unix_connection(vnc[len("unix:") :])
    return RfbClient(reader, writer)


def spec(name: str = "console guest") -> DomainSpec:
    return DomainSpec(uuid=str(uuidlib.uuid4()), name=name, memory=256 * MIB, vcpus=1)


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[SimulatorBackend]:
    b = SimulatorBackend(tmp_path / "sim")
    await b.open()
    yield b
    for d in await b.list_domains():
        await b.hard_shutdown(d.uuid)
    await b.close()


def socket_of(info: DomainInfo | None) -> Path:
    assert info is not None and info.vnc.startswith("unix:")
    return Path(info.vnc[len("unix:") :])


async def test_a_running_domain_serves_rfb_3_8_with_a_solid_screen(
    backend: SimulatorBackend,
) -> None:
    info = await backend.start(spec("my guest"))
    assert not socket_of(info).exists()  # made when a client first asks for it
    assert await backend.console(info.uuid) == info.vnc
    assert socket_of(info).is_socket()
    assert (await backend.info(info.uuid)) == info
    client = await connect(info.vnc)
    init = await client.handshake()
    assert init == ServerInit(640, 480, 32, "my guest")
    client.request(0, 0, 640, 480)
    geometry, pixels = await client.update()
    assert geometry == (0, 0, 640, 480)
    assert len(set(pixels[i : i + 4] for i in range(0, len(pixels), 4))) == 1
    # Keys, pointer moves and clipboard text are taken and ignored; the session goes on.
    client.writer.write(struct.pack(">BBxxI", 4, 1, 0x61))
    client.writer.write(struct.pack(">BBHH", 5, 1, 10, 10))
    client.writer.write(struct.pack(">BxxxI", 6, 2) + b"hi")
    client.request(600, 470, 100, 100)
    geometry, _ = await client.update()
    assert geometry == (600, 470, 40, 10)  # clipped to the screen
    await client.close()


async def test_older_viewers_and_other_pixel_formats_are_served(
    backend: SimulatorBackend,
) -> None:
    info = await backend.start(spec())
    await backend.console(info.uuid)
    for version in (b"RFB 003.003\n", b"RFB 003.007\n"):
        client = await connect(info.vnc)
        assert (await client.handshake(version)).width == 640
        await client.close()
    client = await connect(info.vnc)
    await client.handshake()
    rgb565 = struct.pack(">BBBBHHHBBB3x", 16, 16, 0, 1, 31, 63, 31, 11, 5, 0)
    client.writer.write(b"\x00\x00\x00\x00" + rgb565)
    client.writer.write(struct.pack(">BxHi", 2, 1, 0))  # SetEncodings: Raw
    client.request(0, 0, 8, 2)
    geometry, pixels = await client.update(bytes_per_pixel=2)
    assert geometry == (0, 0, 8, 2) and len(pixels) == 32
    await client.close()


async def test_a_viewer_that_wants_security_is_turned_away(backend: SimulatorBackend) -> None:
    info = await backend.start(spec())
    client = await connect(await backend.console(info.uuid))
    assert await client.read(12) == b"RFB 003.008\n"
    client.writer.write(b"RFB 003.008\n")
    assert await client.read(2) == b"\x01\x01"
    client.writer.write(b"\x02")  # VNC authentication: not offered
    status, length = struct.unpack(">II", await client.read(8))
    assert status == 1 and await client.read(length)
    assert await asyncio.wait_for(client.reader.read(), TIMEOUT) == b""
    await client.close()


async def test_stopping_the_domain_hangs_up_and_removes_the_socket(
    backend: SimulatorBackend,
) -> None:
    info = await backend.start(spec())
    path = socket_of(info)
    client = await connect(await backend.console(info.uuid))
    await client.handshake()
    await backend.hard_shutdown(info.uuid)
    assert await asyncio.wait_for(client.reader.read(), TIMEOUT) == b""
    assert not path.exists()
    await client.close()


async def test_suspend_removes_the_console_and_resume_brings_it_back(
    backend: SimulatorBackend,
) -> None:
    s = spec()
    info = await backend.start(s)
    await backend.console(s.uuid)
    image = SuspendImage(vdi_uuid=str(uuidlib.uuid4()), location="img", size=s.memory)
    await backend.suspend(s.uuid, image)
    assert not socket_of(info).exists()
    resumed = await backend.resume(s, image)
    client = await connect(await backend.console(s.uuid))
    assert resumed.vnc.startswith("unix:")
    assert (await client.handshake()).name == s.name
    await client.close()


async def test_consoles_close_with_the_backend_and_return_on_reopen(tmp_path: Path) -> None:
    first = SimulatorBackend(tmp_path / "sim")
    await first.open()
    info = await first.start(spec("survivor"))
    client = await connect(await first.console(info.uuid))
    await client.handshake()
    await first.close()
    assert not socket_of(info).exists()
    assert await asyncio.wait_for(client.reader.read(), TIMEOUT) == b""
    await client.close()

    second = SimulatorBackend(tmp_path / "sim")
    (adopted,) = await second.open()
    client = await connect(await second.console(adopted.uuid))
    assert (await client.handshake()).name == "survivor"
    await client.close()
    await second.hard_shutdown(adopted.uuid)
    await second.close()


async def test_without_a_state_dir_sockets_live_in_a_temporary_directory() -> None:
    b = SimulatorBackend(None)
    await b.open()
    info = await b.start(spec())
    path = socket_of(info)
    client = await connect(await b.console(info.uuid))
    await client.handshake()
    await client.close()
    await b.close()
    assert not path.exists() and not path.parent.exists()
