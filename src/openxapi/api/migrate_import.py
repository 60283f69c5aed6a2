"""The receiving end of a cross-pool migration's transfer: an XVA import steered by the
sender's maps.

Each VDI is made in the SR its ``maps_to`` names and each VIF joins the network its
``maps_to`` names (no network is created or matched by name); disks the hypervisor
copies itself are made empty and are not expected in the stream. What was made is kept
until the migration ends, so a migration that fails later can remove all of it.
"""

from __future__ import annotations

from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.handlers.vm_clone import undo_made
from openxapi.api.migrate_export import MAPS_TO, MIRROR_KEY
from openxapi.api.state import ServerState
from openxapi.api.vm_import import ImportedDisk, VmImport
from openxapi.errors import ApiError
from openxapi.storage.xva_format import OvaHeader, OvaObject

#: state.extras key: VM ref on this host -> what its migration's import made.
INCOMING = "migrations_incoming"


def _without(snap: dict[str, Any], *keys: str) -> dict[str, Any]:
    other = {k: v for k, v in snap.get("other_config", {}).items() if k not in keys}
    return {**snap, "other_config": other}


class MigrationImport(VmImport):
    """A VmImport whose disks and networks are the ones the sender mapped them to."""

    def __init__(self, state: ServerState, ctx: CallContext, *, restore: bool) -> None:
        super().__init__(state, ctx, "", restore=restore, force=False)
        self.mirrored: set[str] = set()
        #: uuid of each VM at the sender -> the VM made for it here
        self.by_uuid: dict[str, str] = {}

    async def _sr(self, obj: OvaObject) -> None:
        """No single target SR: each VDI names its own."""

    async def _vm(self, obj: OvaObject) -> None:
        await super()._vm(obj)
        self.by_uuid[str(obj.snapshot.get("uuid", ""))] = self.table[obj.id]

    async def _vdi(self, obj: OvaObject) -> None:
        snap = obj.snapshot
        other = snap.get("other_config", {})
        target = other.get(MAPS_TO, "") if isinstance(other, dict) else ""
        original_sr = self._find(str(snap.get("SR", ""))).snapshot
        if original_sr.get("content_type") == "iso":
            await super()._vdi(obj)
            return
        sr = self.state.store.get("SR", str(target))
        if sr is None or sr["content_type"] == "iso":
            raise ApiError("HANDLE_INVALID", "SR", str(target))
        if other.get(MIRROR_KEY) == "true":
            self.mirrored.add(obj.id)
        self.sr = str(target)
        await super()._vdi(OvaObject(obj.cls, obj.id, _without(snap, MAPS_TO, MIRROR_KEY)))

    async def _network(self, obj: OvaObject) -> None:
        """Networks are not matched or made: every VIF names its destination network."""

    async def _vif(self, obj: OvaObject) -> None:
        snap = obj.snapshot
        other = snap.get("other_config", {})
        network = str(other.get(MAPS_TO, "")) if isinstance(other, dict) else ""
        if self.state.store.get("network", network) is None:
            raise ApiError("HANDLE_INVALID", "network", network)
        key = f"{MAPS_TO}:{network}"
        self.table[key] = network
        await super()._vif(OvaObject(obj.cls, obj.id, {**_without(snap, MAPS_TO), "network": key}))

    def _streamed(self, header: OvaHeader) -> list[ImportedDisk]:
        return [d for d in super()._streamed(header) if d.id not in self.mirrored]


def keep_incoming(state: ServerState, vm: str, made: list[tuple[str, str]]) -> None:
    """Remember what a migration's import made, for :func:`drop_incoming`."""
    state.extras.setdefault(INCOMING, {})[vm] = list(made)


def forget_incoming(state: ServerState, vm: str) -> None:
    """The migration of ``vm`` succeeded: what it made stays."""
    state.extras.get(INCOMING, {}).pop(vm, None)


async def drop_incoming(state: ServerState, vm: str) -> bool:
    """Remove everything the import of a failed migration made; False if none is known."""
    made = state.extras.get(INCOMING, {}).pop(vm, None)
    if made is None:
        return False
    await undo_made(state, made)
    await state.store.sync()
    return True
