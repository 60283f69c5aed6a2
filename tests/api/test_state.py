"""Server state helpers: the encoded-record cache and record construction."""

from __future__ import annotations

import orjson

from openxapi.api.context import CallContext
from openxapi.wire import Preencoded, encode_value_xml
from tests.api.world import World, create_args, decode_xml_value


async def test_record_cache_returns_fresh_bytes_after_a_write(world: World) -> None:
    vm = await world.call("VM.create", world.root, create_args(world.api, "VM", name_label="one"))
    for codec in ("xml", "json"):
        ctx = CallContext(codec=codec)
        first = await world.call("VM.get_record", world.root, vm, ctx=ctx)
        again = await world.call("VM.get_record", world.root, vm, ctx=ctx)
        assert isinstance(first, Preencoded) and first is again
    await world.call("VM.set_name_label", world.root, vm, "two")
    xml = await world.call("VM.get_record", world.root, vm, ctx=CallContext(codec="xml"))
    assert decode_xml_value(xml.xml)["name_label"] == "two"
    js = await world.call("VM.get_record", world.root, vm, ctx=CallContext(codec="json"))
    assert orjson.loads(js.json)["name_label"] == "two"
    records = await world.call("VM.get_all_records", world.root, ctx=CallContext(codec="json"))
    assert orjson.loads(records[vm].json)["name_label"] == "two"


async def test_a_record_changed_again_and_again_reads_as_a_fresh_encode(world: World) -> None:
    vm = await world.call("VM.create", world.root, create_args(world.api, "VM", name_label="a"))
    ctx = CallContext(codec="xml")
    await world.call("VM.get_record", world.root, vm, ctx=ctx)
    for n, label in enumerate(("b", "c<&>", "d")):
        await world.call("VM.set_name_label", world.root, vm, label)
        await world.call("VM.add_to_other_config", world.root, vm, f"k{n}", "v")
        got = await world.call("VM.get_record", world.root, vm, ctx=ctx)
        assert got.xml == encode_value_xml(world.store.get("VM", vm))
        assert decode_xml_value(got.xml)["name_label"] == label
        assert decode_xml_value(got.xml)["other_config"][f"k{n}"] == "v"


async def test_cached_record_of_a_destroyed_object_is_gone(world: World) -> None:
    vm = await world.call("VM.create", world.root, create_args(world.api, "VM"))
    await world.call("VM.get_record", world.root, vm)
    await world.call("VM.destroy", world.root, vm)
    assert vm not in world.state.cache.xml
    assert await world.fail("VM.get_record", world.root, vm) == ["HANDLE_INVALID", "VM", vm]


async def test_new_record_has_every_field_in_order(world: World) -> None:
    rec = world.state.new_record("VM", {"name_label": "x"})
    assert list(rec) == [f.name for f in world.api.classes["VM"].fields]
    assert rec["uuid"] and rec["name_label"] == "x"
