"""One-to-many relations: the server keeps the "many" side (e.g. ``VM.VBDs``) in step.

The description names the two ends only implicitly, so they are inferred: a read-only
``B ref set`` field of class A pairs with the single ``A ref`` field of class B. The few
ambiguous pairs are named explicitly in :data:`EXPLICIT`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openxapi.spec import types as T
from openxapi.spec.model import NULL_REF, Api

# (class, set field) -> (member class, its ref field) where inference finds several.
EXPLICIT: dict[tuple[str, str], tuple[str, str]] = {
    ("host", "resident_VMs"): ("VM", "resident_on"),
    ("VM", "snapshots"): ("VM", "snapshot_of"),
    ("VM", "children"): ("VM", "parent"),
    ("VDI", "snapshots"): ("VDI", "snapshot_of"),
    ("task", "subtasks"): ("task", "subtask_of"),
    ("session", "tasks"): ("task", "session"),
    ("PIF", "VLAN_slave_of"): ("VLAN", "tagged_PIF"),
    ("PIF", "tunnel_access_PIF_of"): ("tunnel", "access_PIF"),
    ("PIF", "tunnel_transport_PIF_of"): ("tunnel", "transport_PIF"),
    ("PIF", "sriov_physical_PIF_of"): ("network_sriov", "physical_PIF"),
    ("PIF", "sriov_logical_PIF_of"): ("network_sriov", "logical_PIF"),
    ("Bond", "slaves"): ("PIF", "bond_slave_of"),
    ("PIF", "bond_master_of"): ("Bond", "master"),
    ("VM", "VTPMs"): ("VTPM", "VM"),
    ("PGPU", "resident_VGPUs"): ("VGPU", "resident_on"),
    ("VGPU_type", "enabled_on_PGPUs"): ("", ""),
    ("VGPU_type", "supported_on_PGPUs"): ("", ""),
    ("VGPU_type", "enabled_on_GPU_groups"): ("", ""),
    ("VGPU_type", "supported_on_GPU_groups"): ("", ""),
}


@dataclass(frozen=True, slots=True)
class Relation:
    """``owner_cls.set_field`` lists every ``member_cls`` whose ``ref_field`` points at it."""

    owner_cls: str
    set_field: str
    member_cls: str
    ref_field: str


def infer(api: Api) -> list[Relation]:
    out: list[Relation] = []
    for a in api.classes.values():
        if not a.in_db:
            continue
        for f in a.fields:
            if not (isinstance(f.type, T.Set) and isinstance(f.type.elem, T.Ref)):
                continue
            if f.qualifier != "DynamicRO":
                continue
            key = (a.name, f.name)
            if key in EXPLICIT:
                mcls, mfield = EXPLICIT[key]
                if mcls and mcls in api.classes and mfield in api.classes[mcls].field_map:
                    out.append(Relation(a.name, f.name, mcls, mfield))
                continue
            b = api.classes.get(f.type.elem.cls)
            if b is None or not b.in_db:
                continue
            back = [g for g in b.fields if g.type == T.Ref(a.name)]
            if len(back) == 1:
                out.append(Relation(a.name, f.name, b.name, back[0].name))
    return out


class Relations:
    """Lookup of relations by the member side, used on create, set and destroy."""

    def __init__(self, api: Api) -> None:
        self.by_member: dict[str, list[Relation]] = {}
        for r in infer(api):
            self.by_member.setdefault(r.member_cls, []).append(r)

    def links(self, member_cls: str, record: dict[str, Any]) -> list[tuple[Relation, str]]:
        """The (relation, owner ref) pairs a member record takes part in."""
        out = []
        for r in self.by_member.get(member_cls, ()):
            owner = record.get(r.ref_field, NULL_REF)
            if owner and owner != NULL_REF:
                out.append((r, owner))
        return out
