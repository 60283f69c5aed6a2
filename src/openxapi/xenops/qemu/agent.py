"""The host side of the guest agent (``qemu-ga`` over virtio-serial) and what it reports.

The agent socket is QEMU's end of a virtio-serial port: connecting always succeeds, but
nobody answers until the guest's agent runs, and a half-read reply from an earlier
connection may still be in flight. Each exchange therefore starts with
``guest-sync-delimited`` and discards everything up to its 0xFF delimiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from openxapi.xenops.backend import GuestInfo

DELIMITER = b"\xff"


class AgentUnavailable(Exception):
    """The guest agent did not answer (not running yet, or not installed)."""


class Agent:
    """A short-lived connection to one guest's agent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, path: Path, timeout: float = 1.0) -> Agent:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(path), limit=1 << 20), timeout
            )
        except (OSError, TimeoutError) as e:
            raise AgentUnavailable(str(e)) from None
        agent = cls(reader, writer)
        try:
            await agent._sync(timeout)
        except BaseException:
            await agent.close()
            raise
        return agent

    async def _sync(self, timeout: float) -> None:
        token = random.randrange(1, 1 << 31)
        self._send("guest-sync-delimited", {"id": token})
        deadline = time.monotonic() + timeout
        try:
            while True:
                await asyncio.wait_for(
                    self._reader.readuntil(DELIMITER), max(deadline - time.monotonic(), 0.001)
                )
                line = await asyncio.wait_for(
                    self._reader.readline(), max(deadline - time.monotonic(), 0.001)
                )
                with contextlib.suppress(ValueError):
                    if json.loads(line).get("return") == token:
                        return
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            raise AgentUnavailable("no answer to guest-sync-delimited") from None

    def _send(self, cmd: str, args: Mapping[str, object] | None = None) -> None:
        msg: dict[str, object] = {"execute": cmd}
        if args:
            msg["arguments"] = dict(args)
        self._writer.write(json.dumps(msg).encode() + b"\n")

    async def call(
        self,
        cmd: str,
        args: Mapping[str, object] | None = None,
        *,
        timeout: float = 5.0,
        reply: bool = True,
    ) -> Any:
        """Run one agent command; its ``return`` value."""
        self._send(cmd, args)
        if not reply:
            await self._writer.drain()
            return None
        try:
            line = await asyncio.wait_for(self._reader.readline(), timeout)
        except (TimeoutError, OSError) as e:
            raise AgentUnavailable(f"{cmd}: {e}") from None
        if not line:
            raise AgentUnavailable(f"{cmd}: connection closed")
        answer = json.loads(line.lstrip(DELIMITER))
        if "error" in answer:
            raise AgentUnavailable(f"{cmd}: {answer['error'].get('desc', answer['error'])}")
        return answer.get("return")

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


def _version_parts(version: str) -> dict[str, str]:
    parts = [*version.split("."), "0", "0", "0"][:3]
    return {"major": parts[0], "minor": parts[1], "micro": parts[2], "build": "0"}


def guest_networks(interfaces: list[Mapping[str, Any]], macs: Mapping[str, str]) -> dict[str, str]:
    """The reference's VM_guest_metrics.networks: keyed by VIF device, found by MAC."""
    out: dict[str, str] = {}
    for iface in interfaces:
        device = macs.get(str(iface.get("hardware-address", "")).lower())
        if device is None:
            continue
        v4 = v6 = 0
        for addr in iface.get("ip-addresses", []):
            ip = str(addr.get("ip-address", ""))
            if addr.get("ip-address-type") == "ipv4":
                if v4 == 0:
                    out[f"{device}/ip"] = ip
                out[f"{device}/ipv4/{v4}"] = ip
                v4 += 1
            elif addr.get("ip-address-type") == "ipv6":
                out[f"{device}/ipv6/{v6}"] = ip
                v6 += 1
    return out


def guest_info(
    info: Mapping[str, Any],
    osinfo: Mapping[str, Any],
    interfaces: list[Mapping[str, Any]],
    macs: Mapping[str, str],
    hostname: str,
) -> GuestInfo:
    """What the agent said, in the shape of the reference's VM_guest_metrics."""
    version = str(osinfo.get("version-id", ""))
    major, _, minor = version.partition(".")
    os_version = {
        "name": str(osinfo.get("pretty-name") or osinfo.get("name") or ""),
        "distro": str(osinfo.get("id", "")),
        "major": major,
        "minor": minor or "0",
        "uname": str(osinfo.get("kernel-release", "")),
    }
    commands = {
        str(c.get("name")) for c in info.get("supported_commands", []) if c.get("enabled", True)
    }
    other = {"feature-guest-agent": "1", "has-vendor-device": "0"}
    if "guest-shutdown" in commands:
        other.update({"feature-shutdown": "1", "feature-poweroff": "1", "feature-reboot": "1"})
    if "guest-suspend-ram" in commands:
        other["feature-suspend"] = "1"
    return GuestInfo(
        os_version=os_version,
        networks=guest_networks(interfaces, macs),
        pv_drivers_version=_version_parts(str(info.get("version", "0.0.0"))),
        pv_drivers_detected=True,
        memory={},
        other=other,
        netbios_name={"host_name": hostname} if hostname else {},
        last_updated=time.time(),
    )


async def query_guest(path: Path, macs: Mapping[str, str], timeout: float = 2.0) -> GuestInfo:
    """Ask the agent everything VM_guest_metrics holds; AgentUnavailable when it is silent."""
    agent = await Agent.connect(path, timeout)
    try:
        info = await agent.call("guest-info", timeout=timeout)
        osinfo = await agent.call("guest-get-osinfo", timeout=timeout)
        interfaces = await agent.call("guest-network-get-interfaces", timeout=timeout)
        try:
            host = await agent.call("guest-get-host-name", timeout=timeout)
            hostname = str(host.get("host-name", ""))
        except AgentUnavailable:
            hostname = ""
    finally:
        await agent.close()
    return guest_info(info, osinfo, interfaces or [], macs, hostname)


async def request_shutdown(path: Path, mode: str, timeout: float = 2.0) -> None:
    """Ask the agent to power off, reboot or halt the guest (it answers nothing on success)."""
    agent = await Agent.connect(path, timeout)
    try:
        await agent.call("guest-shutdown", {"mode": mode}, reply=False)
    finally:
        await agent.close()
