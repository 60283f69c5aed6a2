"""How a simulated domain travels to another host: its record, over loopback TCP.

The receiver listens on an ephemeral loopback port for one connection, reads the sender's
domain record (JSON) to the end of the stream and acknowledges it with ``ok``; the domain
is then rebuilt from it with its boot, agent and behaviour state as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

from openxapi.xenops.backend import BackendError, DomainSpec

#: Seconds either side waits for the other.
WAIT = 60.0
ACK = b"ok"


@dataclass
class Incoming:
    """A domain waiting to be received: its listener and what arrived."""

    spec: DomainSpec
    server: asyncio.Server
    arrived: asyncio.Future[dict[str, Any]]

    def close(self) -> None:
        self.server.close()
        if not self.arrived.done():
            self.arrived.cancel()


async def listen(spec: DomainSpec) -> tuple[Incoming, str]:
    """Wait for ``spec``'s domain record; returns the listener and its address."""
    arrived: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            data = await asyncio.wait_for(reader.read(), WAIT)
            record = json.loads(data)
            if not isinstance(record, dict) or record.get("uuid") != spec.uuid:
                raise ValueError("not this domain's record")
            if not arrived.done():
                arrived.set_result(record)
            writer.write(ACK)
            await writer.drain()
        except (OSError, ValueError, TimeoutError) as e:
            if not arrived.done():
                arrived.set_exception(BackendError(spec.uuid, f"receiving the domain: {e}"))
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return Incoming(spec, server, arrived), f"127.0.0.1:{port}"


async def send(uuid: str, record: dict[str, Any], target: str) -> None:
    """Hand ``record`` to the receiver at ``target``; BackendError unless acknowledged."""
    host, _, port = target.rpartition(":")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), WAIT)
    except (OSError, ValueError, TimeoutError) as e:
        raise BackendError(uuid, f"cannot reach the receiving host: {e}") from None
    try:
        writer.write(json.dumps(record).encode())
        await writer.drain()
        writer.write_eof()
        ack = await asyncio.wait_for(reader.read(), WAIT)
    except (OSError, TimeoutError) as e:
        raise BackendError(uuid, f"sending the domain: {e}") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if ack != ACK:
        raise BackendError(uuid, "the receiving host did not take the domain")


async def received(incoming: Incoming) -> dict[str, Any]:
    """The record that arrived; BackendError if none did in time."""
    try:
        return await asyncio.wait_for(asyncio.shield(incoming.arrived), WAIT)
    except TimeoutError:
        raise BackendError(incoming.spec.uuid, "the domain did not arrive") from None
    finally:
        incoming.close()
