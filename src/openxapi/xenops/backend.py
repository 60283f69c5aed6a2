"""The narrow interface every domain backend (simulator, QEMU) implements.

Backends know nothing of the object store or the API: they take a plain :class:`DomainSpec`
and return plain :class:`DomainInfo`; the API layer records what they report. Domains are
named by the VM's uuid. Every method is a coroutine so a backend may do real I/O.

Each method's docstring states its contract: the end state, whether a repeat is harmless
(idempotency) and what is left behind when it fails. The contract tests in
``tests/xenops/test_backend_contract.py`` check these for every implementation.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

DomainState = Literal["running", "paused", "halted", "suspended", "crashed"]

#: What a backend can do; the API layer refuses what a backend lacks.
CAPABILITY_NAMES = (
    "pause",
    "suspend",
    "clean_shutdown",
    "clean_reboot",
    "guest_agent",
    "crash_injection",
    "live_migrate",
    "survives_restart",
)


class BackendError(Exception):
    """A backend failure; ``code`` names the kind (the API layer maps it to an API error)."""

    code = "INTERNAL_ERROR"

    def __init__(self, uuid: str, detail: str = "") -> None:
        super().__init__(f"{self.code}: {uuid} {detail}".strip())
        self.uuid = uuid
        self.detail = detail


class DomainNotFound(BackendError):
    code = "DOMAIN_NOT_FOUND"


class DomainExists(BackendError):
    code = "DOMAIN_EXISTS"


class BadDomainState(BackendError):
    """The domain is not in a state the operation starts from."""

    code = "BAD_DOMAIN_STATE"


class ShutdownTimeout(BackendError):
    """The guest did not act on a clean shutdown or reboot request in time."""

    code = "SHUTDOWN_TIMEOUT"


class InsufficientResources(BackendError):
    code = "INSUFFICIENT_RESOURCES"


@dataclass(frozen=True, slots=True)
class NicSpec:
    """One guest network card, as attached by the network layer."""

    device: str
    mac: str
    mtu: int = 1500
    bridge: str = ""
    #: QEMU ``-netdev`` options from the network layer ("type" first; empty: restricted
    #: user-mode NAT).
    netdev: Mapping[str, str] = field(default_factory=dict)
    #: The network namespace a tap lives in (the domain is launched inside it).
    netns: str = ""


@dataclass(frozen=True, slots=True)
class DiskSpec:
    """One guest disk or CD: its device slot and where its data lives."""

    userdevice: str
    location: str
    read_only: bool = False
    cdrom: bool = False
    bootable: bool = False
    #: The image file a hypervisor opens and its format (empty: the disk is simulated).
    path: str = ""
    format: str = ""


@dataclass(frozen=True, slots=True)
class FirmwareSpec:
    """UEFI firmware for a domain: whether it enforces Secure Boot, and the variable store
    it starts from (varstored's serialisation in base64; empty for a blank store)."""

    secureboot: bool = False
    variables: str = ""


@dataclass(frozen=True, slots=True)
class DomainSpec:
    """What to build a domain from: everything a backend needs, nothing of the API."""

    uuid: str
    name: str
    memory: int
    vcpus: int
    hvm: bool = True
    boot_order: str = "cd"
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    vcpus_max: int = 0
    #: Direct kernel boot (the template's kernel, initrd and command line), when set.
    kernel: str = ""
    initrd: str = ""
    cmdline: str = ""
    #: Per NIC device: TCP port forwards ``HOSTPORT-:GUESTPORT`` bound to 127.0.0.1.
    forwards: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: Free-form hints (the simulator reads its per-guest behaviour from here).
    hints: Mapping[str, str] = field(default_factory=dict)
    #: UEFI firmware; None boots the machine's BIOS.
    firmware: FirmwareSpec | None = None


@dataclass(frozen=True, slots=True)
class GuestInfo:
    """What a guest agent reports once the guest is up (the reference's VM_guest_metrics)."""

    os_version: Mapping[str, str]
    networks: Mapping[str, str]
    pv_drivers_version: Mapping[str, str]
    pv_drivers_detected: bool
    memory: Mapping[str, str]
    other: Mapping[str, str]
    netbios_name: Mapping[str, str] = field(default_factory=dict)
    last_updated: float = 0.0


@dataclass(frozen=True, slots=True)
class DomainInfo:
    """A live snapshot of one domain."""

    uuid: str
    domid: int
    state: DomainState
    memory_actual: int
    vcpus: int
    start_time: float
    hvm: bool = True
    guest: GuestInfo | None = None
    #: Fraction of one CPU each vCPU used lately (empty: not measured).
    vcpus_utilisation: tuple[float, ...] = ()
    #: Where the domain's graphical console (RFB/VNC) listens: ``unix:PATH`` or
    #: ``HOST:PORT`` on loopback; empty when it has none.
    vnc: str = ""


@dataclass(frozen=True, slots=True)
class SuspendImage:
    """Where a suspended domain's memory image lives (a suspend VDI of the storage layer)."""

    vdi_uuid: str
    location: str
    size: int
    #: The VDI's image file and format, when it has one (empty: kept by the backend).
    path: str = ""
    format: str = ""


@dataclass(frozen=True, slots=True)
class HostCapacity:
    """The host's resources as the backend sees them, for admission checks."""

    memory_total: int
    memory_free: int
    cpus: int


#: Called with a domain's uuid whenever it changes on its own (booted, crashed, shut down).
ChangeListener = Callable[[str], None]
#: Called with a domain's uuid and its UEFI variable store (varstored's serialisation in
#: base64) whenever its firmware changed the store.
VariablesListener = Callable[[str, str], None]


class DomainBackend(abc.ABC):
    """A hypervisor as the API layer sees it."""

    name: str = "abstract"

    @property
    @abc.abstractmethod
    def capabilities(self) -> Mapping[str, bool]:
        """Which of :data:`CAPABILITY_NAMES` this backend offers."""

    _listener: ChangeListener | None = None

    def set_listener(self, listener: ChangeListener | None) -> None:
        """Register the callback for changes a domain makes on its own."""
        self._listener = listener

    def _changed(self, uuid: str) -> None:
        if self._listener is not None:
            self._listener(uuid)

    _variables_listener: VariablesListener | None = None

    def set_variables_listener(self, listener: VariablesListener | None) -> None:
        """Register the callback for UEFI variable stores a domain's firmware changed."""
        self._variables_listener = listener

    def _variables_changed(self, uuid: str, variables: str) -> None:
        if self._variables_listener is not None:
            self._variables_listener(uuid, variables)

    async def open(self) -> list[DomainInfo]:
        """Start the backend and re-adopt the domains that outlived the last daemon.

        Returns every domain still present (running, paused or suspended); nothing is reset.
        """
        return []

    async def close(self) -> None:
        """Stop managing domains; they keep running and are re-adopted by the next ``open``."""
        self._listener = None

    @abc.abstractmethod
    async def start(self, spec: DomainSpec, paused: bool = False) -> DomainInfo:
        """Build and boot a domain. End state: ``running`` (``paused`` if asked).

        Not idempotent: a domain with this uuid that exists raises DomainExists. Raises
        InsufficientResources when the host cannot hold it. On failure nothing is left.
        """

    @abc.abstractmethod
    async def clean_shutdown(self, uuid: str, timeout: float) -> None:
        """Ask the guest to power off and wait up to ``timeout`` seconds. End state: gone.

        Raises ShutdownTimeout when the guest did not comply in time, leaving it running;
        DomainNotFound when there is no such domain; BadDomainState unless running.
        """

    @abc.abstractmethod
    async def hard_shutdown(self, uuid: str) -> None:
        """Destroy the domain at once. End state: gone. Idempotent: no domain is no error."""

    @abc.abstractmethod
    async def clean_reboot(self, uuid: str, timeout: float) -> DomainInfo:
        """Ask the guest to reboot and wait up to ``timeout`` seconds. End state: running
        (a new boot). On ShutdownTimeout the guest is left running as it was."""

    @abc.abstractmethod
    async def hard_reboot(self, uuid: str) -> DomainInfo:
        """Reset the domain. End state: running (a new boot), from running or paused.
        Raises DomainNotFound when there is no such domain."""

    @abc.abstractmethod
    async def pause(self, uuid: str) -> DomainInfo:
        """Stop the vCPUs. End state: paused. Idempotent on a paused domain."""

    @abc.abstractmethod
    async def unpause(self, uuid: str) -> DomainInfo:
        """Resume the vCPUs. End state: running. Idempotent on a running domain."""

    @abc.abstractmethod
    async def suspend(self, uuid: str, image: SuspendImage) -> None:
        """Save the domain's memory to ``image`` and destroy it. End state: gone from the
        running set, resumable from ``image``. On failure the domain keeps running."""

    @abc.abstractmethod
    async def resume(
        self, spec: DomainSpec, image: SuspendImage, paused: bool = False
    ) -> DomainInfo:
        """Rebuild a domain from ``image``. End state: running (``paused`` if asked), with
        the guest state it was suspended with. On failure the image is left intact."""

    async def migrate_local(self, uuid: str) -> DomainInfo:
        """Live-migrate a running domain to a new instance of itself on this host (the
        reference's localhost migration). End state: running, a new domid, the guest's state
        kept. On failure the domain keeps running as it was. Needs ``live_migrate``."""
        raise BackendError(uuid, "live migration is not supported by this backend")

    def migration_copies_disks(self) -> bool:
        """Whether :meth:`migrate_send` carries a running domain's writable disks itself
        (its hypervisor holds them open), so they are not copied beforehand."""
        return False

    async def migrate_receive(self, spec: DomainSpec) -> str:
        """Another host's migration: build a paused domain for ``spec`` that waits for the
        sender's :meth:`migrate_send`; returns where that connects (opaque to the API
        layer, on loopback). On failure nothing is left."""
        raise BackendError(spec.uuid, "receiving migrations is not supported by this backend")

    async def migrate_send(self, uuid: str, target: str) -> None:
        """Send the running or paused domain to a domain waiting at ``target`` (what the
        receiver's :meth:`migrate_receive` returned). End state here: paused with its state
        handed over (then hard_shutdown, or unpause when the receiver failed). On failure
        the domain is left as it was."""
        raise BackendError(uuid, "sending migrations is not supported by this backend")

    async def migrate_finish(self, uuid: str) -> DomainInfo:
        """Receiver, once the sender's :meth:`migrate_send` returned: the guest runs here.
        End state: running. On failure the domain is destroyed."""
        raise BackendError(uuid, "receiving migrations is not supported by this backend")

    async def migrate_complete(self, uuid: str) -> None:
        """Receiver, once the sender's domain is gone: take over what it held."""
        return None

    async def migrate_abort(self, uuid: str) -> None:
        """Receiver: give up a domain received (or being received). Idempotent."""
        await self.hard_shutdown(uuid)

    async def read_image(self, image: SuspendImage) -> bytes | None:
        """A suspend image this backend keeps aside from its VDI, to send to another host
        with the VDI; None when the image is in the VDI (it travels with the disk)."""
        return None

    async def write_image(self, uuid: str, image: SuspendImage, data: bytes) -> None:
        """Keep ``data`` (another host's :meth:`read_image`) as domain ``uuid``'s suspend
        image in ``image``."""
        return None

    async def sysprep(self, uuid: str, timeout: float) -> None:
        """Have the guest agent run Windows sysprep with the answer file on the CD just
        inserted (guests that can advertise ``feature-sysprep`` in ``GuestInfo.other``),
        and wait up to ``timeout`` seconds for the guest to power off. End state: gone.
        ShutdownTimeout when the guest did not finish in time (it keeps running);
        BackendError when it cannot run sysprep."""
        raise BackendError(uuid, "sysprep is not supported by this backend")

    async def set_vcpus(self, uuid: str, count: int) -> DomainInfo:
        """Plug or unplug vCPUs of a live domain, up to its maximum. Backends that cannot
        hot-plug vCPUs refuse."""
        raise BackendError(uuid, "vCPU hot-plug is not supported by this backend")

    async def copy_image(self, src: SuspendImage, dst: SuspendImage) -> None:
        """``dst`` is a storage-level copy of the suspend image ``src`` (a clone, copy or
        snapshot of its VDI). Backends whose images live in the VDI need do nothing."""
        return None

    @abc.abstractmethod
    async def info(self, uuid: str) -> DomainInfo | None:
        """The domain's live state, or None when there is no such domain."""

    async def console(self, uuid: str) -> str:
        """Where the domain's console listens now (``DomainInfo.vnc``), for a client about to
        connect; backends that make consoles on demand open it here. "" when there is none."""
        info = await self.info(uuid)
        return info.vnc if info is not None else ""

    def exit_reason(self, uuid: str) -> str | None:
        """Why a domain that is gone went away, once: "shutdown" (the guest powered off),
        "crash", or "vanished" (its process died unasked); None when not known."""
        return None

    @abc.abstractmethod
    async def list_domains(self) -> list[DomainInfo]:
        """Every domain present (not halted)."""

    @abc.abstractmethod
    async def host_capacity(self) -> HostCapacity:
        """The host's memory and CPUs, and the memory not yet given to domains."""
