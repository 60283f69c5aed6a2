"""The default OS templates a fresh server offers, named as XenServer's.

XenServer ships them in separate packages installed at first boot; we create them when a
server starts and one is missing. Each carries a provisioning spec in ``other_config["disks"]``
(the reference's XML; the client fills in the SR uuid before ``VM.provision``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from openxapi.api.state import ServerState, new_uuid
from openxapi.spec.model import NULL_REF
from openxapi.spec.values import now

MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    """The facts that differ between the default templates."""

    name: str
    label: str
    memory: int
    vcpus: int
    disk: int
    distro: str = ""


#: The template that boots the tiny test guest directly from its kernel and initrd.
TINY_GUEST = "openxapi tiny test guest"
#: Its kernel command line (the guest prints its READY marker on the serial console).
TINY_GUEST_ARGS = "console=ttyS0 quiet panic=-1"


DEFAULT_TEMPLATES = (
    TemplateSpec("Debian Bookworm 12", "debian-12", 1 * GIB, 1, 10 * GIB, "debian"),
    TemplateSpec("Debian Bullseye 11", "debian-11", 1 * GIB, 1, 10 * GIB, "debian"),
    TemplateSpec("Ubuntu Noble Numbat 24.04", "ubuntu-24.04", 1 * GIB, 1, 10 * GIB, "ubuntu"),
    TemplateSpec("Ubuntu Jammy Jellyfish 22.04", "ubuntu-22.04", 1 * GIB, 1, 10 * GIB, "ubuntu"),
    TemplateSpec("Rocky Linux 9", "rocky-9", 2 * GIB, 2, 10 * GIB, "rhel"),
    TemplateSpec("Other install media", "other-install-media", 512 * MIB, 1, 32 * GIB),
    TemplateSpec(TINY_GUEST, "openxapi-tiny", 128 * MIB, 1, 256 * MIB),
)


def disks_xml(disks: list[tuple[str, int, str, bool, str]]) -> str:
    """A ``provision`` document: (device, size, sr uuid, bootable, type) per disk."""
    parts = [
        f"<disk device={quoteattr(d)} size={quoteattr(str(s))} sr={quoteattr(sr)} "
        f'bootable="{str(b).lower()}" type={quoteattr(t)}/>'
        for d, s, sr, b, t in disks
    ]
    return "<provision>" + "".join(parts) + "</provision>"


def _recommendations(spec: TemplateSpec) -> str:
    return (
        "<restrictions>"
        '<restriction field="memory-static-max" max="137438953472"/>'
        '<restriction field="vcpus-max" max="32"/>'
        '<restriction field="has-vendor-device" value="false"/>'
        '<restriction field="supports-bios" value="yes"/>'
        '<restriction field="supports-uefi" value="yes"/>'
        '<restriction property="number-of-vbds" max="255"/>'
        '<restriction property="number-of-vifs" max="7"/>'
        "</restrictions>"
    )


def template_record(spec: TemplateSpec, guest_image_dir: Path | None = None) -> dict[str, Any]:
    """The VM record of one default template (without metrics)."""
    other = {
        "default_template": "true",
        "disks": disks_xml([("0", spec.disk, "", True, "system")]),
        "install-methods": "cdrom,http,ftp,nfs" if spec.distro else "cdrom",
        "mac_seed": new_uuid(),
    }
    tiny = spec.name == TINY_GUEST
    if spec.distro:
        other["linux_template"] = "true"
        other["install-distro"] = spec.distro
    return {
        "name_label": spec.name,
        "name_description": f"Template for {spec.name}",
        "user_version": 1,
        "is_a_template": True,
        "is_default_template": True,
        "affinity": NULL_REF,
        "memory_static_max": spec.memory,
        "memory_dynamic_max": spec.memory,
        "memory_dynamic_min": spec.memory,
        "memory_static_min": spec.memory // 2,
        "memory_target": spec.memory,
        "VCPUs_params": {},
        "VCPUs_max": spec.vcpus,
        "VCPUs_at_startup": spec.vcpus,
        "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart",
        "actions_after_crash": "restart",
        "PV_bootloader": "",
        "PV_kernel": str(guest_image_dir / "vmlinuz") if tiny and guest_image_dir else "",
        "PV_ramdisk": str(guest_image_dir / "initrd.gz") if tiny and guest_image_dir else "",
        "PV_args": TINY_GUEST_ARGS if tiny else "",
        "PV_bootloader_args": "",
        "PV_legacy_args": "",
        "HVM_boot_policy": "BIOS order",
        "HVM_boot_params": {"order": "cdn"},
        "platform": {
            "acpi": "1",
            "apic": "true",
            "pae": "true",
            "nx": "true",
            "viridian": "false",
            "timeoffset": "0",
            "device-model": "qemu-upstream-compat",
        },
        "PCI_bus": "",
        "other_config": other,
        "recommendations": _recommendations(spec),
        "domain_type": "hvm",
        "reference_label": spec.label,
        "domid": -1,
    }


def ensure_templates(state: ServerState) -> list[str]:
    """Create each default template that is missing; returns the refs made (not awaited)."""
    have = {
        rec["name_label"]
        for rec in state.store.table("VM").values()
        if rec["is_a_template"] and rec["is_default_template"]
    }
    made = []
    for spec in DEFAULT_TEMPLATES:
        if spec.name in have:
            continue
        stamp = now()
        metrics = state.create(
            "VM_metrics", {"install_time": stamp, "last_updated": stamp, "start_time": stamp}
        )
        record = template_record(spec, state.config.guest_image_dir)
        ref = state.create("VM", {**record, "metrics": metrics})
        made.append(ref)
    if made:
        from openxapi.api.vm_domains import domains_of

        domains = domains_of(state)
        for ref in made:
            domains.refresh(ref)
    return made
