"""Generated messages: constructors, destructors, accessors, queries (core-api.md §2)."""

from __future__ import annotations

import os
import uuid

import pytest

from openxapi.spec.model import NULL_REF
from tests.api.world import World, create_args


async def new_vm(world: World, **values: object) -> str:
    ref = await world.call("VM.create", world.root, create_args(world.api, "VM", **values))
    assert isinstance(ref, str) and ref.startswith("OpaqueRef:")
    return ref


# ---- create ---------------------------------------------------------------------------------


async def test_create_missing_required_field_names_it(world: World) -> None:
    args = create_args(world.api, "VM")
    del args["PV_kernel"]
    assert await world.fail("VM.create", world.root, args) == [
        "INTERNAL_ERROR",
        'Server_helpers.Dispatcher_FieldNotFound("PV_kernel")',
    ]


async def test_create_with_an_empty_struct_names_the_first_required_field(world: World) -> None:
    first = next(
        f.name for f in world.api.classes["VM"].fields if f.in_constructor and not f.has_default
    )
    err = await world.fail("VM.create", world.root, {})
    assert err[0] == "INTERNAL_ERROR" and f'"{first}"' in err[1]


async def test_create_ignores_extra_and_read_only_members(world: World) -> None:
    vm = await new_vm(
        world,
        name_label="x",
        uuid="not-a-uuid",
        bogus_member=[1, 2],
        domid="12",
        VBDs=["OpaqueRef:elsewhere"],
    )
    rec = await world.record("VM", vm)
    assert rec["name_label"] == "x"
    assert rec["domid"] != 12
    assert rec["VBDs"] == []
    assert "bogus_member" not in rec
    assert str(uuid.UUID(rec["uuid"])) == rec["uuid"]


async def test_create_fills_defaults_in_field_order(world: World) -> None:
    vm = await new_vm(world, name_label="ordered")
    rec = await world.record("VM", vm)
    fields = world.api.classes["VM"].fields
    assert list(rec) == [f.name for f in fields]
    given = create_args(world.api, "VM", name_label="ordered")
    for f in fields:
        if f.in_constructor and f.has_default and f.name not in given:
            assert rec[f.name] == f.default, f.name
    assert rec["VBDs"] == []
    assert rec["metrics"] == NULL_REF or world.store.get("VM_metrics", rec["metrics"]) is not None


async def test_created_object_is_listed_and_found(world: World) -> None:
    vm = await new_vm(world, name_label="findme")
    assert vm in await world.call("VM.get_all", world.root)
    u = await world.call("VM.get_uuid", world.root, vm)
    assert await world.call("VM.get_by_uuid", world.root, u) == vm
    assert await world.call("VM.get_by_name_label", world.root, "findme") == [vm]
    records = await world.call("VM.get_all_records", world.root)
    assert vm in records


async def test_get_by_uuid_unknown(world: World) -> None:
    u = str(uuid.uuid4())
    assert await world.fail("VM.get_by_uuid", world.root, u) == ["UUID_INVALID", "VM", u]


# ---- destroy --------------------------------------------------------------------------------


async def test_destroy(world: World) -> None:
    vm = await new_vm(world)
    assert await world.call("VM.destroy", world.root, vm) == ""
    assert vm not in await world.call("VM.get_all", world.root)
    assert await world.fail("VM.get_record", world.root, vm) == ["HANDLE_INVALID", "VM", vm]
    assert await world.fail("VM.destroy", world.root, vm) == ["HANDLE_INVALID", "VM", vm]


async def test_getter_of_a_null_ref_is_handle_invalid(world: World) -> None:
    assert await world.fail("VM.get_name_label", world.root, NULL_REF) == [
        "HANDLE_INVALID",
        "VM",
        NULL_REF,
    ]


# ---- relations ------------------------------------------------------------------------------


async def test_vbd_create_and_destroy_keep_vm_vbds_in_step(world: World) -> None:
    vm = await new_vm(world)
    pool = world.state.pool_ref
    sr = await world.call("pool.get_default_SR", world.root, pool)
    vdi_args = create_args(world.api, "VDI", SR=sr, virtual_size="1048576", type="user")
    vdi = await world.call("VDI.create", world.root, vdi_args)
    args = create_args(world.api, "VBD", VM=vm, VDI=vdi, userdevice="0", type="Disk", mode="RW")
    vbd = await world.call("VBD.create", world.root, args)
    assert await world.call("VM.get_VBDs", world.root, vm) == [vbd]
    vbd2 = await world.call("VBD.create", world.root, {**args, "userdevice": "1"})
    assert await world.call("VM.get_VBDs", world.root, vm) == [vbd, vbd2]
    await world.call("VBD.destroy", world.root, vbd)
    assert await world.call("VM.get_VBDs", world.root, vm) == [vbd2]


async def test_vif_create_and_destroy_keep_vm_vifs_in_step(world: World) -> None:
    vm = await new_vm(world)
    net = await world.call(
        "network.create", world.root, create_args(world.api, "network", name_label="n")
    )
    vif = await world.call(
        "VIF.create",
        world.root,
        create_args(world.api, "VIF", VM=vm, network=net, device="0", MTU="1500"),
    )
    assert await world.call("VM.get_VIFs", world.root, vm) == [vif]
    assert await world.call("network.get_VIFs", world.root, net) == [vif]
    await world.call("VIF.destroy", world.root, vif)
    assert await world.call("VM.get_VIFs", world.root, vm) == []
    assert await world.call("network.get_VIFs", world.root, net) == []


async def test_member_pointing_at_a_missing_owner_is_created(world: World) -> None:
    ghost = "OpaqueRef:ghost"
    cache = await world.call(
        "PVS_cache_storage.create",
        world.root,
        create_args(world.api, "PVS_cache_storage", site=ghost),
    )
    assert await world.call("PVS_cache_storage.get_site", world.root, cache) == ghost
    await world.call("PVS_cache_storage.destroy", world.root, cache)


async def test_host_cpus_match_host_cpu_records(world: World) -> None:
    host = world.state.host_ref
    cpus = await world.call("host.get_host_CPUs", world.root, host)
    owned = [r for r, rec in world.store.table("host_cpu").items() if rec["host"] == host]
    assert sorted(cpus) == sorted(owned)
    assert len(cpus) == (os.cpu_count() or 1)
    numbers = sorted(world.store.table("host_cpu")[r]["number"] for r in cpus)
    assert numbers == list(range(len(cpus)))
    world.generic.destroy_object(world.state, "host_cpu", cpus[0])
    assert cpus[0] not in await world.call("host.get_host_CPUs", world.root, host)


# ---- map and set accessors ------------------------------------------------------------------


async def test_map_accessors(world: World) -> None:
    vm = await new_vm(world)
    await world.call("VM.set_other_config", world.root, vm, {})  # drop VM.create's mac_seed
    u = await world.call("VM.get_uuid", world.root, vm)
    await world.call("VM.add_to_other_config", world.root, vm, "k", "v")
    assert await world.fail("VM.add_to_other_config", world.root, vm, "k", "w") == [
        "MAP_DUPLICATE_KEY",
        "VM",
        "other_config",
        u,
        "k",
    ]
    assert await world.call("VM.get_other_config", world.root, vm) == {"k": "v"}
    await world.call("VM.remove_from_other_config", world.root, vm, "absent")
    await world.call("VM.remove_from_other_config", world.root, vm, "k")
    assert await world.call("VM.get_other_config", world.root, vm) == {}
    await world.call("VM.set_other_config", world.root, vm, {"a": "1", "b": "2"})
    assert await world.call("VM.get_other_config", world.root, vm) == {"a": "1", "b": "2"}


async def test_set_accessors(world: World) -> None:
    vm = await new_vm(world)
    await world.call("VM.add_tags", world.root, vm, "a")
    await world.call("VM.add_tags", world.root, vm, "b")
    await world.call("VM.add_tags", world.root, vm, "a")
    assert await world.call("VM.get_tags", world.root, vm) == ["a", "b"]
    await world.call("VM.remove_tags", world.root, vm, "zzz")
    await world.call("VM.remove_tags", world.root, vm, "a")
    assert await world.call("VM.get_tags", world.root, vm) == ["b"]
    await world.call("VM.set_tags", world.root, vm, ["x", "y"])
    assert await world.call("VM.get_tags", world.root, vm) == ["x", "y"]


async def test_setter_then_getter_and_name_index(world: World) -> None:
    vm = await new_vm(world, name_label="before")
    await world.call("VM.set_name_label", world.root, vm, "after")
    assert await world.call("VM.get_name_label", world.root, vm) == "after"
    assert await world.call("VM.get_by_name_label", world.root, "before") == []
    assert await world.call("VM.get_by_name_label", world.root, "after") == [vm]


async def test_read_only_field_has_no_setter(world: World) -> None:
    vm = await new_vm(world)
    assert (await world.fail("VM.set_power_state", world.root, vm, "Running"))[0] == (
        "MESSAGE_METHOD_UNKNOWN"
    )


# ---- where-expressions ----------------------------------------------------------------------


async def test_get_all_records_where(world: World) -> None:
    a = await new_vm(world, name_label="alpha")
    await new_vm(world, name_label="beta")
    got = await world.call("VM.get_all_records_where", world.root, 'field "name__label" = "alpha"')
    assert list(got) == [a]
    assert await world.call("VM.get_all_where", world.root, 'field "name__label" = "alpha"') == [a]
    everything = await world.call("VM.get_all_where", world.root, "true")
    assert sorted(everything) == sorted(await world.call("VM.get_all", world.root))


@pytest.mark.parametrize("expr", ['field "name__label" =', "(", 'field name__label = "x"', '"a'])
async def test_get_all_records_where_syntax_error(world: World, expr: str) -> None:
    err = await world.fail("VM.get_all_records_where", world.root, expr)
    assert err[0] == "INVALID_VALUE" and err[1] == expr and len(err) == 3


async def test_get_all_records_where_unknown_column(world: World) -> None:
    err = await world.fail("VM.get_all_where", world.root, 'field "nope" = "x"')
    assert err == ["INTERNAL_ERROR", "missing field", "nope", ""]


# ---- a sample of classes --------------------------------------------------------------------


def _generic_lifecycle_classes() -> list[str]:
    from openxapi.api.generic import Generic
    from openxapi.api.registry import handlers
    from openxapi.spec.model import load

    api = load()
    built, custom = Generic(api).build(), handlers()
    return sorted(
        c
        for c in api.classes
        if all(
            f"{c}.{m}" in built
            and f"{c}.{m}" not in custom
            and api.messages[f"{c}.{m}"].lifecycle != "removed"
            for m in ("create", "destroy", "get_record", "get_all")
        )
    )


@pytest.mark.parametrize("cls", _generic_lifecycle_classes())
async def test_generic_lifecycle(world: World, cls: str) -> None:
    ref = await world.call(f"{cls}.create", world.root, create_args(world.api, cls))
    rec = await world.record(cls, ref)
    assert list(rec) == [f.name for f in world.api.classes[cls].fields]
    assert ref in await world.call(f"{cls}.get_all", world.root)
    if "uuid" in rec:
        assert await world.call(f"{cls}.get_by_uuid", world.root, rec["uuid"]) == ref
    await world.call(f"{cls}.destroy", world.root, ref)
    assert ref not in await world.call(f"{cls}.get_all", world.root)
    assert await world.fail(f"{cls}.get_record", world.root, ref) == ["HANDLE_INVALID", cls, ref]
