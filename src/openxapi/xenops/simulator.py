"""A simulated hypervisor: domains are records with timers, no guest code runs.

It stands in for QEMU in tests, demos and scale runs. Boot and shutdown take configurable
times; each guest may honour or ignore a clean shutdown (hint ``sim_ignore_clean_shutdown``)
and may be crashed on demand; once "booted" a simulated guest agent reports what the
reference's agent does. Every domain has a small real RFB console on a unix socket
(:mod:`openxapi.xenops.sim_console`). Domains and suspend images are kept in a small JSON
file under the data directory, so simulated guests outlive a daemon restart and are
re-adopted.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openxapi.xenops import sim_migrate
from openxapi.xenops.backend import (
    BackendError,
    BadDomainState,
    DomainBackend,
    DomainExists,
    DomainInfo,
    DomainNotFound,
    DomainSpec,
    DomainState,
    GuestInfo,
    HostCapacity,
    InsufficientResources,
    ShutdownTimeout,
    SuspendImage,
)
from openxapi.xenops.sim_console import SimConsoles

GIB = 1 << 30
#: Enough for 1,000 VMs of the largest default template (2 GiB) with room to spare.
DEFAULT_HOST_MEMORY = 4096 * GIB
DEFAULT_HOST_CPUS = 64
#: Hints read from a domain's spec (the API layer fills them from VM.other_config).
HINT_IGNORE_CLEAN = "sim_ignore_clean_shutdown"
HINT_BOOT_TIME = "sim_boot_time"
HINT_NO_AGENT = "sim_no_agent"
#: "windows": the guest agent reports a Windows OS that can run sysprep.
HINT_OS = "sim_os"
#: Seconds a simulated sysprep runs before the guest powers off (default: shutdown_time).
HINT_SYSPREP_TIME = "sim_sysprep_time"


@dataclass(slots=True)
class SimulatorSettings:
    """Timings and host size of the simulated hypervisor."""

    boot_time: float = 0.0
    shutdown_time: float = 0.0
    host_memory: int = DEFAULT_HOST_MEMORY
    host_cpus: int = DEFAULT_HOST_CPUS


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


LINUX_OS = {
    "name": "Debian GNU/Linux 12 (bookworm)",
    "distro": "debian",
    "major": "12",
    "minor": "0",
    "uname": "6.1.0-simulated-amd64",
}
#: What the reference's Windows agent reports (name|system root|boot partition).
WINDOWS_OS = {
    "name": "Microsoft Windows Server 2022 Standard|C:\\Windows|\\Device\\Harddisk0\\Partition2",
    "distro": "windows",
    "major": "10",
    "minor": "0",
    "spmajor": "0",
    "spminor": "0",
    "build": "20348",
}


def guest_report(dom: Mapping[str, Any]) -> GuestInfo:
    """What the simulated agent says about a booted guest (shaped as the reference's)."""
    networks: dict[str, str] = {}
    for i, nic in enumerate(dom.get("nics", [])):
        ip = f"10.0.{dom['domid'] % 250}.{10 + i}"
        networks.update(
            {
                f"{nic}/ip": ip,
                f"{nic}/ipv4/0": ip,
                f"{nic}/ipv6/0": f"fe80::{dom['domid']:x}:{i + 1}",
            }
        )
    windows = str(dom.get("hints", {}).get(HINT_OS, "")).lower() == "windows"
    return GuestInfo(
        os_version=WINDOWS_OS if windows else LINUX_OS,
        networks=networks,
        pv_drivers_version={"major": "8", "minor": "4", "micro": "0", "build": "1"},
        pv_drivers_detected=True,
        memory={"total": str(dom["memory"] // 1024), "free": str(dom["memory"] // 2048)},
        other={
            "feature-shutdown": "1",
            "feature-poweroff": "1",
            "feature-reboot": "1",
            "feature-suspend": "1",
            "feature-vcpu-hotplug": "1",
            "has-vendor-device": "0",
            "platform-feature-multiprocessor-suspend": "1",
            **({"feature-sysprep": "1"} if windows else {}),
        },
        netbios_name={"host_name": str(dom["name"])[:15] or "guest"},
        last_updated=float(dom["booted_at"]),
    )


class SimulatorBackend(DomainBackend):
    """Simulated domains, persisted in ``<state_dir>/domains.json``; console sockets in
    ``<state_dir>/vnc`` (a temporary directory without a state directory)."""

    name = "simulator"

    def __init__(self, state_dir: Path | None, settings: SimulatorSettings | None = None) -> None:
        self.settings = settings or SimulatorSettings()
        self._path = state_dir / "domains.json" if state_dir is not None else None
        self._domains: dict[str, dict[str, Any]] = {}
        self._images: dict[str, dict[str, Any]] = {}
        self._next_domid = 1
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._consoles = SimConsoles(state_dir / "vnc" if state_dir is not None else None)

    @property
    def capabilities(self) -> Mapping[str, bool]:
        return {
            "pause": True,
            "suspend": True,
            "clean_shutdown": True,
            "clean_reboot": True,
            "guest_agent": True,
            "crash_injection": True,
            "live_migrate": True,
            "survives_restart": self._path is not None,
        }

    # ---- persistence -----------------------------------------------------------------
    async def open(self) -> list[DomainInfo]:
        if self._path is not None and self._path.exists():
            data = json.loads(self._path.read_text())
            self._domains = data.get("domains", {})
            self._images = data.get("images", {})
            self._next_domid = int(data.get("next_domid", 1))
        for uuid, dom in list(self._domains.items()):
            if dom["state"] in ("running", "paused") and not dom.get("booted"):
                self._schedule_boot(uuid)
        return [self._info(d) for d in self._domains.values()]

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._save()
        await self._consoles.close_all()

    def _save(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        data = {"domains": self._domains, "images": self._images, "next_domid": self._next_domid}
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self._path)

    def _dirty(self) -> None:
        """Write soon: many changes in one burst (a boot storm) cost one write."""
        if self._path is None or self._flush is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._save()
            return

        def flush() -> None:
            self._flush = None
            self._save()

        self._flush = loop.call_later(0.05, flush)

    # ---- helpers ---------------------------------------------------------------------
    def _info(self, dom: Mapping[str, Any]) -> DomainInfo:
        guest = None
        if dom.get("booted") and not _truthy(dom["hints"].get(HINT_NO_AGENT)):
            guest = guest_report(dom)
        state: DomainState = dom["state"]
        return DomainInfo(
            uuid=dom["uuid"],
            domid=int(dom["domid"]),
            state=state,
            memory_actual=int(dom["memory"]),
            vcpus=int(dom["vcpus"]),
            start_time=float(dom["start_time"]),
            hvm=bool(dom["hvm"]),
            guest=guest,
            vnc=self._consoles.address(dom["uuid"]) or self._consoles.planned(int(dom["domid"])),
        )

    def _get(self, uuid: str) -> dict[str, Any]:
        dom = self._domains.get(uuid)
        if dom is None:
            raise DomainNotFound(uuid)
        return dom

    def _used_memory(self) -> int:
        return sum(int(d["memory"]) for d in self._domains.values())

    def _boot_time(self, dom: Mapping[str, Any]) -> float:
        hint = dom["hints"].get(HINT_BOOT_TIME)
        return float(hint) if hint else self.settings.boot_time

    def _schedule_boot(self, uuid: str) -> None:
        dom = self._domains[uuid]
        delay = max(0.0, float(dom["start_time"]) + self._boot_time(dom) - time.time())
        if delay <= 0:
            self._booted(uuid, notify=False)
            return
        loop = asyncio.get_running_loop()
        self._timers[uuid] = loop.call_later(delay, self._booted, uuid, True)

    def _booted(self, uuid: str, notify: bool) -> None:
        self._timers.pop(uuid, None)
        dom = self._domains.get(uuid)
        if dom is None or dom.get("booted"):
            return
        dom["booted"] = True
        dom["booted_at"] = time.time()
        self._dirty()
        if notify:
            self._changed(uuid)

    def _boot(self, dom: dict[str, Any], paused: bool) -> None:
        dom.update(
            state="paused" if paused else "running",
            start_time=time.time(),
            booted=False,
            booted_at=0.0,
        )
        self._cancel_timer(dom["uuid"])
        self._schedule_boot(dom["uuid"])

    def _cancel_timer(self, uuid: str) -> None:
        timer = self._timers.pop(uuid, None)
        if timer is not None:
            timer.cancel()

    def _remove(self, uuid: str) -> None:
        self._cancel_timer(uuid)
        self._domains.pop(uuid, None)
        self._consoles.close(uuid)
        self._dirty()

    async def console(self, uuid: str) -> str:
        """Consoles are opened when a client first connects: thousands of simulated
        domains need no listening sockets until someone looks at them."""
        dom = self._domains.get(uuid)
        if dom is None or dom["state"] not in ("running", "paused"):
            return ""
        address = self._consoles.address(uuid)
        if address:
            return address
        address = await self._consoles.open(uuid, int(dom["domid"]), str(dom["name"]))
        if self._domains.get(uuid) is not dom:  # the domain went while the socket was made
            self._consoles.close(uuid)
            return ""
        return address

    # ---- the interface ---------------------------------------------------------------
    async def start(self, spec: DomainSpec, paused: bool = False) -> DomainInfo:
        if spec.uuid in self._domains:
            raise DomainExists(spec.uuid)
        free = self.settings.host_memory - self._used_memory()
        if spec.memory > free:
            raise InsufficientResources(spec.uuid, f"needs {spec.memory}, free {free}")
        dom: dict[str, Any] = {
            "uuid": spec.uuid,
            "name": spec.name,
            "domid": self._next_domid,
            "memory": spec.memory,
            "vcpus": spec.vcpus,
            "hvm": spec.hvm,
            "nics": [n.device for n in spec.nics],
            "hints": dict(spec.hints),
        }
        self._next_domid += 1
        self._domains[spec.uuid] = dom
        self._boot(dom, paused)
        self._dirty()
        return self._info(dom)

    async def clean_shutdown(self, uuid: str, timeout: float) -> None:
        dom = self._get(uuid)
        if dom["state"] != "running":
            raise BadDomainState(uuid, dom["state"])
        await self._await_guest(dom, timeout)
        self._remove(uuid)

    async def _await_guest(self, dom: Mapping[str, Any], timeout: float) -> None:
        """Wait while the guest acts on a request; ShutdownTimeout if it will not in time."""
        if _truthy(dom["hints"].get(HINT_IGNORE_CLEAN)):
            await asyncio.sleep(timeout)
            raise ShutdownTimeout(dom["uuid"], f"{timeout}")
        if self.settings.shutdown_time > timeout:
            await asyncio.sleep(timeout)
            raise ShutdownTimeout(dom["uuid"], f"{timeout}")
        await asyncio.sleep(self.settings.shutdown_time)
        if self._domains.get(dom["uuid"]) is not dom or dom["state"] != "running":
            raise BadDomainState(dom["uuid"], "changed while shutting down")

    async def hard_shutdown(self, uuid: str) -> None:
        self._remove(uuid)

    async def clean_reboot(self, uuid: str, timeout: float) -> DomainInfo:
        dom = self._get(uuid)
        if dom["state"] != "running":
            raise BadDomainState(uuid, dom["state"])
        await self._await_guest(dom, timeout)
        self._boot(dom, paused=False)
        self._dirty()
        return self._info(dom)

    async def migrate_local(self, uuid: str) -> DomainInfo:
        dom = self._get(uuid)
        if dom["state"] != "running":
            raise BadDomainState(uuid, dom["state"])
        self._consoles.close(uuid)  # the new instance gets its own console
        dom["domid"] = self._next_domid
        self._next_domid += 1
        self._dirty()
        return self._info(dom)

    # ---- migration to another host (see sim_migrate) -------------------------------------
    _incoming: dict[str, sim_migrate.Incoming] | None = None

    def _incoming_table(self) -> dict[str, sim_migrate.Incoming]:
        if self._incoming is None:
            self._incoming = {}
        return self._incoming

    async def migrate_receive(self, spec: DomainSpec) -> str:
        if spec.uuid in self._domains or spec.uuid in self._incoming_table():
            raise DomainExists(spec.uuid)
        free = self.settings.host_memory - self._used_memory()
        if spec.memory > free:
            raise InsufficientResources(spec.uuid, f"needs {spec.memory}, free {free}")
        incoming, address = await sim_migrate.listen(spec)
        self._incoming_table()[spec.uuid] = incoming
        return address

    async def migrate_send(self, uuid: str, target: str) -> None:
        dom = self._get(uuid)
        if dom["state"] not in ("running", "paused"):
            raise BadDomainState(uuid, dom["state"])
        await sim_migrate.send(uuid, {k: v for k, v in dom.items() if k != "state"}, target)
        dom["state"] = "paused"
        self._dirty()

    async def migrate_finish(self, uuid: str) -> DomainInfo:
        incoming = self._incoming_table().pop(uuid, None)
        if incoming is None:
            raise DomainNotFound(uuid, "no domain is being received")
        saved = await sim_migrate.received(incoming)
        if uuid in self._domains:
            raise DomainExists(uuid)
        spec = incoming.spec
        dom = {
            **saved,
            "uuid": uuid,
            "name": spec.name,
            "state": "running",
            "domid": self._next_domid,
            "nics": [n.device for n in spec.nics],
        }
        self._next_domid += 1
        self._domains[uuid] = dom
        if not dom.get("booted"):
            self._schedule_boot(uuid)
        self._dirty()
        return self._info(dom)

    async def migrate_abort(self, uuid: str) -> None:
        incoming = self._incoming_table().pop(uuid, None)
        if incoming is not None:
            incoming.close()
        await self.hard_shutdown(uuid)

    async def read_image(self, image: SuspendImage) -> bytes | None:
        saved = self._images.get(image.vdi_uuid)
        return None if saved is None else json.dumps(saved).encode()

    async def write_image(self, uuid: str, image: SuspendImage, data: bytes) -> None:
        saved = json.loads(data)
        if not isinstance(saved, dict):
            raise BadDomainState(uuid, "not a suspend image")
        self._images[image.vdi_uuid] = {**saved, "uuid": uuid}
        self._dirty()

    async def hard_reboot(self, uuid: str) -> DomainInfo:
        dom = self._get(uuid)
        self._boot(dom, paused=False)
        self._dirty()
        return self._info(dom)

    async def pause(self, uuid: str) -> DomainInfo:
        dom = self._get(uuid)
        if dom["state"] not in ("running", "paused"):
            raise BadDomainState(uuid, dom["state"])
        dom["state"] = "paused"
        self._dirty()
        return self._info(dom)

    async def unpause(self, uuid: str) -> DomainInfo:
        dom = self._get(uuid)
        if dom["state"] not in ("running", "paused"):
            raise BadDomainState(uuid, dom["state"])
        dom["state"] = "running"
        self._dirty()
        return self._info(dom)

    async def suspend(self, uuid: str, image: SuspendImage) -> None:
        dom = self._get(uuid)
        if dom["state"] not in ("running", "paused"):
            raise BadDomainState(uuid, dom["state"])
        self._images[image.vdi_uuid] = {k: v for k, v in dom.items() if k != "state"}
        self._remove(uuid)

    async def resume(
        self, spec: DomainSpec, image: SuspendImage, paused: bool = False
    ) -> DomainInfo:
        saved = self._images.get(image.vdi_uuid)
        if saved is None or saved["uuid"] != spec.uuid:
            raise DomainNotFound(spec.uuid, f"no suspend image in {image.vdi_uuid}")
        if spec.uuid in self._domains:
            raise DomainExists(spec.uuid)
        free = self.settings.host_memory - self._used_memory()
        if int(saved["memory"]) > free:
            raise InsufficientResources(spec.uuid, f"needs {saved['memory']}, free {free}")
        dom = {**saved, "state": "paused" if paused else "running", "domid": self._next_domid}
        dom["nics"] = [n.device for n in spec.nics]
        self._next_domid += 1
        del self._images[image.vdi_uuid]
        self._domains[spec.uuid] = dom
        if not dom.get("booted"):
            self._schedule_boot(spec.uuid)
        self._dirty()
        return self._info(dom)

    async def sysprep(self, uuid: str, timeout: float) -> None:
        """The simulated agent "runs" sysprep, then the guest powers off."""
        dom = self._get(uuid)
        if dom["state"] != "running":
            raise BadDomainState(uuid, dom["state"])
        info = self._info(dom)
        if info.guest is None or info.guest.other.get("feature-sysprep") != "1":
            raise BackendError(uuid, "the guest cannot run sysprep")
        hint = dom["hints"].get(HINT_SYSPREP_TIME)
        delay = float(hint) if hint else self.settings.shutdown_time
        if delay > timeout:
            await asyncio.sleep(timeout)
            raise ShutdownTimeout(uuid, f"{timeout}")
        await asyncio.sleep(delay)
        if self._domains.get(uuid) is not dom or dom["state"] != "running":
            raise BadDomainState(uuid, "changed during sysprep")
        self._remove(uuid)

    async def set_vcpus(self, uuid: str, count: int) -> DomainInfo:
        dom = self._get(uuid)
        dom["vcpus"] = count
        self._dirty()
        return self._info(dom)

    async def copy_image(self, src: SuspendImage, dst: SuspendImage) -> None:
        saved = self._images.get(src.vdi_uuid)
        if saved is not None:
            self._images[dst.vdi_uuid] = copy.deepcopy(saved)
            self._dirty()

    async def info(self, uuid: str) -> DomainInfo | None:
        dom = self._domains.get(uuid)
        return None if dom is None else self._info(dom)

    async def list_domains(self) -> list[DomainInfo]:
        return [self._info(d) for d in self._domains.values()]

    async def host_capacity(self) -> HostCapacity:
        total = self.settings.host_memory
        return HostCapacity(total, total - self._used_memory(), self.settings.host_cpus)

    # ---- simulation controls (tests and demos) -----------------------------------------
    def crash(self, uuid: str) -> None:
        """Make the guest crash: its domain stays, in state ``crashed``, until destroyed."""
        dom = self._get(uuid)
        self._cancel_timer(uuid)
        dom["state"] = "crashed"
        self._dirty()
        self._changed(uuid)

    def guest_shutdown(self, uuid: str) -> None:
        """The guest powers itself off (as from inside: ``poweroff``)."""
        self._get(uuid)
        self._remove(uuid)
        self._changed(uuid)

    def set_hint(self, uuid: str, key: str, value: str) -> None:
        """Change a running guest's behaviour, e.g. make it ignore clean shutdown."""
        self._get(uuid)["hints"][key] = value
        self._dirty()

    def has_image(self, vdi_uuid: str) -> bool:
        """Whether a suspend image is held for ``vdi_uuid``."""
        return vdi_uuid in self._images

    def drop_image(self, vdi_uuid: str) -> None:
        """Forget a suspend image (its VDI was destroyed)."""
        with contextlib.suppress(KeyError):
            del self._images[vdi_uuid]
        self._dirty()
