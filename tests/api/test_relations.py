"""Inferred one-to-many relations: which "many" sets the server keeps in step."""

from __future__ import annotations

from openxapi.api.relations import Relation, Relations, infer
from openxapi.spec.model import load

API = load()
ALL = set(infer(API))


def test_plain_pairs_are_inferred() -> None:
    for r in (
        Relation("VM", "VBDs", "VBD", "VM"),
        Relation("VM", "VIFs", "VIF", "VM"),
        Relation("network", "VIFs", "VIF", "network"),
        Relation("host", "host_CPUs", "host_cpu", "host"),
        Relation("VDI", "VBDs", "VBD", "VDI"),
        Relation("SR", "VDIs", "VDI", "SR"),
    ):
        assert r in ALL, r


def test_ambiguous_pairs_use_the_explicit_table() -> None:
    assert Relation("host", "resident_VMs", "VM", "resident_on") in ALL
    assert Relation("VM", "snapshots", "VM", "snapshot_of") in ALL
    many_to_many = {"enabled_on_PGPUs", "supported_on_PGPUs", "enabled_on_GPU_groups"}
    assert not [r for r in ALL if r.owner_cls == "VGPU_type" and r.set_field in many_to_many]
    assert Relation("VGPU_type", "VGPUs", "VGPU", "type") in ALL


def test_every_relation_names_real_fields() -> None:
    for r in ALL:
        owner = API.classes[r.owner_cls].field_map[r.set_field]
        member = API.classes[r.member_cls].field_map[r.ref_field]
        assert owner.qualifier == "DynamicRO"
        assert member.type.cls == r.owner_cls  # type: ignore[attr-defined]


def test_links_of_a_record() -> None:
    rel = Relations(API)
    links = rel.links("VBD", {"VM": "OpaqueRef:vm", "VDI": "OpaqueRef:NULL"})
    assert [(r.owner_cls, r.set_field, owner) for r, owner in links] == [
        ("VM", "VBDs", "OpaqueRef:vm")
    ]
    assert rel.links("VBD", {"VM": "", "VDI": "OpaqueRef:NULL"}) == []
