"""VM.sysprep on the simulator: Windows guests with the agent run it, others refuse."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from openxapi.api.handlers.vm_sysprep import sr_name
from openxapi.api.vm_domains import stop_domains
from tests.api.handlers.vm_kit import bad_power, new_vm, rec, running_vm
from tests.api.storage_kit import new_vbd, vdi_bytes
from tests.api.world import World

UNATTEND = '<?xml version="1.0"?><unattend xmlns="urn:schemas-microsoft-com:unattend"/>'
WINDOWS = {"sim_os": "windows"}


@pytest.fixture
async def w(world: World) -> AsyncIterator[World]:
    yield world
    await stop_domains(world.state)


async def with_cd(w: World, vm: str) -> str:
    return await new_vbd(w, vm, "OpaqueRef:NULL", type="CD", mode="RO", empty=True, userdevice="3")


async def windows_vm(w: World, **other: str) -> tuple[str, str]:
    """A running Windows guest with an empty CD drive; returns (VM, its CD VBD)."""
    vm = await new_vm(w, other_config={**WINDOWS, **other})
    cd = await with_cd(w, vm)
    await w.call("VM.start", w.root, vm, False, False)
    return vm, cd


def sysprep_error(w: World, vm: str, reason: str) -> list[str]:
    return ["SYSPREP", rec(w, "VM", vm)["uuid"], reason]


def iso_vdis(w: World) -> list[Any]:
    (sr,) = w.store.refs_by_name_label("SR", sr_name(w.state))
    return list(rec(w, "SR", sr)["VDIs"])


async def test_sysprep_runs_with_the_answer_file_on_a_cd(w: World, tmp_path: Path) -> None:
    vm, cd = await windows_vm(w, sim_sysprep_time="1.0")
    metrics = rec(w, "VM", vm)["guest_metrics"]
    assert rec(w, "VM_guest_metrics", metrics)["other"]["feature-sysprep"] == "1"
    assert rec(w, "VM_guest_metrics", metrics)["os_version"]["distro"] == "windows"
    task = await w.call("Async.VM.sysprep", w.root, vm, UNATTEND, 30.0)
    for _ in range(100):
        if not rec(w, "VBD", cd)["empty"]:
            break
        await asyncio.sleep(0.02)
    assert rec(w, "VM", vm)["current_operations"] == {task: "sysprep"}
    iso = rec(w, "VBD", cd)["VDI"]
    assert rec(w, "VDI", iso)["location"].startswith(f"sysprep-{rec(w, 'VM', vm)['uuid']}-")
    image = tmp_path / "cd.iso"
    image.write_bytes(await vdi_bytes(w, iso))
    listing = subprocess.run(
        ["isoinfo", "-i", str(image), "-J", "-x", "/unattend.xml"],
        capture_output=True,
        check=True,
    )
    assert listing.stdout.decode() == UNATTEND
    done = await w.wait_task(task, timeout=10)
    assert done["status"] == "success"
    r = rec(w, "VM", vm)
    assert (r["power_state"], r["current_operations"]) == ("Halted", {})
    assert rec(w, "VBD", cd)["empty"] is True
    assert iso_vdis(w) == []


async def test_a_guest_set_to_restart_comes_back(w: World) -> None:
    vm, _cd = await windows_vm(w)
    await w.call("VM.set_actions_after_shutdown", w.root, vm, "restart")
    domid = rec(w, "VM", vm)["domid"]
    await w.call("VM.sysprep", w.root, vm, UNATTEND, 5.0)
    assert rec(w, "VM", vm)["power_state"] == "Running"
    assert rec(w, "VM", vm)["domid"] != domid


async def test_sysprep_that_does_not_finish_in_time(w: World) -> None:
    vm, cd = await windows_vm(w, sim_sysprep_time="30")
    assert await w.fail("VM.sysprep", w.root, vm, UNATTEND, 0.2) == sysprep_error(
        w, vm, "No response from sysprep within allocated time"
    )
    assert rec(w, "VM", vm)["power_state"] == "Running"
    assert rec(w, "VBD", cd)["empty"] is True
    assert iso_vdis(w) == []


async def test_guests_that_cannot_sysprep(w: World) -> None:
    linux = await running_vm(w)
    await with_cd(w, linux)
    assert await w.fail("VM.sysprep", w.root, linux, UNATTEND, 5.0) == sysprep_error(
        w, linux, "VM driver does not support sysprep"
    )
    quiet, _cd = await windows_vm(w, sim_no_agent="true")
    assert await w.fail("VM.sysprep", w.root, quiet, UNATTEND, 5.0) == sysprep_error(
        w, quiet, "VM driver does not support sysprep"
    )
    no_cd = await running_vm(w, other_config=WINDOWS)
    assert await w.fail("VM.sysprep", w.root, no_cd, UNATTEND, 5.0) == sysprep_error(
        w, no_cd, "CD-ROM drive not found"
    )


async def test_arguments_and_power_state(w: World) -> None:
    halted = await new_vm(w, other_config=WINDOWS)
    assert await w.fail("VM.sysprep", w.root, halted, UNATTEND, 5.0) == bad_power(
        halted, "running", "halted"
    )
    vm, _cd = await windows_vm(w)
    assert await w.fail("VM.sysprep", w.root, vm, UNATTEND, -1.0) == [
        "INVALID_VALUE",
        "timeout",
        "-1.",
    ]
    big = "<x>" + "a" * (32 * 1024) + "</x>"
    assert await w.fail("VM.sysprep", w.root, vm, big, 5.0) == sysprep_error(
        w, vm, "unattend.xml file too large"
    )
    assert rec(w, "VM", vm)["current_operations"] == {}
    bad = "OpaqueRef:x"
    assert await w.fail("VM.sysprep", w.root, bad, UNATTEND, 5.0) == ["HANDLE_INVALID", "VM", bad]
