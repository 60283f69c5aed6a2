"""Small helpers the VM message tests share: VMs in a given state, records, dom0."""

from __future__ import annotations

from typing import Any

from tests.api.world import World, create_args

MIB = 1 << 20


def rec(w: World, cls: str, ref: str) -> dict[str, Any]:
    r = w.store.get(cls, ref)
    assert r is not None
    return r


def dom0(w: World) -> str:
    return next(r for r, v in w.store.table("VM").items() if v["is_control_domain"])


async def new_vm(w: World, **values: Any) -> str:
    """A halted HVM VM of 256 MiB with 2 vCPUs (``values`` override the fields)."""
    values.setdefault("VCPUs_max", "2")
    values.setdefault("VCPUs_at_startup", "2")
    for field in ("memory_static_max", "memory_dynamic_max", "memory_dynamic_min"):
        values.setdefault(field, str(256 * MIB))
    values.setdefault("HVM_boot_policy", "BIOS order")
    values.setdefault("domain_type", "hvm")
    ref = await w.call("VM.create", w.root, create_args(w.api, "VM", **values))
    assert isinstance(ref, str)
    return ref


async def running_vm(w: World, **values: Any) -> str:
    """A VM started on the simulator backend."""
    vm = await new_vm(w, **values)
    await w.call("VM.start", w.root, vm, False, False)
    assert rec(w, "VM", vm)["power_state"] == "Running"
    return vm


def bad_power(vm: str, expected: str, actual: str) -> list[str]:
    return ["VM_BAD_POWER_STATE", vm, expected, actual]
