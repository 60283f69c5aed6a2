"""VM power operations, templates and provisioning through the dispatcher (simulator backend)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from openxapi.api.vm_domains import domains_of, stop_domains
from openxapi.api.vm_templates import DEFAULT_TEMPLATES, disks_xml
from openxapi.spec.model import NULL_REF
from openxapi.xenops.simulator import SimulatorBackend
from tests.api.network_helpers import new_network, new_vif
from tests.api.storage_kit import new_sr
from tests.api.world import World, open_world

MIB = 1 << 20


@pytest.fixture
async def w(world: World) -> AsyncIterator[World]:
    world.config.vm_shutdown_timeout = 0.2
    yield world
    await stop_domains(world.state)


def ops(text: str) -> set[str]:
    return set(text.split())


def sim(w: World) -> SimulatorBackend:
    backend = domains_of(w.state).backend
    assert isinstance(backend, SimulatorBackend)
    return backend


async def template(w: World, name: str = "Debian Bookworm 12") -> str:
    (ref,) = await w.call("VM.get_by_name_label", w.root, name)
    assert isinstance(ref, str)
    return ref


async def installed(w: World, name: str = "vm1", disks: bool = True) -> tuple[str, str]:
    """A VM cloned from a default template and provisioned on a dummy SR; (vm, sr)."""
    sr = await new_sr(w, "dummy")
    sr_uuid = w.store.get("SR", sr)["uuid"]  # type: ignore[index]
    vm = await w.call("VM.clone", w.root, await template(w), name)
    spec = [("0", 64 * MIB, sr_uuid, True, "system")] if disks else []
    await w.call("VM.remove_from_other_config", w.root, vm, "disks")
    await w.call("VM.add_to_other_config", w.root, vm, "disks", disks_xml(spec))
    await w.call("VM.provision", w.root, vm)
    await w.call("VM.set_suspend_SR", w.root, vm, sr)
    return vm, sr


def rec(w: World, cls: str, ref: str) -> dict[str, Any]:
    r = w.store.get(cls, ref)
    assert r is not None
    return r


async def test_default_templates_exist_as_xenserver_names_them(w: World) -> None:
    for spec in DEFAULT_TEMPLATES:
        r = rec(w, "VM", await template(w, spec.name))
        assert r["is_a_template"] and r["is_default_template"]
        assert r["other_config"]["default_template"] == "true"
        assert r["other_config"]["mac_seed"]
        assert r["other_config"]["disks"].startswith('<provision><disk device="0"')
        assert r["HVM_boot_policy"] == "BIOS order" and r["domain_type"] == "hvm"
        assert r["memory_static_max"] == spec.memory and r["VCPUs_max"] == spec.vcpus
        assert set(r["allowed_operations"]) == ops(
            "clone copy export metadata_export provision changing_dynamic_range "
            "changing_static_range changing_shadow_memory changing_NVRAM"
        )


async def test_templates_are_not_duplicated_on_restart(data_dir: Path) -> None:
    w1 = await open_world(data_dir, durable=True)
    count = len(w1.store.table("VM"))
    w2 = await w1.restart()
    assert len(w2.store.table("VM")) == count
    await stop_domains(w2.state)
    await w2.close()


async def test_default_template_cannot_start_or_be_destroyed(w: World) -> None:
    t = await template(w)
    assert await w.fail("VM.start", w.root, t, False, False) == ["VM_IS_TEMPLATE", t, "start"]
    assert await w.fail("VM.assert_operation_valid", w.root, t, "destroy") == [
        "VM_IS_TEMPLATE", t, "destroy",
    ]  # fmt: skip


async def test_clone_gets_a_fresh_mac_seed_and_stays_a_template(w: World) -> None:
    t = await template(w)
    vm = await w.call("VM.clone", w.root, t, "c")
    r = rec(w, "VM", vm)
    assert r["is_a_template"] and not r["is_default_template"]
    assert r["other_config"]["mac_seed"] != rec(w, "VM", t)["other_config"]["mac_seed"]
    assert "default_template" not in r["other_config"]
    assert "destroy" in r["allowed_operations"]


async def test_provision_makes_disks_from_the_spec(w: World) -> None:
    vm, sr = await installed(w)
    r = rec(w, "VM", vm)
    assert not r["is_a_template"] and "disks" not in r["other_config"]
    (vbd,) = r["VBDs"]
    v = rec(w, "VBD", vbd)
    assert (v["userdevice"], v["bootable"], v["mode"], v["type"]) == ("0", True, "RW", "Disk")
    assert v["other_config"] == {"owner": ""} and not v["unpluggable"]
    d = rec(w, "VDI", v["VDI"])
    assert d["SR"] == sr and d["virtual_size"] == 64 * MIB and d["type"] == "system"
    assert d["name_description"] == "Created by template provisioner"
    assert d["sm_config"]["vmhint"] == r["uuid"]
    assert "start" in r["allowed_operations"]
    assert await w.fail("VM.provision", w.root, vm) == ["PROVISION_ONLY_ALLOWED_ON_TEMPLATE"]


async def test_provision_without_an_sr_fails_and_makes_nothing(w: World) -> None:
    vm = await w.call("VM.clone", w.root, await template(w), "x")
    vdis = len(w.store.table("VDI"))
    assert await w.fail("VM.provision", w.root, vm) == ["UUID_INVALID", "sr", ""]
    r = rec(w, "VM", vm)
    assert r["is_a_template"] and r["VBDs"] == [] and "disks" in r["other_config"]
    assert len(w.store.table("VDI")) == vdis and r["current_operations"] == {}


async def test_the_tour(w: World) -> None:
    vm, _ = await installed(w)
    net = await new_network(w)
    vif = await new_vif(w, vm, net)
    await w.call("VM.start", w.root, vm, False, False)
    r = rec(w, "VM", vm)
    assert r["power_state"] == "Running" and r["domid"] > 0
    assert r["resident_on"] == w.state.host_ref
    assert vm in rec(w, "host", w.state.host_ref)["resident_VMs"]
    assert rec(w, "VBD", r["VBDs"][0])["currently_attached"]
    assert rec(w, "VIF", vif)["currently_attached"]
    m = rec(w, "VM_metrics", r["metrics"])
    assert m["memory_actual"] == r["memory_dynamic_max"] and m["VCPUs_number"] == 1
    gm = rec(w, "VM_guest_metrics", r["guest_metrics"])
    assert gm["networks"]["0/ip"] == gm["networks"]["0/ipv4/0"]
    assert gm["PV_drivers_detected"] and gm["os_version"]["distro"] == "debian"
    assert set(r["allowed_operations"]) >= {"suspend", "clean_shutdown", "pause", "hard_reboot"}

    await w.call("VM.suspend", w.root, vm)
    r = rec(w, "VM", vm)
    assert r["power_state"] == "Suspended" and r["domid"] == -1
    assert r["resident_on"] == NULL_REF and r["guest_metrics"] == NULL_REF
    image = rec(w, "VDI", r["suspend_VDI"])
    assert image["type"] == "suspend" and image["virtual_size"] == r["memory_static_max"]
    assert set(r["allowed_operations"]) >= {"resume", "hard_shutdown"}

    await w.call("VM.resume", w.root, vm, False, False)
    r = rec(w, "VM", vm)
    assert r["power_state"] == "Running" and r["suspend_VDI"] == NULL_REF
    assert w.store.get("VDI", image["uuid"]) is None
    assert not any(v["type"] == "suspend" for v in w.store.table("VDI").values())

    await w.call("VM.clean_shutdown", w.root, vm)
    r = rec(w, "VM", vm)
    assert r["power_state"] == "Halted" and r["domid"] == -1 and r["resident_on"] == NULL_REF
    assert not rec(w, "VBD", r["VBDs"][0])["currently_attached"]
    assert not rec(w, "VIF", vif)["currently_attached"]
    assert r["guest_metrics"] == NULL_REF and r["current_operations"] == {}
    assert await sim(w).list_domains() == []
    await w.call("VM.destroy", w.root, vm)


async def test_pause_unpause_reboot_and_hard_shutdown(w: World) -> None:
    vm, _ = await installed(w, disks=False)
    await w.call("VM.start", w.root, vm, True, False)
    assert rec(w, "VM", vm)["power_state"] == "Paused"
    assert await w.fail("VM.pause", w.root, vm) == ["VM_BAD_POWER_STATE", vm, "running", "paused"]
    await w.call("VM.unpause", w.root, vm)
    await w.call("VM.pause", w.root, vm)
    await w.call("VM.hard_reboot", w.root, vm)
    assert rec(w, "VM", vm)["power_state"] == "Running"
    await w.call("VM.clean_reboot", w.root, vm)
    assert rec(w, "VM", vm)["power_state"] == "Running"
    await w.call("VM.hard_shutdown", w.root, vm)
    assert rec(w, "VM", vm)["power_state"] == "Halted"


async def test_illegal_transitions_fail_with_exact_errors(w: World) -> None:
    vm, _ = await installed(w, disks=False)
    for op, expected in (
        ("VM.pause", "running"),
        ("VM.unpause", "paused"),
        ("VM.clean_shutdown", "running"),
        ("VM.hard_shutdown", "paused, suspended, running"),
        ("VM.hard_reboot", "paused, running"),
        ("VM.suspend", "running"),
    ):
        assert await w.fail(op, w.root, vm) == ["VM_BAD_POWER_STATE", vm, expected, "halted"]
    assert await w.fail("VM.resume", w.root, vm, False, False) == [
        "VM_BAD_POWER_STATE", vm, "suspended", "halted",
    ]  # fmt: skip
    await w.call("VM.start", w.root, vm, False, False)
    assert await w.fail("VM.start", w.root, vm, False, False) == [
        "VM_BAD_POWER_STATE", vm, "halted", "running",
    ]  # fmt: skip
    assert await w.fail("VM.destroy", w.root, vm) == [
        "VM_BAD_POWER_STATE", vm, "halted, suspended", "running",
    ]  # fmt: skip
    await w.call("VM.add_to_blocked_operations", w.root, vm, "hard_shutdown", "maintenance")
    assert await w.fail("VM.hard_shutdown", w.root, vm) == ["OPERATION_BLOCKED", vm, "maintenance"]


async def test_guest_ignoring_clean_shutdown_times_out_and_shutdown_falls_back(w: World) -> None:
    vm, _ = await installed(w, disks=False)
    await w.call("VM.add_to_other_config", w.root, vm, "sim_ignore_clean_shutdown", "true")
    await w.call("VM.start", w.root, vm, False, False)
    assert await w.fail("VM.clean_shutdown", w.root, vm) == ["VM_SHUTDOWN_TIMEOUT", vm, "0.2"]
    r = rec(w, "VM", vm)
    assert r["power_state"] == "Running" and r["current_operations"] == {}
    assert await w.fail("VM.clean_reboot", w.root, vm) == ["VM_SHUTDOWN_TIMEOUT", vm, "0.2"]
    await w.call("VM.shutdown", w.root, vm)
    assert rec(w, "VM", vm)["power_state"] == "Halted"


async def test_concurrent_operation_is_refused_while_one_runs(w: World) -> None:
    vm, _ = await installed(w, disks=False)
    await w.call("VM.add_to_other_config", w.root, vm, "sim_ignore_clean_shutdown", "true")
    await w.call("VM.start", w.root, vm, False, False)
    task = await w.call("Async.VM.clean_shutdown", w.root, vm)
    await asyncio.sleep(0.05)
    assert rec(w, "VM", vm)["current_operations"] == {task: "clean_shutdown"}
    assert "hard_shutdown" in rec(w, "VM", vm)["allowed_operations"]
    assert await w.fail("VM.pause", w.root, vm) == [
        "OTHER_OPERATION_IN_PROGRESS", "VM", vm, "clean_shutdown", task,
    ]  # fmt: skip
    await w.call("VM.hard_shutdown", w.root, vm)
    done = await w.wait_task(task)
    assert done["status"] == "failure"
    assert rec(w, "VM", vm)["power_state"] == "Halted"
    assert rec(w, "VM", vm)["current_operations"] == {}


async def test_guest_agent_reports_after_boot_and_enables_suspend(w: World) -> None:
    vm, _ = await installed(w, disks=False)
    sim(w).settings.boot_time = 0.1
    await w.call("VM.start", w.root, vm, False, False)
    r = rec(w, "VM", vm)
    assert r["guest_metrics"] == NULL_REF and "suspend" not in r["allowed_operations"]
    assert await w.fail("VM.suspend", w.root, vm) == ["VM_LACKS_FEATURE", vm]
    for _ in range(50):
        await asyncio.sleep(0.02)
        if rec(w, "VM", vm)["guest_metrics"] != NULL_REF:
            break
    r = rec(w, "VM", vm)
    assert r["guest_metrics"] != NULL_REF and "suspend" in r["allowed_operations"]


async def test_crash_follows_actions_after_crash(w: World) -> None:
    vm, _ = await installed(w, disks=False)
    await w.call("VM.set_actions_after_crash", w.root, vm, "destroy")
    await w.call("VM.start", w.root, vm, False, False)
    sim(w).crash(rec(w, "VM", vm)["uuid"])
    for _ in range(50):
        await asyncio.sleep(0.01)
        if rec(w, "VM", vm)["power_state"] == "Halted":
            break
    assert rec(w, "VM", vm)["power_state"] == "Halted"


async def test_guest_poweroff_with_restart_boots_again(w: World) -> None:
    vm, _ = await installed(w, disks=False)
    await w.call("VM.set_actions_after_shutdown", w.root, vm, "restart")
    await w.call("VM.start", w.root, vm, False, False)
    first = rec(w, "VM", vm)["domid"]
    sim(w).guest_shutdown(rec(w, "VM", vm)["uuid"])
    for _ in range(50):
        await asyncio.sleep(0.01)
        if rec(w, "VM", vm)["domid"] not in (first, -1):
            break
    r = rec(w, "VM", vm)
    assert r["power_state"] == "Running" and r["domid"] not in (first, -1)


async def test_power_state_reset_forces_halted(w: World) -> None:
    vm, _ = await installed(w, disks=False)
    await w.call("VM.start", w.root, vm, False, False)
    await w.call("VM.power_state_reset", w.root, vm)
    r = rec(w, "VM", vm)
    assert r["power_state"] == "Halted" and r["domid"] == -1
    assert await sim(w).list_domains() == []


async def test_start_beyond_host_memory_is_refused(w: World) -> None:
    vm, _ = await installed(w, disks=False)
    sim(w).settings.host_memory = 256 * MIB
    need = rec(w, "VM", vm)["memory_dynamic_max"]
    assert await w.fail("VM.start", w.root, vm, False, False) == [
        "HOST_NOT_ENOUGH_FREE_MEMORY", str(need), str(256 * MIB),
    ]  # fmt: skip
    r = rec(w, "VM", vm)
    assert r["power_state"] == "Halted" and r["scheduled_to_be_resident_on"] == NULL_REF


async def test_running_guests_are_readopted_after_a_restart(data_dir: Path) -> None:
    w1 = await open_world(data_dir, durable=True)
    vm, _ = await installed(w1, disks=False)
    other, _ = await installed(w1, "vm2", disks=False)
    await w1.call("VM.start", w1.root, vm, False, False)
    await w1.call("VM.start", w1.root, other, False, False)
    domid = rec(w1, "VM", vm)["domid"]
    sim(w1).guest_shutdown(rec(w1, "VM", other)["uuid"])  # gone while the daemon is down
    domains_of(w1.state).backend.set_listener(None)
    await stop_domains(w1.state)
    w2 = await w1.restart()
    await domains_of(w2.state).ready()
    r = rec(w2, "VM", vm)
    assert r["power_state"] == "Running" and r["domid"] == domid
    assert rec(w2, "VM", other)["power_state"] == "Halted"
    await w2.call("VM.hard_shutdown", w2.root, vm)
    await stop_domains(w2.state)
    await w2.close()


async def test_a_domain_whose_start_was_not_recorded_is_adopted(data_dir: Path) -> None:
    w1 = await open_world(data_dir, durable=True)
    vm, _ = await installed(w1, disks=False)
    await w1.call("VM.start", w1.root, vm, False, False)
    w1.store.update("VM", vm, {"power_state": "Halted", "domid": -1})  # as if never written
    await w1.store.sync()
    await stop_domains(w1.state)
    w2 = await w1.restart()
    await domains_of(w2.state).ready()
    r = rec(w2, "VM", vm)
    assert r["power_state"] == "Running" and r["domid"] > 0
    await w2.call("VM.hard_shutdown", w2.root, vm)
    await stop_domains(w2.state)
    await w2.close()


async def test_snapshot_copies_the_vm_and_snapshots_its_disks(w: World) -> None:
    vm, sr = await installed(w)
    net = await new_network(w)
    vif = await new_vif(w, vm, net)
    await w.call("VM.start", w.root, vm, False, False)
    snap = await w.call("VM.snapshot", w.root, vm, "snap1", [])
    s = rec(w, "VM", snap)
    assert s["is_a_snapshot"] and s["is_a_template"] and s["snapshot_of"] == vm
    assert s["power_state"] == "Halted" and s["name_label"] == "snap1"
    assert rec(w, "VM", vm)["snapshots"] == [snap]
    assert rec(w, "VM", vm)["parent"] == snap and s["children"] == [vm]
    (svbd,) = s["VBDs"]
    svdi = rec(w, "VDI", rec(w, "VBD", svbd)["VDI"])
    src_vdi = rec(w, "VBD", rec(w, "VM", vm)["VBDs"][0])["VDI"]
    assert svdi["is_a_snapshot"] and svdi["snapshot_of"] == src_vdi and svdi["SR"] == sr
    (svif,) = s["VIFs"]
    assert rec(w, "VIF", svif)["MAC"] == rec(w, "VIF", vif)["MAC"]
    assert set(s["allowed_operations"]) >= {"revert", "clone", "copy", "destroy"}
    assert "start" not in s["allowed_operations"]
    assert await w.fail("VM.start", w.root, snap, False, False) == [
        "VM_IS_A_SNAPSHOT", snap, "start",
    ]  # fmt: skip
    assert rec(w, "VM", vm)["current_operations"] == {}
    ignored = await w.call("VM.snapshot", w.root, vm, "snap2", [src_vdi])
    assert rec(w, "VM", ignored)["VBDs"] == []
