"""The QEMU command line a domain is built from."""

from __future__ import annotations

from pathlib import Path

from openxapi.xenops.backend import DiskSpec, DomainSpec, NicSpec
from openxapi.xenops.qemu.cmdline import DomainPaths, boot_order, build

MIB = 1 << 20


def _spec(**kw: object) -> DomainSpec:
    base: dict[str, object] = {"uuid": "u-1", "name": "vm", "memory": 256 * MIB, "vcpus": 2}
    base.update(kw)
    return DomainSpec(**base)  # type: ignore[arg-type]


def _opt(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_memory_cpus_and_control_sockets_in_the_domain_dir() -> None:
    paths = DomainPaths(Path("/r/u-1"))
    argv = build(_spec(vcpus_max=4), paths)
    assert _opt(argv, "-m") == ["256"]
    assert _opt(argv, "-smp") == ["2,maxcpus=4"]
    assert f"unix:{paths.qmp},server=on,wait=off" in _opt(argv, "-qmp")
    assert _opt(argv, "-vnc") == [f"unix:{paths.vnc}"]
    assert "-daemonize" in argv and "-nodefaults" in argv
    assert _opt(argv, "-accel") == ["tcg,tb-size=64"]
    assert "-S" not in argv


def test_disks_cds_and_boot_order() -> None:
    disks = (
        DiskSpec("0", "a", path="/sr/a.qcow2", format="qcow2", bootable=True),
        DiskSpec("3", "iso", path="/iso/x.iso", format="raw", cdrom=True, read_only=True),
        DiskSpec("1", "sim"),  # a simulated disk has no file: not given to QEMU
    )
    argv = build(_spec(disks=disks, boot_order="DCN"), DomainPaths(Path("/r")))
    drives = _opt(argv, "-drive")
    assert len(drives) == 2
    assert drives[0].startswith("file=/sr/a.qcow2,format=qcow2,id=drive0")
    assert "readonly=on" in drives[1]
    devices = _opt(argv, "-device")
    assert "virtio-blk-pci,drive=drive0,id=vbd0" in devices
    assert "ide-cd,drive=drive3,id=vbd3" in devices
    assert _opt(argv, "-boot") == ["order=dcn"]
    assert boot_order("xyz") == "cd"


def test_direct_kernel_boot_replaces_the_boot_order() -> None:
    argv = build(
        _spec(kernel="/g/vmlinuz", initrd="/g/initrd.gz", cmdline="console=ttyS0"),
        DomainPaths(Path("/r")),
    )
    assert _opt(argv, "-kernel") == ["/g/vmlinuz"]
    assert _opt(argv, "-initrd") == ["/g/initrd.gz"]
    assert _opt(argv, "-append") == ["console=ttyS0"]
    assert "-boot" not in argv


def test_nics_default_to_restricted_nat_with_loopback_forwards() -> None:
    nics = (NicSpec("0", "aa:bb:cc:00:00:01"), NicSpec("1", "aa:bb:cc:00:00:02", mtu=9000))
    argv = build(_spec(nics=nics, forwards={"0": ("10022-:22",)}), DomainPaths(Path("/r")))
    netdevs = _opt(argv, "-netdev")
    assert netdevs[0] == "user,id=vif0,restrict=on,hostfwd=tcp:127.0.0.1:10022-:22"
    assert netdevs[1] == "user,id=vif1,restrict=on"
    devices = _opt(argv, "-device")
    assert "virtio-net-pci,netdev=vif0,mac=aa:bb:cc:00:00:01,id=nic0" in devices
    assert "virtio-net-pci,netdev=vif1,mac=aa:bb:cc:00:00:02,id=nic1,host_mtu=9000" in devices


def test_network_layer_netdev_is_used_verbatim() -> None:
    nic = NicSpec(
        "0",
        "aa:bb:cc:00:00:01",
        netdev={"type": "tap", "ifname": "oxt1", "script": "no", "downscript": "no"},
    )
    argv = build(_spec(nics=(nic,), forwards={"0": ("1-:2",)}), DomainPaths(Path("/r")))
    assert _opt(argv, "-netdev") == ["tap,id=vif0,ifname=oxt1,script=no,downscript=no"]


def test_paused_start_and_incoming_state() -> None:
    assert "-S" in build(_spec(), DomainPaths(Path("/r")), paused=True)
    argv = build(_spec(), DomainPaths(Path("/r")), incoming="exec:cat /x")
    assert _opt(argv, "-incoming") == ["exec:cat /x"] and "-S" not in argv


def test_commas_in_names_and_paths_are_escaped() -> None:
    disks = (DiskSpec("0", "a", path="/iso/my,disc.iso", format="raw", cdrom=True),)
    argv = build(_spec(name="web, db", disks=disks), DomainPaths(Path("/r")))
    assert _opt(argv, "-name")[0].startswith("web,, db,process=qemu-u-1")
    assert _opt(argv, "-drive")[0].startswith("file=/iso/my,,disc.iso,format=raw")
