"""The domain backend contract, written once for every implementation (QEMU joins later)."""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from openxapi.xenops.backend import (
    CAPABILITY_NAMES,
    BadDomainState,
    DomainBackend,
    DomainExists,
    DomainNotFound,
    DomainSpec,
    InsufficientResources,
    NicSpec,
    ShutdownTimeout,
    SuspendImage,
)
from openxapi.xenops.qemu import QemuBackend, QemuSettings
from openxapi.xenops.simulator import SimulatorBackend, SimulatorSettings
from tests.guestimage import guest_image_dir

MIB = 1 << 20

Factory = Callable[[Path], DomainBackend]


def _simulator(path: Path) -> DomainBackend:
    return SimulatorBackend(path, SimulatorSettings(host_memory=4096 * MIB, host_cpus=4))


def _qemu(path: Path) -> DomainBackend:
    return QemuBackend(path, QemuSettings(accel="tcg", host_memory=8192 * MIB, host_cpus=2))


FACTORIES: dict[str, Factory] = {"simulator": _simulator, "qemu": _qemu}
#: How long a clean shutdown or reboot may take: a real guest boots before it can comply.
TIMEOUTS = {"simulator": 5.0, "qemu": 90.0}
#: What every spec needs to boot on each backend (QEMU: the tiny guest's kernel).
BOOT: dict[str, Callable[[], dict[str, str]]] = {
    "simulator": dict,
    "qemu": lambda: {
        "kernel": str(guest_image_dir() / "vmlinuz"),
        "initrd": str(guest_image_dir() / "initrd.gz"),
        "cmdline": "console=ttyS0 quiet panic=-1",
    },
}
_boot: dict[str, str] = {}
TIMEOUT = 5.0


@pytest.fixture(params=sorted(FACTORIES))
def factory(request: pytest.FixtureRequest) -> Iterator[Factory]:
    global TIMEOUT
    _boot.clear()
    _boot.update(BOOT[request.param]())
    TIMEOUT = TIMEOUTS[request.param]
    yield FACTORIES[request.param]
    _boot.clear()


@pytest.fixture
async def backend(factory: Factory, tmp_path: Path) -> AsyncIterator[DomainBackend]:
    b = factory(tmp_path)
    await b.open()
    yield b
    for d in await b.list_domains():
        await b.hard_shutdown(d.uuid)
    await b.close()


def spec(memory: int = 256 * MIB, **hints: str) -> DomainSpec:
    return DomainSpec(
        uuid=str(uuidlib.uuid4()),
        name="guest",
        memory=memory,
        vcpus=1,
        nics=(NicSpec("0", "aa:bb:cc:00:00:01"),),
        hints=hints,
        **_boot,
    )


def image_for(s: DomainSpec) -> SuspendImage:
    return SuspendImage(vdi_uuid=str(uuidlib.uuid4()), location="img", size=s.memory)


async def test_capabilities_name_known_features(backend: DomainBackend) -> None:
    assert set(backend.capabilities) <= set(CAPABILITY_NAMES)


async def test_start_runs_and_is_listed(backend: DomainBackend) -> None:
    s = spec()
    info = await backend.start(s)
    assert info.state == "running" and info.domid > 0 and info.memory_actual == s.memory
    assert [d.uuid for d in await backend.list_domains()] == [s.uuid]
    with pytest.raises(DomainExists):
        await backend.start(s)


async def test_start_paused_then_unpause_is_idempotent(backend: DomainBackend) -> None:
    s = spec()
    assert (await backend.start(s, paused=True)).state == "paused"
    assert (await backend.unpause(s.uuid)).state == "running"
    assert (await backend.unpause(s.uuid)).state == "running"
    assert (await backend.pause(s.uuid)).state == "paused"
    assert (await backend.pause(s.uuid)).state == "paused"


async def test_start_beyond_capacity_leaves_nothing(backend: DomainBackend) -> None:
    cap = await backend.host_capacity()
    s = spec(memory=cap.memory_free + MIB)
    with pytest.raises(InsufficientResources):
        await backend.start(s)
    assert await backend.info(s.uuid) is None


async def test_capacity_accounts_for_domains(backend: DomainBackend) -> None:
    before = await backend.host_capacity()
    s = spec()
    await backend.start(s)
    after = await backend.host_capacity()
    assert after.memory_free == before.memory_free - s.memory
    assert after.memory_total == before.memory_total and after.cpus == before.cpus


async def test_clean_shutdown_removes_domain(backend: DomainBackend) -> None:
    s = spec()
    await backend.start(s)
    await backend.clean_shutdown(s.uuid, timeout=TIMEOUT)
    assert await backend.info(s.uuid) is None
    with pytest.raises(DomainNotFound):
        await backend.clean_shutdown(s.uuid, timeout=TIMEOUT)


async def test_clean_shutdown_of_paused_domain_is_refused(backend: DomainBackend) -> None:
    s = spec()
    await backend.start(s, paused=True)
    with pytest.raises(BadDomainState):
        await backend.clean_shutdown(s.uuid, timeout=TIMEOUT)
    assert (await backend.info(s.uuid)) is not None


async def test_hard_shutdown_is_idempotent(backend: DomainBackend) -> None:
    s = spec()
    await backend.start(s)
    await backend.hard_shutdown(s.uuid)
    await backend.hard_shutdown(s.uuid)
    assert await backend.info(s.uuid) is None


async def test_reboots_keep_domain_running(backend: DomainBackend) -> None:
    s = spec()
    await backend.start(s)
    assert (await backend.clean_reboot(s.uuid, timeout=TIMEOUT)).state == "running"
    await backend.pause(s.uuid)
    assert (await backend.hard_reboot(s.uuid)).state == "running"
    with pytest.raises(DomainNotFound):
        await backend.hard_reboot(str(uuidlib.uuid4()))


async def test_suspend_and_resume_restore_domain(backend: DomainBackend) -> None:
    s = spec()
    await backend.start(s)
    img = image_for(s)
    await backend.suspend(s.uuid, img)
    assert await backend.info(s.uuid) is None
    info = await backend.resume(s, img)
    assert info.state == "running" and info.memory_actual == s.memory
    with pytest.raises(DomainNotFound):  # the image is consumed
        await backend.resume(spec(), img)


async def test_resume_from_missing_image_fails(backend: DomainBackend) -> None:
    s = spec()
    with pytest.raises(DomainNotFound):
        await backend.resume(s, image_for(s))
    assert await backend.info(s.uuid) is None


async def test_domains_survive_reopen(factory: Factory, tmp_path: Path) -> None:
    b = factory(tmp_path)
    if not b.capabilities.get("survives_restart"):
        pytest.skip("backend does not keep domains across restarts")
    await b.open()
    s = spec()
    first = await b.start(s)
    await b.close()
    b2 = factory(tmp_path)
    adopted = await b2.open()
    assert [(d.uuid, d.domid, d.state) for d in adopted] == [(s.uuid, first.domid, "running")]
    await b2.hard_shutdown(s.uuid)
    await b2.close()


# ---- simulator-only behaviour ----------------------------------------------------------------
async def test_simulated_agent_reports_after_boot(tmp_path: Path) -> None:
    b = SimulatorBackend(tmp_path, SimulatorSettings(boot_time=0.05))
    seen: list[str] = []
    b.set_listener(seen.append)
    s = spec()
    assert (await b.start(s)).guest is None
    await asyncio.sleep(0.15)
    info = await b.info(s.uuid)
    assert info is not None and info.guest is not None
    assert seen == [s.uuid]
    assert info.guest.networks["0/ip"] == info.guest.networks["0/ipv4/0"]
    assert set(info.guest.os_version) >= {"name", "distro", "major", "minor", "uname"}
    assert info.guest.pv_drivers_detected
    await b.close()


async def test_guest_ignoring_clean_shutdown_times_out_running(tmp_path: Path) -> None:
    b = SimulatorBackend(None)
    s = spec(sim_ignore_clean_shutdown="true")
    await b.start(s)
    with pytest.raises(ShutdownTimeout):
        await b.clean_shutdown(s.uuid, timeout=0.05)
    info = await b.info(s.uuid)
    assert info is not None and info.state == "running"
    await b.hard_shutdown(s.uuid)


async def test_crash_is_reported(tmp_path: Path) -> None:
    b = SimulatorBackend(None)
    seen: list[str] = []
    b.set_listener(seen.append)
    s = spec()
    await b.start(s)
    b.crash(s.uuid)
    info = await b.info(s.uuid)
    assert seen == [s.uuid] and info is not None and info.state == "crashed"
    b.guest_shutdown(s.uuid)
    assert await b.info(s.uuid) is None


async def test_default_host_holds_a_thousand_vms() -> None:
    b = SimulatorBackend(None)
    for _ in range(1000):
        await b.start(spec(memory=2048 * MIB))
    assert (await b.host_capacity()).memory_free >= 0
    assert len(await b.list_domains()) == 1000
