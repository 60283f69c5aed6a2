"""Helpers for the storage tests: default SR, disks, VMs in a given power state."""

from __future__ import annotations

from typing import Any

from openxapi.api.storage_access import Storage, storage_of
from tests.api.world import World, create_args

MiB = 1 << 20


def storage(world: World) -> Storage:
    return storage_of(world.state)


async def default_sr(world: World) -> str:
    sr = await world.call("pool.get_default_SR", world.root, world.state.pool_ref)
    assert isinstance(sr, str)
    return sr


async def sr_named(world: World, name: str) -> str:
    (ref,) = await world.call("SR.get_by_name_label", world.root, name)
    assert isinstance(ref, str)
    return ref


async def new_sr(world: World, sr_type: str = "dummy", size: int = 0, **config: str) -> str:
    ref = await world.call(
        "SR.create",
        world.root,
        world.state.host_ref,
        dict(config),
        str(size),
        f"{sr_type} SR",
        "",
        sr_type,
        "user",
        False,
        {},
    )
    assert isinstance(ref, str)
    return ref


async def new_vdi(world: World, sr: str, size: int = MiB, **values: Any) -> str:
    values.setdefault("type", "user")
    args = create_args(world.api, "VDI", SR=sr, virtual_size=str(size), **values)
    ref = await world.call("VDI.create", world.root, args)
    assert isinstance(ref, str)
    return ref


async def new_vm(world: World, power_state: str = "Halted", **values: Any) -> str:
    ref = await world.call("VM.create", world.root, create_args(world.api, "VM", **values))
    assert isinstance(ref, str)
    if power_state != "Halted":
        await set_power(world, ref, power_state)
    return ref


async def set_power(world: World, vm: str, power_state: str) -> None:
    """What the VM lifecycle does to a VM's record, for storage tests that need it."""
    resident = world.state.host_ref if power_state in ("Running", "Paused") else None
    values: dict[str, Any] = {"power_state": power_state}
    if resident is not None:
        values["resident_on"] = resident
    world.store.update("VM", vm, values)
    storage(world).refresh_vm(vm)


async def new_vbd(world: World, vm: str, vdi: str, **values: Any) -> str:
    fields: dict[str, Any] = {
        "VM": vm,
        "VDI": vdi,
        "userdevice": "autodetect",
        "type": "Disk",
        "mode": "RW",
        "bootable": False,
        "empty": False,
    }
    fields.update(values)
    ref = await world.call("VBD.create", world.root, create_args(world.api, "VBD", **fields))
    assert isinstance(ref, str)
    return ref


async def vdi_bytes(world: World, vdi: str) -> bytes:
    """A disk's contents as the driver reads them."""
    from openxapi.storage.transfer import export_raw

    rec = world.store.get("VDI", vdi)
    assert rec is not None
    drv = await storage(world).driver(rec["SR"])
    reader = await drv.open_reader(rec["location"])
    try:
        return b"".join([c async for c in export_raw(reader)])
    finally:
        await reader.close()


async def write_vdi(world: World, vdi: str, writes: list[tuple[int, bytes]]) -> None:
    """Replace a disk's contents (as an import does)."""
    import asyncio

    rec = world.store.get("VDI", vdi)
    assert rec is not None
    drv = await storage(world).driver(rec["SR"])
    w = await drv.open_writer(rec["location"])
    loop = asyncio.get_running_loop()
    for offset, data in writes:
        await loop.run_in_executor(None, w.write, offset, data)
    await w.commit()
