"""The qemu-system-x86_64 command line for a domain, built from its plain spec.

Kept pure (no I/O) so what a VM is built from can be read and tested on its own. The
machine is minimal (``-nodefaults``): every device is one the records asked for, plus the
control channels the backend needs (QMP, guest agent, serial log, VNC), all unix sockets
inside the domain's own directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from openxapi.xenops.backend import DiskSpec, DomainSpec, NicSpec
from openxapi.xenops.qemu.firmware import qemu_args as firmware_args

MIB = 1 << 20

#: Boot-order letters of HVM_boot_params "order": c = disk, d = CD, n = network.
BOOT_LETTERS = frozenset("cdn")


@dataclass(frozen=True, slots=True)
class DomainPaths:
    """Where a domain's control sockets and files live (all inside one directory)."""

    root: Path

    @property
    def qmp(self) -> Path:
        return self.root / "qmp.sock"

    @property
    def agent(self) -> Path:
        return self.root / "qga.sock"

    @property
    def vnc(self) -> Path:
        return self.root / "vnc.sock"

    @property
    def serial(self) -> Path:
        return self.root / "serial.log"

    @property
    def pidfile(self) -> Path:
        return self.root / "qemu.pid"

    @property
    def record(self) -> Path:
        return self.root / "domain.json"

    @property
    def log(self) -> Path:
        return self.root / "qemu.log"


def _escape(value: str) -> str:
    """A value inside a QEMU option list, where a comma is written twice."""
    return value.replace(",", ",,")


def drive_id(userdevice: str) -> str:
    """The QMP name of the drive behind VBD slot ``userdevice``."""
    return f"drive{userdevice}"


def _empty_cd(disk: DiskSpec) -> list[str]:
    """A CD drive with no medium, so media can be inserted while the domain runs."""
    did = drive_id(disk.userdevice)
    return [
        "-drive",
        f"id={did},if=none,media=cdrom,readonly=on",
        "-device",
        f"ide-cd,drive={did},id=vbd{disk.userdevice}",
    ]


def _drive(disk: DiskSpec) -> list[str]:
    fmt = disk.format or "raw"
    opts = [
        f"file={_escape(disk.path)}",
        f"format={fmt}",
        f"id={drive_id(disk.userdevice)}",
        "if=none",
        "cache=writeback",
        "discard=unmap",
    ]
    if disk.read_only or disk.cdrom:
        opts.append("readonly=on")
    args = ["-drive", ",".join(opts)]
    if disk.cdrom:
        args += ["-device", f"ide-cd,drive={drive_id(disk.userdevice)},id=vbd{disk.userdevice}"]
    else:
        args += [
            "-device",
            f"virtio-blk-pci,drive={drive_id(disk.userdevice)},id=vbd{disk.userdevice}",
        ]
    return args


def _nic(nic: NicSpec, netdev: list[str]) -> list[str]:
    return [
        "-netdev",
        ",".join(netdev),
        "-device",
        f"virtio-net-pci,netdev=vif{nic.device},mac={nic.mac},id=nic{nic.device}"
        + (f",host_mtu={nic.mtu}" if nic.mtu and nic.mtu != 1500 else ""),
    ]


def nic_netdev(nic: NicSpec, forwards: tuple[str, ...] = ()) -> list[str]:
    """The netdev options for one NIC: what the network layer chose, else restricted
    user-mode NAT (the guest reaches nothing outside QEMU); forwards only from 127.0.0.1."""
    given = dict(nic.netdev) or {"type": "user", "restrict": "on"}
    kind = given.pop("type", "user")
    opts = [f"{kind},id=vif{nic.device}", *(f"{k}={v}" for k, v in given.items())]
    if kind != "user":
        return opts
    for fwd in forwards:
        opts.append(f"hostfwd=tcp:127.0.0.1:{fwd}")
    return opts


def boot_order(order: str) -> str:
    """HVM_boot_params "order" filtered to what QEMU understands (default disk then CD)."""
    letters = "".join(c for c in order.lower() if c in BOOT_LETTERS)
    return letters or "cd"


def build(
    spec: DomainSpec,
    paths: DomainPaths,
    *,
    binary: str = "qemu-system-x86_64",
    accel: str = "tcg",
    incoming: str = "",
    paused: bool = False,
) -> list[str]:
    """argv for ``spec``; ``incoming`` restores a saved state (the domain then starts
    paused until the backend continues it)."""
    memory_mib = max(spec.memory // MIB, 1)
    machine, firmware = firmware_args(spec.firmware, paths.root)
    argv = [
        binary,
        "-name",
        f"{_escape(spec.name or spec.uuid)},process=qemu-{spec.uuid},debug-threads=on",
        "-uuid",
        spec.uuid,
        "-accel",
        accel + (",tb-size=64" if accel == "tcg" else ""),
        "-machine",
        machine,
        "-m",
        str(memory_mib),
        "-smp",
        f"{spec.vcpus},maxcpus={max(spec.vcpus_max, spec.vcpus)}",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-vnc",
        f"unix:{paths.vnc}",
        "-vga",
        "std",
        "-chardev",
        f"file,id=serial0,path={paths.serial},append=on",
        "-serial",
        "chardev:serial0",
        "-qmp",
        f"unix:{paths.qmp},server=on,wait=off",
        "-device",
        "virtio-balloon-pci,id=balloon0",
        "-device",
        "virtio-serial-pci,id=vserial0",
        "-chardev",
        f"socket,id=qga0,path={paths.agent},server=on,wait=off",
        "-device",
        "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        "-pidfile",
        str(paths.pidfile),
        "-D",
        str(paths.log),
        "-daemonize",
        *firmware,
    ]
    if spec.kernel:
        argv += ["-kernel", spec.kernel]
        if spec.initrd:
            argv += ["-initrd", spec.initrd]
        argv += ["-append", spec.cmdline or "console=ttyS0"]
    else:
        argv += ["-boot", f"order={boot_order(spec.boot_order)}"]
    for disk in spec.disks:
        if disk.path:
            argv += _drive(disk)
        elif disk.cdrom and not disk.location:
            argv += _empty_cd(disk)
    for nic in spec.nics:
        argv += _nic(nic, nic_netdev(nic, spec.forwards.get(nic.device, ())))
    if incoming:
        argv += ["-incoming", incoming]
    elif paused:
        argv.append("-S")
    return argv
