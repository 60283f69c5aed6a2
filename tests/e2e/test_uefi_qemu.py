"""A real UEFI guest: the tiny test guest booted by OVMF in QEMU (TCG), driven with the
XenAPI SDK. The firmware's variable store is saved into VM.NVRAM and is what the next
boot starts from; with Secure Boot the same guest boots on OVMF's SMM build and its kernel
finds Secure Boot enabled by the keys its first boot enrolled."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openxapi.xenops import uefi_vars
from openxapi.xenops.qemu.backend import _runtime_root
from tests.e2e.test_events_sdk import close, login
from tests.e2e.test_qemu_vms import guest_metrics, leftovers, make_server, qemu_pids, tiny_vm
from tests.e2e.test_qemu_vms import wait_for as wait_until
from tests.serverproc import ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed file <_io.TextIOWrapper:ResourceWarning"),
]


UEFI_MEMORY = 256 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if not Path("/usr/share/OVMF/OVMF_CODE_4M.fd").is_file():
        pytest.skip("OVMF is not installed")
    srv = make_server(Path(tmp_path_factory.mktemp("uefi")))
    srv.start()
    yield srv
    leftovers(srv)


@pytest.fixture
def x(server: ServerProcess) -> Iterator[Any]:
    session = login(server.http_url, "e2e-uefi")
    yield session.xenapi
    close(session)


def variables(x: Any, vm: str) -> uefi_vars.VarStore:
    return uefi_vars.decode(x.VM.get_NVRAM(vm)["EFI-variables"])


def boot_count(store: uefi_vars.VarStore) -> int:
    (mtc,) = [v for v in store.variables if v.name == "MTC"]
    return int.from_bytes(mtc.data, "little")


def boot(x: Any, vm: str) -> float:
    """Start the VM and wait for its agent; the seconds that took."""
    since = time.monotonic()
    x.VM.start(vm, False, False)
    wait_until(lambda: guest_metrics(x, vm), timeout=180.0)
    return time.monotonic() - since


def qemu_argv(uuid: str) -> str:
    (pid,) = qemu_pids(uuid)
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_uefi_variables_persist_across_restarts_and_secure_boot_boots(
    server: ServerProcess, x: Any
) -> None:
    vm = tiny_vm(x, "uefi-guest")
    x.VM.set_PV_args(vm, x.VM.get_PV_args(vm).replace("quiet", ""))  # the kernel's boot log
    uuid = x.VM.get_uuid(vm)
    x.VM.add_to_HVM_boot_params(vm, "firmware", "uefi")
    # OVMF leaves too little of 128 MiB for the kernel's EFI stub to unpack the kernel
    x.VM.set_memory_limits(vm, *[str(UEFI_MEMORY)] * 4)
    x.VM.add_to_platform(vm, "secureboot", "false")
    assert x.VM.get_secureboot_readiness(vm) == "disabled"

    took = boot(x, vm)
    argv = qemu_argv(uuid)
    assert "OVMF_CODE_4M.fd" in argv and "-machine pc " in argv
    # the first boot enrolled the pool's keys; the firmware's own writes arrive while it runs
    wait_until(lambda: "MTC" in variables(x, vm).names(), timeout=30.0)
    x.VM.clean_shutdown(vm)
    first = variables(x, vm)
    assert {"PK", "KEK", "db", "dbx", "BootOrder"} <= set(first.names())
    assert boot_count(first) == 1

    # the next boot starts from the saved store: the counter goes on from it
    boot(x, vm)
    x.VM.clean_shutdown(vm)
    assert boot_count(variables(x, vm)) == 2

    # Secure Boot: OVMF's SMM build on a q35 machine, with the keys of the store
    x.VM.remove_from_platform(vm, "secureboot")
    x.VM.add_to_platform(vm, "secureboot", "true")
    assert x.VM.get_secureboot_readiness(vm) == "ready"
    secure_took = boot(x, vm)
    argv = qemu_argv(uuid)
    assert "OVMF_CODE_4M.secboot.fd" in argv and "q35,smm=on" in argv
    serial = _runtime_root(server.data_dir / "qemu", "") / uuid / "serial.log"
    assert "secureboot: Secure boot enabled" in serial.read_text(errors="replace")
    x.VM.clean_shutdown(vm)
    after = variables(x, vm)
    assert boot_count(after) == 3 and x.VM.get_secureboot_readiness(vm) == "ready"
    assert qemu_pids(uuid) == []
    print(f"UEFI boot to agent: {took:.1f} s; with Secure Boot: {secure_took:.1f} s")
    x.VM.destroy(vm)
