"""Live migration of a QEMU domain to another host's QEMU, over loopback TCP.

The receiver starts QEMU from the VM's own records with ``-incoming defer`` (its port
forwards left out: the sender's QEMU still holds those ports), exports the domain's
writable disks over NBD and listens for the migration stream on an ephemeral port. The
sender mirrors each writable disk into those exports (``drive-mirror``, the guest running
on), then, once every mirror is in step, streams the guest's memory and device state
(``migrate``); when that completes the mirrors are ended in step and the sender's guest
stays paused. The receiver then stops its NBD server and runs the guest; once the sender's
QEMU is gone it takes over the port forwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from openxapi.xenops.backend import BackendError, DomainInfo, DomainSpec
from openxapi.xenops.qemu import cmdline
from openxapi.xenops.qemu.monitor import MonitorGone

if TYPE_CHECKING:
    from openxapi.xenops.qemu.backend import QemuBackend, _Domain

#: Seconds the disk mirrors may take to come in step, and the memory stream to finish.
MIRROR_WAIT = 1800.0
PLUGGED = "/machine/peripheral/"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def writable_drives(spec: DomainSpec) -> list[str]:
    """The drives a migration mirrors: the domain's writable disk images."""
    return [
        cmdline.drive_id(d.userdevice)
        for d in spec.disks
        if d.path and not d.cdrom and not d.read_only
    ]


async def receive(backend: QemuBackend, spec: DomainSpec) -> str:
    """A paused domain waiting for the sender; the target (JSON) the sender streams to."""
    d = await backend._launch(replace(spec, forwards={}), incoming="defer")
    try:
        drives = writable_drives(spec)
        nbd = ""
        if drives:
            port = _free_port()
            addr = {"type": "inet", "data": {"host": "127.0.0.1", "port": str(port)}}
            await backend._qmp(d, "nbd-server-start", {"addr": addr})
            nodes = {
                str(b["device"]): str(b["inserted"]["node-name"])
                for b in await backend._qmp(d, "query-block")
                if b.get("inserted")
            }
            for drive in drives:
                await backend._qmp(
                    d,
                    "block-export-add",
                    {
                        "type": "nbd",
                        "id": f"mig-{drive}",
                        "node-name": nodes.get(drive, drive),
                        "name": drive,
                        "writable": True,
                    },
                )
            nbd = f"127.0.0.1:{port}"
        await backend._qmp(d, "migrate-incoming", {"uri": "tcp:127.0.0.1:0"})
        info = await backend._qmp(d, "query-migrate")
        ports = [a.get("port") for a in info.get("socket-address", []) if a.get("port")]
        if not ports:
            raise BackendError(spec.uuid, "QEMU did not say where it listens for the guest")
    except BaseException:
        await backend._stop_process(d)
        raise
    return json.dumps({"memory": f"tcp:127.0.0.1:{ports[0]}", "nbd": nbd, "drives": drives})


async def _jobs(backend: QemuBackend, d: _Domain) -> dict[str, dict[str, Any]]:
    return {str(j["device"]): j for j in await backend._qmp(d, "query-block-jobs")}


async def _wait_ready(backend: QemuBackend, d: _Domain, jobs: list[str]) -> None:
    deadline = time.monotonic() + MIRROR_WAIT
    while True:
        now = await _jobs(backend, d)
        missing = [j for j in jobs if j not in now]
        if missing:
            raise BackendError(d.uuid, f"mirroring the disks failed ({', '.join(missing)})")
        if all(now[j].get("ready") for j in jobs):
            return
        if time.monotonic() > deadline:
            raise BackendError(d.uuid, "mirroring the disks timed out")
        await asyncio.sleep(0.05)


async def _end_jobs(backend: QemuBackend, d: _Domain, jobs: list[str], force: bool) -> None:
    for job in jobs:
        with contextlib.suppress(BackendError):
            await backend._qmp(d, "block-job-cancel", {"device": job, "force": force})
    deadline = time.monotonic() + 60.0
    while jobs and time.monotonic() < deadline:
        now = await _jobs(backend, d)
        if not any(j in now for j in jobs):
            return
        await asyncio.sleep(0.05)
    if jobs and not force:
        raise BackendError(d.uuid, "the disk mirrors did not end")


async def _assert_plain(backend: QemuBackend, d: _Domain) -> None:
    """The receiver builds the domain from its records: nothing hot-plugged may differ."""
    if d.nodes:
        raise BackendError(d.uuid, "disks were hot-plugged: restart the VM to migrate it")
    slots = await backend._qmp(d, "query-hotpluggable-cpus")
    if any(str(c.get("qom-path", "")).startswith(PLUGGED) for c in slots):
        raise BackendError(d.uuid, "vCPUs were hot-plugged: restart the VM to migrate it")


async def send(backend: QemuBackend, uuid: str, target: str) -> None:
    """Mirror the disks and stream the guest to ``target``; on failure it runs on here."""
    d = backend._get(uuid)
    try:
        spec = json.loads(target)
        memory, nbd, drives = str(spec["memory"]), str(spec["nbd"]), list(spec["drives"])
    except (ValueError, KeyError, TypeError):
        raise BackendError(uuid, "a malformed migration target") from None
    await _assert_plain(backend, d)
    was_running = d.state == "running"
    jobs: list[str] = []
    try:
        host, _, port = nbd.rpartition(":")
        for drive in drives:
            job = f"mig-{drive}"
            await backend._qmp(
                d,
                "drive-mirror",
                {
                    "device": str(drive),
                    "job-id": job,
                    "target": f"nbd:{host}:{port}:exportname={drive}",
                    "sync": "full",
                    "mode": "existing",
                    "format": "raw",
                },
            )
            jobs.append(job)
        await _wait_ready(backend, d, jobs)
        await backend._qmp(d, "migrate-set-parameters", {"max-bandwidth": 1 << 40})
        await backend._qmp(d, "migrate", {"uri": memory})
        await backend._wait_migration(d)
        d.state = "paused"
        await _end_jobs(backend, d, jobs, force=False)
    except BaseException:
        with contextlib.suppress(BackendError, MonitorGone):
            await backend._qmp(d, "migrate_cancel")
        with contextlib.suppress(BackendError, MonitorGone):
            await _end_jobs(backend, d, jobs, force=True)
        if was_running and uuid in backend._domains:
            with contextlib.suppress(BackendError, MonitorGone):
                status = await backend._qmp(d, "query-status")
                if status.get("status") != "running":
                    await backend._qmp(d, "cont")
                d.state = "running"
        raise


async def finish(backend: QemuBackend, uuid: str) -> DomainInfo:
    """The guest is in: stop serving its disks and run it."""
    d = backend._get(uuid)
    try:
        await backend._wait_incoming(d)
        with contextlib.suppress(BackendError):
            await backend._qmp(d, "nbd-server-stop")
        await backend._qmp(d, "cont")
    except BaseException:
        await backend._stop_process(d)
        raise
    d.state = "running"
    d.agent_kick.set()
    return d.info()


async def add_forwards(
    backend: QemuBackend, uuid: str, forwards: dict[str, tuple[str, ...]]
) -> None:
    """The port forwards the sender's QEMU held, now that it is gone."""
    d = backend._get(uuid)
    for device, rules in forwards.items():
        for rule in rules:
            line = f"hostfwd_add vif{device} tcp:127.0.0.1:{rule}"
            await backend._qmp(d, "human-monitor-command", {"command-line": line})
