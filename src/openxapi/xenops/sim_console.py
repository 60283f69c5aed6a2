"""A tiny RFB (VNC) server per simulated domain, so console clients have a real screen.

Each running simulated domain listens on a unix socket speaking RFB 3.3, 3.7 or 3.8 with
security type None: it shows a solid-colour framebuffer named after the guest, answers
full framebuffer update requests with one Raw rectangle and ignores keyboard and pointer
input. The screen never changes, so incremental update requests are left pending, as a
real server does when nothing changed. Stopping a domain closes its clients and removes
its socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import struct
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("openxapi.sim.console")

WIDTH = 640
HEIGHT = 480
#: The screen's colour (a dark blue), as 8-bit red, green and blue.
COLOUR = (0x1F, 0x3A, 0x5F)
#: Longest path a unix socket address can hold (sun_path is 108 bytes with its NUL).
MAX_SOCKET_PATH = 107

SECURITY_NONE = 1
ENCODING_RAW = 0

# Client-to-server message types and the bytes that follow the type byte.
SET_PIXEL_FORMAT = 0
SET_ENCODINGS = 2
UPDATE_REQUEST = 3
KEY_EVENT = 4
POINTER_EVENT = 5
CUT_TEXT = 6


class ProtocolError(Exception):
    """The client sent something this server does not understand; the connection ends."""


@dataclass(frozen=True, slots=True)
class PixelFormat:
    """How pixels go on the wire (the RFB PIXEL_FORMAT structure)."""

    bits_per_pixel: int = 32
    depth: int = 24
    big_endian: bool = False
    true_colour: bool = True
    red_max: int = 255
    green_max: int = 255
    blue_max: int = 255
    red_shift: int = 16
    green_shift: int = 8
    blue_shift: int = 0

    _STRUCT = struct.Struct(">BBBBHHHBBB3x")

    def pack(self) -> bytes:
        return self._STRUCT.pack(
            self.bits_per_pixel,
            self.depth,
            int(self.big_endian),
            int(self.true_colour),
            self.red_max,
            self.green_max,
            self.blue_max,
            self.red_shift,
            self.green_shift,
            self.blue_shift,
        )

    @classmethod
    def unpack(cls, data: bytes) -> PixelFormat:
        bpp, depth, big, true_colour, rmax, gmax, bmax, rs, gs, bs = cls._STRUCT.unpack(data)
        if bpp not in (8, 16, 32):
            raise ProtocolError(f"unsupported bits-per-pixel {bpp}")
        return cls(bpp, depth, bool(big), bool(true_colour), rmax, gmax, bmax, rs, gs, bs)

    def pixel(self, rgb: tuple[int, int, int]) -> bytes:
        """One pixel of colour ``rgb`` in this format (index 0 for colour-map formats)."""
        value = 0
        if self.true_colour:
            for component, top, shift in zip(
                rgb,
                (self.red_max, self.green_max, self.blue_max),
                (self.red_shift, self.green_shift, self.blue_shift),
                strict=True,
            ):
                value |= (component * top // 255) << shift
        size = self.bits_per_pixel // 8
        value &= (1 << self.bits_per_pixel) - 1
        return value.to_bytes(size, "big" if self.big_endian else "little")


class RfbServer:
    """One domain's console: a listener on ``path`` and the clients connected to it."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.name = name
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def address(self) -> str:
        return f"unix:{self.path}"

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left behind by a daemon that did not stop cleanly
        server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        if self._closed:  # closed while it was being made
            server.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        self._server = server
        os.chmod(self.path, 0o600)

    def close(self) -> None:
        """Stop listening, hang up on every client and remove the socket."""
        self._closed = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._clients):
            writer.close()
        self._clients.clear()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def wait_closed(self) -> None:
        """Wait until the client sessions cut off by :meth:`close` have ended."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closed:
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._clients.add(writer)
        try:
            await self._session(reader, writer)
        except (ProtocolError, asyncio.IncompleteReadError, ConnectionError) as e:
            log.debug("console client of %s left: %s", self.name, e)
        finally:
            self._clients.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        minor = await self._handshake(reader, writer)
        if minor < 0:
            return
        await reader.readexactly(1)  # ClientInit: the shared flag; every client shares
        fmt = PixelFormat()
        name = self.name.encode("utf-8", "replace")
        writer.write(struct.pack(">HH", WIDTH, HEIGHT) + fmt.pack())
        writer.write(struct.pack(">I", len(name)) + name)
        await writer.drain()
        while True:
            kind = (await reader.readexactly(1))[0]
            if kind == SET_PIXEL_FORMAT:
                data = await reader.readexactly(19)
                fmt = PixelFormat.unpack(data[3:])
            elif kind == SET_ENCODINGS:
                (count,) = struct.unpack(">xH", await reader.readexactly(3))
                await reader.readexactly(4 * count)  # Raw is always allowed
            elif kind == UPDATE_REQUEST:
                incremental, x, y, w, h = struct.unpack(">BHHHH", await reader.readexactly(9))
                if not incremental:
                    await self._update(writer, fmt, x, y, w, h)
            elif kind == KEY_EVENT:
                await reader.readexactly(7)
            elif kind == POINTER_EVENT:
                await reader.readexactly(5)
            elif kind == CUT_TEXT:
                (length,) = struct.unpack(">3xi", await reader.readexactly(7))
                await reader.readexactly(abs(length))
            else:
                raise ProtocolError(f"unknown client message type {kind}")

    @staticmethod
    async def _handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        """Agree a protocol version and security None; the minor version, or -1 if refused."""
        writer.write(b"RFB 003.008\n")
        await writer.drain()
        version = await reader.readexactly(12)
        if not (version.startswith(b"RFB 003.") and version.endswith(b"\n")):
            raise ProtocolError(f"not an RFB client: {version!r}")
        try:
            minor = int(version[8:11])
        except ValueError:
            raise ProtocolError(f"bad RFB version {version!r}") from None
        if minor < 7:  # 3.3: the server names the security type
            writer.write(struct.pack(">I", SECURITY_NONE))
            await writer.drain()
            return minor
        writer.write(bytes((1, SECURITY_NONE)))
        await writer.drain()
        chosen = (await reader.readexactly(1))[0]
        if chosen != SECURITY_NONE:
            if minor >= 8:
                reason = b"only security type None is offered"
                writer.write(struct.pack(">II", 1, len(reason)) + reason)
                await writer.drain()
            return -1
        if minor >= 8:
            writer.write(struct.pack(">I", 0))  # SecurityResult: OK
            await writer.drain()
        return minor

    @staticmethod
    async def _update(
        writer: asyncio.StreamWriter, fmt: PixelFormat, x: int, y: int, w: int, h: int
    ) -> None:
        """One Raw rectangle covering the requested area (clipped to the screen)."""
        x, y = min(x, WIDTH), min(y, HEIGHT)
        w, h = min(w, WIDTH - x), min(h, HEIGHT - y)
        writer.write(struct.pack(">BxH", 0, 1) + struct.pack(">HHHHi", x, y, w, h, ENCODING_RAW))
        row = fmt.pixel(COLOUR) * w
        for _ in range(h):
            writer.write(row)
        await writer.drain()


class _Scratch:
    """The private temporary directory holding sockets, made when first needed."""

    def __init__(self) -> None:
        self.path: Path | None = None

    def get(self) -> Path:
        if self.path is None:
            self.path = Path(tempfile.mkdtemp(prefix="openxapi-vnc-"))
        return self.path

    def remove(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


def _release(servers: dict[str, RfbServer], scratch: _Scratch) -> None:
    """Close what a console set still holds (at close, or when it is dropped unclosed)."""
    for server in servers.values():
        server.close()
    servers.clear()
    scratch.remove()


class SimConsoles:
    """The consoles of every simulated domain, their sockets in one directory.

    With no directory (or one whose paths would be too long for a unix socket) the sockets
    go in a private temporary directory, removed when the last console closes. A set
    dropped without :meth:`close_all` still closes its sockets when it is collected.
    """

    def __init__(self, directory: Path | None) -> None:
        self._directory = directory
        self._scratch = _Scratch()
        self._servers: dict[str, RfbServer] = {}
        self._finalizer = weakref.finalize(self, _release, self._servers, self._scratch)

    def _socket_path(self, domid: int) -> Path:
        name = f"{domid}.sock"
        d = self._directory
        if d is not None and len(os.fsencode(d / name)) <= MAX_SOCKET_PATH:
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            return d / name
        return self._scratch.get() / name

    def address(self, uuid: str) -> str:
        """``unix:PATH`` of the domain's console, or "" when it has none."""
        server = self._servers.get(uuid)
        return server.address if server is not None else ""

    def planned(self, domid: int) -> str:
        """Where domain ``domid``'s console listens once opened (``unix:PATH``)."""
        return f"unix:{self._socket_path(domid)}"

    async def open(self, uuid: str, domid: int, name: str) -> str:
        """Give the domain a console (replacing any it had); returns its address, or ""
        when the socket could not be made (the domain runs on without a console)."""
        self.close(uuid)
        server = RfbServer(self._socket_path(domid), name)
        self._servers[uuid] = server  # listed before it listens: its directory stays
        try:
            await server.start()
        except OSError as e:
            log.warning("no console for domain %s: %s", uuid, e)
            if self._servers.get(uuid) is server:
                self.close(uuid)
            return ""
        return server.address if self._servers.get(uuid) is server else ""

    def close(self, uuid: str) -> None:
        """Close the domain's console, if it has one."""
        server = self._servers.pop(uuid, None)
        if server is not None:
            server.close()
        if not self._servers:
            self._scratch.remove()

    async def close_all(self) -> None:
        """Close every console and wait for their client sessions to end."""
        servers = list(self._servers.values())
        _release(self._servers, self._scratch)
        for server in servers:
            await server.wait_closed()
