"""Realistic VM records for the big-read and scale benchmarks, written to a store offline.

Rulings §11: each VM looks as `VM.clone` of the "Debian Bookworm 12" template (guest-templates
data: base-hvmlinux → base-linux-uefi → debian-12) followed by provisioning and a start would
leave it: template other_config / platform / HVM_boot_params / recommendations, 2 GiB and 2
VCPUs, one VIF, a system disk (VBD + VDI), an empty CD drive, an RFB console, a VM_metrics and
a VM_guest_metrics record as a running guest with its agent reports them. Eight objects per
VM. Records get every field in description order with defaults filled in, as the server's
own ``ServerState.new_record`` does, because that is the function used here.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openxapi.api.state import ServerState
from openxapi.config import Config
from openxapi.db.store import Store
from openxapi.spec import model
from openxapi.spec.model import NULL_REF
from openxapi.spec.values import now

GiB = 1 << 30
OBJECTS_PER_VM = 8
TEMPLATE_NAME = "Debian Bookworm 12"
TEMPLATE_DESCRIPTION = (
    "To use this template from the CLI, install your VM using vm-install, then set "
    "other-config-install-repository to the path to your network repository, e.g. "
    "http://<server>/<path> or nfs:server:/<path>"
)
RECOMMENDATIONS = (
    '<restrictions><restriction field="memory-static-max" max="1649267441664"/>'
    '<restriction field="vcpus-max" max="32"/>'
    '<restriction field="has-vendor-device" value="false"/>'
    '<restriction field="allow-gpu-passthrough" value="1"/>'
    '<restriction field="allow-vgpu" value="1"/>'
    '<restriction field="supports-uefi" value="yes"/>'
    '<restriction field="supports-secure-boot" value="yes"/>'
    '<restriction property="number-of-vbds" max="255"/>'
    '<restriction property="number-of-vifs" max="7"/></restrictions>'
)
RUNNING_OPERATIONS = [
    "changing_dynamic_range",
    "changing_VCPUs_live",
    "checkpoint",
    "clean_reboot",
    "clean_shutdown",
    "hard_reboot",
    "hard_shutdown",
    "migrate_send",
    "pause",
    "pool_migrate",
    "snapshot",
    "suspend",
]
BIOS_STRINGS = {
    "bios-vendor": "Xen",
    "bios-version": "",
    "system-manufacturer": "Xen",
    "system-product-name": "HVM domU",
    "system-version": "",
    "system-serial-number": "",
    "baseboard-manufacturer": "",
    "baseboard-product-name": "",
    "baseboard-version": "",
    "baseboard-serial-number": "",
    "baseboard-asset-tag": "",
    "baseboard-location-in-chassis": "",
    "enclosure-asset-tag": "",
    "hp-rombios": "",
    "oem-1": "Xen",
    "oem-2": "MS_VM_CERT/SHA1/bdbeb6e0a816d43fa6d3fe8aaef04c2bad9d3e3d",
}
CPU_FLAGS = {
    "vendor": "GenuineIntel",
    "features": "1fcbfbff-f7fa3223-2d93fbff-00000523-00000001-029c6fbf-00000000-00000000-"
    "00001000-9c000400-00000000-00000000-00000000-00000000-00000000-00000000",
}
NETWORK_LABEL = "Pool-wide network associated with eth0"
SR_LABEL = "Local storage"


def template_platform() -> dict[str, str]:
    """The template's platform map plus what a start adds (device model, time offset)."""
    return {
        "timeoffset": "0",
        "device-model": "qemu-upstream-uefi",
        "videoram": "8",
        "hpet": "true",
        "secureboot": "auto",
        "vga": "std",
        "apic": "true",
        "viridian": "false",
        "nx": "true",
        "pae": "true",
        "device_id": "0001",
        "acpi": "1",
    }


def template_other_config(mac_seed: str) -> dict[str, str]:
    """other_config after clone (base_template_name added) and provision (disks removed)."""
    return {
        "base_template_name": TEMPLATE_NAME,
        "install-methods": "cdrom,nfs,http,ftp",
        "linux_template": "true",
        "mac_seed": mac_seed,
        "install-repository": "http://deb.debian.org/debian/",
    }


def vm_values(
    name: str, uid: str, mac_seed: str, host: str = NULL_REF, running: bool = True
) -> dict[str, Any]:
    """The VM fields a clone + provision (+ start) sets; the rest keep their defaults."""
    return {
        "uuid": uid,
        "allowed_operations": list(RUNNING_OPERATIONS) if running else ["start", "clone"],
        "name_label": name,
        "name_description": TEMPLATE_DESCRIPTION,
        "power_state": "Running" if running else "Halted",
        "user_version": 1,
        "resident_on": host if running else NULL_REF,
        "memory_overhead": 20 << 20,
        "memory_target": 2 * GiB,
        "memory_static_max": 2 * GiB,
        "memory_dynamic_max": 2 * GiB,
        "memory_dynamic_min": 2 * GiB,
        "memory_static_min": 1 * GiB,
        "VCPUs_max": 2,
        "VCPUs_at_startup": 2,
        "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart",
        "actions_after_crash": "restart",
        "HVM_boot_policy": "BIOS order",
        "HVM_boot_params": {"order": "cdn", "firmware": "uefi"},
        "HVM_shadow_multiplier": 1.0,
        "platform": template_platform(),
        "other_config": template_other_config(mac_seed),
        "domarch": "x64" if running else "",
        "last_boot_CPU_flags": dict(CPU_FLAGS) if running else {},
        "recommendations": RECOMMENDATIONS,
        "xenstore_data": {"vm-data": "", "vm-data/mmio-hole-size": "268435456"},
        "bios_strings": dict(BIOS_STRINGS),
        "has_vendor_device": False,
        "reference_label": "debian-12",
        "domain_type": "hvm",
    }


@dataclass
class Ids:
    """Deterministic uuids so two runs build byte-identical stores."""

    rng: random.Random = field(default_factory=lambda: random.Random(11))

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def ref(self) -> tuple[str, str]:
        u = self.uuid()
        return "OpaqueRef:" + self.uuid(), u


@dataclass
class Populated:
    """What populate() made."""

    vms: list[str]
    objects: int
    seconds: float
    total_objects: int


def _objects_for_vm(
    state: ServerState, ids: Ids, i: int, host: str, host_address: str, network: str, sr: str
) -> tuple[str, str, str]:
    """Create one VM and its seven companions; returns (vm ref, vif ref, vdi ref)."""
    store = state.store
    vm, vm_uuid = ids.ref()
    vif, vif_uuid = ids.ref()
    metrics, metrics_uuid = ids.ref()
    guest, guest_uuid = ids.ref()
    disk_vbd, disk_vbd_uuid = ids.ref()
    cd_vbd, cd_vbd_uuid = ids.ref()
    vdi, vdi_uuid = ids.ref()
    console, console_uuid = ids.ref()
    stamp = now()
    name = f"debian12-{i:05d}"
    values = vm_values(name, vm_uuid, ids.uuid(), host)
    values.update(
        consoles=[console],
        VIFs=[vif],
        VBDs=[disk_vbd, cd_vbd],
        domid=i + 1,
        metrics=metrics,
        guest_metrics=guest,
    )
    store.create("VM", vm, state.new_record("VM", values))
    mac = "ce:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}".format(*ids.rng.randbytes(5))
    ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255 or 1}"
    store.create(
        "VIF",
        vif,
        state.new_record(
            "VIF",
            {
                "uuid": vif_uuid,
                "allowed_operations": ["attach", "unplug"],
                "device": "0",
                "network": network,
                "VM": vm,
                "MAC": mac,
                "MTU": 1500,
                "currently_attached": True,
                "qos_supported_algorithms": ["ratelimit"],
                "MAC_autogenerated": True,
            },
        ),
    )
    store.create(
        "VM_metrics",
        metrics,
        state.new_record(
            "VM_metrics",
            {
                "uuid": metrics_uuid,
                "memory_actual": 2 * GiB,
                "VCPUs_number": 2,
                "state": [],
                "start_time": stamp,
                "install_time": stamp,
                "last_updated": stamp,
                "hvm": True,
                "current_domain_type": "hvm",
                "numa_optimised": True,
                "numa_nodes": 1,
            },
        ),
    )
    store.create(
        "VM_guest_metrics",
        guest,
        state.new_record(
            "VM_guest_metrics",
            {
                "uuid": guest_uuid,
                "os_version": {
                    "name": "Debian GNU/Linux 12 (bookworm)",
                    "uname": "6.1.0-28-amd64",
                    "distro": "debian",
                    "major": "12",
                    "minor": "8",
                },
                "PV_drivers_version": {"major": "8", "minor": "4", "micro": "0", "build": "1"},
                "PV_drivers_up_to_date": True,
                "networks": {
                    "0/ip": ip,
                    "0/ipv4/0": ip,
                    "0/ipv6/0": "fe80::cc" + mac[3:5] + ":" + mac[6:8] + "ff:fe" + mac[9:11],
                },
                "other": {
                    "feature-balloon": "1",
                    "feature-poweroff": "1",
                    "feature-reboot": "1",
                    "feature-shutdown": "1",
                    "feature-suspend": "1",
                    "feature-vcpu-hotplug": "1",
                    "has-vendor-device": "0",
                    "platform-feature-multiprocessor-suspend": "1",
                    "platform-feature-xs_reset_watches": "1",
                },
                "last_updated": stamp,
                "live": True,
                "can_use_hotplug_vbd": "yes",
                "can_use_hotplug_vif": "yes",
                "PV_drivers_detected": True,
            },
        ),
    )
    store.create(
        "VBD",
        disk_vbd,
        state.new_record(
            "VBD",
            {
                "uuid": disk_vbd_uuid,
                "allowed_operations": ["attach", "unpause", "pause"],
                "VM": vm,
                "VDI": vdi,
                "device": "xvda",
                "userdevice": "0",
                "bootable": True,
                "mode": "RW",
                "type": "Disk",
                "unpluggable": False,
                "other_config": {"owner": ""},
                "currently_attached": True,
            },
        ),
    )
    store.create(
        "VBD",
        cd_vbd,
        state.new_record(
            "VBD",
            {
                "uuid": cd_vbd_uuid,
                "allowed_operations": ["attach", "insert"],
                "VM": vm,
                "device": "xvdd",
                "userdevice": "3",
                "mode": "RO",
                "type": "CD",
                "empty": True,
                "currently_attached": True,
            },
        ),
    )
    store.create(
        "VDI",
        vdi,
        state.new_record(
            "VDI",
            {
                "uuid": vdi_uuid,
                "name_label": "0",
                "name_description": "Created by template provisioner",
                "allowed_operations": [
                    "clone",
                    "snapshot",
                    "copy",
                    "resize_online",
                    "update",
                    "generate_config",
                    "enable_cbt",
                    "mirror",
                ],
                "SR": sr,
                "VBDs": [disk_vbd],
                "virtual_size": 10 * GiB,
                "physical_utilisation": 2_315_255_808 + i * 4096,
                "type": "system",
                "location": vdi_uuid,
                "managed": True,
                "sm_config": {"vmhint": vm_uuid, "vdi_type": "vhd"},
            },
        ),
    )
    store.create(
        "console",
        console,
        state.new_record(
            "console",
            {
                "uuid": console_uuid,
                "protocol": "rfb",
                "location": f"https://{host_address}/console?uuid={console_uuid}",
                "VM": vm,
                "other_config": {"vgaconsole": "true"},
            },
        ),
    )
    return vm, vif, vdi


def _shared_objects(state: ServerState, ids: Ids, host: str) -> tuple[str, str]:
    """The pool network and the local SR every VM uses (found again when extending)."""
    store = state.store
    net = next(iter(store.refs_by_name_label("network", NETWORK_LABEL)), None)
    if net is None:
        net, net_uuid = ids.ref()
        store.create(
            "network",
            net,
            state.new_record(
                "network",
                {
                    "uuid": net_uuid,
                    "name_label": NETWORK_LABEL,
                    "bridge": "xenbr0",
                    "other_config": {"automatic": "true"},
                },
            ),
        )
    sr = next(iter(store.refs_by_name_label("SR", SR_LABEL)), None)
    if sr is None:
        sr, sr_uuid = ids.ref()
        store.create(
            "SR",
            sr,
            state.new_record(
                "SR",
                {
                    "uuid": sr_uuid,
                    "name_label": SR_LABEL,
                    "type": "ext",
                    "content_type": "user",
                    "physical_size": 4 << 40,
                    "other_config": {
                        "i18n-key": "local-storage",
                        "i18n-original-value-name_label": SR_LABEL,
                    },
                    "sm_config": {"devserial": "scsi-bench"},
                },
            ),
        )
    return net, sr


async def _populate(data_dir: Path, count: int, first_index: int) -> Populated:
    api = model.load()
    store = Store(api, data_dir / "state.db")
    await store.open()
    try:
        state = ServerState(api, store, Config(data_dir=data_dir, backend="simulator"))
        hosts = store.table("host")
        if not hosts:
            raise RuntimeError(f"{data_dir} has no host: start a server on it once first")
        host = next(iter(hosts))
        host_address = str(hosts[host]["address"])
        ids = Ids(random.Random(first_index + 11))
        net, sr = _shared_objects(state, ids, host)
        before = sum(len(store.table(c)) for c in store.classes())
        t0 = time.perf_counter()
        vms: list[str] = []
        vifs: list[str] = []
        vdis: list[str] = []
        for i in range(first_index, first_index + count):
            vm, vif, vdi = _objects_for_vm(state, ids, i, host, host_address, net, sr)
            vms.append(vm)
            vifs.append(vif)
            vdis.append(vdi)
            if len(vms) % 2000 == 0:
                await store.sync()
        store.update("network", net, {"VIFs": [*store.table("network")[net]["VIFs"], *vifs]})
        store.update("SR", sr, {"VDIs": [*store.table("SR")[sr]["VDIs"], *vdis]})
        resident = store.table("host")[host]["resident_VMs"]
        store.update("host", host, {"resident_VMs": [*resident, *vms]})
        await store.sync()
        _simulated_domains(data_dir, [store.table("VM")[vm] for vm in vms])
        seconds = time.perf_counter() - t0
        total = sum(len(store.table(c)) for c in store.classes())
    finally:
        await store.close()
    return Populated(vms, total - before, seconds, total)


def _simulated_domains(data_dir: Path, records: list[dict[str, Any]]) -> None:
    """The simulator's domains for the running VMs, as a daemon restart finds them: the
    VMs stay Running when the server re-adopts them."""
    path = data_dir / "simulator" / "domains.json"
    data: dict[str, Any] = {"domains": {}, "images": {}, "next_domid": 1}
    if path.exists():
        data = json.loads(path.read_text())
    started = time.time()
    for rec in records:
        if rec["power_state"] != "Running":
            continue
        data["domains"][rec["uuid"]] = {
            "uuid": rec["uuid"],
            "name": rec["name_label"],
            "domid": rec["domid"],
            "memory": rec["memory_dynamic_max"],
            "vcpus": rec["VCPUs_at_startup"],
            "hvm": True,
            "nics": ["0"],
            "hints": {},
            "state": "running",
            "start_time": started,
            "booted": True,
            "booted_at": started,
        }
        data["next_domid"] = max(int(data["next_domid"]), int(rec["domid"]) + 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def populate(data_dir: Path, count: int, first_index: int = 0) -> Populated:
    """Add ``count`` Debian 12 VMs (8 objects each) to the store of a stopped server."""
    return asyncio.run(_populate(data_dir, count, first_index))


def create_args(name: str, mac_seed: str) -> dict[str, Any]:
    """A ``VM.create`` struct for the same kind of VM, halted, as an XML-RPC client sends it:
    every writable field (defaults where the template says nothing), int64s as strings."""
    values = vm_values(name, "", mac_seed, running=False)
    out: dict[str, Any] = {}
    for f in model.load().classes["VM"].fields:
        if f.qualifier in ("RW", "StaticRO"):
            v = values.get(f.name, f.default)
            out[f.name] = str(v) if type(v) is int else v
    return out
