"""First start (and every start): make the store look like a fresh XenServer host.

A pool whose master is this host, the host with its metrics and CPUs, the control
domain, the RBAC roles and one subject per local account. Facts that can change
between starts (hostname, address, memory, software version) are refreshed each time.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

from openxapi import __version__
from openxapi.api.state import ServerState, new_uuid
from openxapi.auth.accounts import AccountBook
from openxapi.spec.model import NULL_REF
from openxapi.spec.values import now

PRODUCT_VERSION = "8.4.0"
BUILD_NUMBER = "openxapi-" + __version__


def _cpuinfo() -> list[dict[str, str]]:
    cpus: list[dict[str, str]] = []
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return cpus
    for block in text.strip().split("\n\n"):
        entry = {}
        for line in block.splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                entry[k.strip()] = v.strip()
        if "processor" in entry:
            cpus.append(entry)
    return cpus


def _meminfo_bytes(key: str) -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def primary_address() -> str:
    """The first non-loopback IPv4 address of this host, or 127.0.0.1."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        infos = []
    for info in infos:
        addr = str(info[4][0])
        if not addr.startswith("127."):
            return addr
    return "127.0.0.1"


def host_facts(state: ServerState) -> dict[str, Any]:
    """Host fields read from the machine itself."""
    hostname = socket.gethostname()
    cpus = _cpuinfo()
    ncpu = os.cpu_count() or max(len(cpus), 1)
    first = cpus[0] if cpus else {}
    sockets = len({c.get("physical id", "0") for c in cpus}) or 1
    cpu_info = {
        "cpu_count": str(ncpu),
        "socket_count": str(sockets),
        "vendor": first.get("vendor_id", platform.machine()),
        "speed": first.get("cpu MHz", "0"),
        "modelname": first.get("model name", platform.processor()),
        "family": first.get("cpu family", "0"),
        "model": first.get("model", "0"),
        "stepping": first.get("stepping", "0"),
        "flags": first.get("flags", ""),
        "features": "",
    }
    api = state.api
    return {
        "name_label": hostname,
        "hostname": hostname,
        "address": primary_address(),
        "API_version_major": api.version_major,
        "API_version_minor": api.version_minor,
        "API_version_vendor": api.vendor,
        "software_version": {
            "product_brand": "openxapi",
            "product_version": PRODUCT_VERSION,
            "product_version_text": PRODUCT_VERSION,
            "product_version_text_short": PRODUCT_VERSION,
            "platform_name": "openxapi",
            "platform_version": __version__,
            "build_number": BUILD_NUMBER,
            "xapi": f"{api.version_major}.{api.version_minor}",
            "xapi_build": __version__,
            "hostname": hostname,
            "date": time.strftime("%Y-%m-%d"),
            "linux": platform.release(),
        },
        "cpu_info": cpu_info,
    }


def ensure_world(state: ServerState, book: AccountBook) -> None:
    """Create what a fresh server has, and refresh host facts (writes are not awaited)."""
    store = state.store
    _ensure_roles(state)
    facts = host_facts(state)
    hosts = store.table("host")
    if hosts:
        host_ref = next(iter(hosts))
        state.host_ref = host_ref
        store.update("host", host_ref, {k: v for k, v in facts.items() if k != "name_label"})
    else:
        host_ref = state.create(
            "host",
            {
                **facts,
                "enabled": True,
                "capabilities": ["hvm-3.0-x86_64", "hvm-3.0-x86_32"],
                "sched_policy": "credit",
                "supported_bootloaders": ["pygrub", "eliloader"],
                "edition": "free",
                "license_params": {},
                "license_server": {"address": "localhost", "port": "27000"},
                "iscsi_iqn": "",
                "other_config": {"agent_start_time": f"{time.time():.0f}."},
            },
        )
        state.host_ref = host_ref
    pools = store.table("pool")
    if pools:
        state.pool_ref = next(iter(pools))
    else:
        state.pool_ref = state.create("pool", {"master": host_ref, "name_label": ""})
    _ensure_metrics(state, host_ref)
    _ensure_cpus(state, host_ref, facts)
    _ensure_dom0(state, host_ref, facts)
    _ensure_networks(state, host_ref)
    _ensure_storage(state)
    _ensure_templates(state)
    sync_subjects(state, book)


def _ensure_networks(state: ServerState, host_ref: str) -> None:
    """PIFs for the host's interfaces (refreshed each start), the system networks."""
    from openxapi.api.handlers.pif import ensure_host_networks

    ensure_host_networks(state, host_ref)


def _ensure_storage(state: ServerState) -> None:
    """SM records, the first start's SRs (local storage, ISO library), the default SR."""
    from openxapi.api.storage_setup import ensure_storage

    ensure_storage(state)


def _ensure_templates(state: ServerState) -> None:
    """The default OS templates (created when missing)."""
    from openxapi.api.vm_templates import ensure_templates

    ensure_templates(state)


def _md5_uuid(text: str) -> str:
    return str(uuidlib.UUID(bytes=hashlib.md5(text.encode()).digest()))


def _ensure_roles(state: ServerState) -> None:
    """The reference's static roles, and one permission object per message."""
    api = state.api
    store = state.store
    perm_ref: dict[str, str] = {}
    for wire in api.messages:
        uuid = _md5_uuid(wire)
        ref = f"OpaqueRef:{uuid}"
        perm_ref[wire] = ref
        if store.get("role", ref) is None:
            store.create(
                "role",
                ref,
                state.new_record(
                    "role",
                    {
                        "uuid": uuid,
                        "name_label": wire.lower(),
                        "name_description": "A basic permission",
                        "subroles": [],
                        "is_internal": True,
                    },
                ),
            )
    for role in api.roles.values():
        subroles = [perm_ref[w] for w, m in api.messages.items() if role.name in m.roles]
        values = {
            "uuid": role.uuid,
            "name_label": role.name,
            "name_description": "",
            "subroles": subroles,
            "is_internal": role.internal,
        }
        rec = store.get("role", role.ref)
        if rec is None:
            store.create("role", role.ref, state.new_record("role", values))
        elif rec["subroles"] != subroles:
            store.update("role", role.ref, {"subroles": subroles})


def _ensure_metrics(state: ServerState, host_ref: str) -> None:
    host = state.record("host", host_ref)
    values = {
        "memory_total": _meminfo_bytes("MemTotal"),
        "memory_free": _meminfo_bytes("MemAvailable"),
        "live": True,
        "last_updated": now(),
    }
    metrics = host["metrics"]
    if state.store.get("host_metrics", metrics) is None:
        metrics = state.create("host_metrics", values)
        state.store.update("host", host_ref, {"metrics": metrics})
    else:
        state.store.update("host_metrics", metrics, values)


def _ensure_cpus(state: ServerState, host_ref: str, facts: dict[str, Any]) -> None:
    ncpu = int(facts["cpu_info"]["cpu_count"])
    existing = {
        rec["number"]: ref
        for ref, rec in state.store.table("host_cpu").items()
        if rec["host"] == host_ref
    }
    info = facts["cpu_info"]
    generic = state.extras["generic"]
    for n in range(ncpu):
        if n in existing:
            continue
        ref = state.create(
            "host_cpu",
            {
                "host": host_ref,
                "number": n,
                "vendor": info["vendor"],
                "speed": int(float(info["speed"] or 0)),
                "modelname": info["modelname"],
                "family": int(info["family"] or 0) if str(info["family"]).isdigit() else 0,
                "model": int(info["model"] or 0) if str(info["model"]).isdigit() else 0,
                "stepping": info["stepping"],
                "flags": info["flags"],
                "features": info["features"],
                "utilisation": 0.0,
            },
        )
        generic._link(state, "host", "host_CPUs", host_ref, ref)
    for n, ref in existing.items():
        if n >= ncpu:
            generic.destroy_object(state, "host_cpu", ref)


def _ensure_dom0(state: ServerState, host_ref: str, facts: dict[str, Any]) -> None:
    host = state.record("host", host_ref)
    dom0 = host["control_domain"]
    if state.store.get("VM", dom0) is not None:
        return
    generic = state.extras["generic"]
    mem = _meminfo_bytes("MemTotal")
    ncpu = int(facts["cpu_info"]["cpu_count"])
    metrics = state.create(
        "VM_metrics",
        {
            "memory_actual": mem,
            "VCPUs_number": ncpu,
            "state": [],
            "start_time": now(),
            "install_time": now(),
            "last_updated": now(),
        },
    )
    dom0 = state.create(
        "VM",
        {
            "name_label": f"Control domain on host: {facts['hostname']}",
            "name_description": "The domain which manages physical devices and manages other "
            "domains",
            "power_state": "Running",
            "user_version": 1,
            "is_a_template": False,
            "is_control_domain": True,
            "resident_on": host_ref,
            "affinity": NULL_REF,
            "memory_static_max": mem,
            "memory_dynamic_max": mem,
            "memory_dynamic_min": mem,
            "memory_static_min": mem,
            "memory_target": mem,
            "VCPUs_params": {},
            "VCPUs_max": ncpu,
            "VCPUs_at_startup": ncpu,
            "actions_after_shutdown": "destroy",
            "actions_after_reboot": "destroy",
            "actions_after_crash": "destroy",
            "PV_bootloader": "",
            "PV_kernel": "",
            "PV_ramdisk": "",
            "PV_args": "",
            "PV_bootloader_args": "",
            "PV_legacy_args": "",
            "HVM_boot_policy": "",
            "HVM_boot_params": {},
            "platform": {},
            "PCI_bus": "",
            "other_config": {"storage_driver_domain": "", "is_system_domain": "true"},
            "domid": 0,
            "domarch": "x64",
            "metrics": metrics,
            "recommendations": "",
            "domain_type": "pv",
        },
    )
    generic._link(state, "host", "resident_VMs", host_ref, dom0)
    state.store.update(
        "VM",
        dom0,
        {"other_config": {"storage_driver_domain": dom0, "is_system_domain": "true"}},
    )
    state.store.update("host", host_ref, {"control_domain": dom0})


def sync_subjects(state: ServerState, book: AccountBook) -> None:
    """Mirror local accounts (other than root) as subject records with their roles."""
    book.reload()
    store = state.store
    wanted = {a.subject_identifier: a for a in book.all() if a.name != "root"}
    seen: set[str] = set()
    role_refs = {r.name: r.ref for r in state.api.roles.values()}
    for ref, rec in list(store.table("subject").items()):
        ident = rec["subject_identifier"]
        if not ident.startswith("local:"):
            continue
        acct = wanted.get(ident)
        if acct is None:
            store.delete("subject", ref)
            continue
        seen.add(ident)
        roles = [role_refs[r] for r in acct.roles if r in role_refs]
        if rec["roles"] != roles:
            store.update("subject", ref, {"roles": roles})
            sessions = state.extras.get("sessions")
            if sessions is not None:
                for sref, srec in store.table("session").items():
                    if srec["subject"] == ref:
                        sessions.info.pop(sref, None)
    for ident, acct in wanted.items():
        if ident in seen:
            continue
        state.create(
            "subject",
            {
                "uuid": new_uuid(),
                "subject_identifier": ident,
                "other_config": {"subject-name": acct.name, "subject-is-group": "false"},
                "roles": [role_refs[r] for r in acct.roles if r in role_refs],
            },
        )
