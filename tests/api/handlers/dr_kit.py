"""Helpers the disaster-recovery tests share: a replicated SR, a VM with devices, copies."""

from __future__ import annotations

from typing import Any

from openxapi.api.dr_replication import replication_of
from tests.api.handlers.vm_kit import MIB, new_vm, rec
from tests.api.storage_kit import new_sr, new_vbd, new_vdi
from tests.api.world import World, create_args


async def replicated_sr(w: World) -> tuple[str, str]:
    """A simulated SR with replication on; returns (SR, its metadata VDI)."""
    sr = await new_sr(w, "dummy")
    await w.call("SR.enable_database_replication", w.root, sr)
    (vdi,) = [v for v in rec(w, "SR", sr)["VDIs"] if rec(w, "VDI", v)["type"] == "metadata"]
    return sr, vdi


async def flush(w: World) -> None:
    """Bring the copies up to date now (the server does it shortly after each commit)."""
    await w.store.sync()
    await replication_of(w.state).flush()


async def vm_with_devices(w: World, sr: str, **values: Any) -> tuple[str, str, str]:
    """A halted VM with a disk in ``sr`` and a NIC; returns (VM, its VDI, its VIF)."""
    vm = await new_vm(w, **values)
    vdi = await new_vdi(w, sr, MIB, name_label="root disk")
    await new_vbd(w, vm, vdi, userdevice="0", bootable=True)
    network = next(iter(w.store.table("network")))
    vif = await w.call(
        "VIF.create",
        w.root,
        create_args(w.api, "VIF", VM=vm, network=network, device="0", MAC="aa:bb:cc:00:11:22"),
    )
    return vm, vdi, vif
