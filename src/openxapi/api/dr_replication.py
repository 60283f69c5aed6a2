"""Database replication to metadata VDIs, the reference's DR redo logs.

While replication to a VDI is on, the VDI is attached to the control domain (a VBD of
dom0, as the reference plugs it) and holds a copy of the whole store, rewritten shortly
after every commit (changes are gathered for :data:`FLUSH_DELAY` seconds, or longer for a
database that takes long to copy, so a burst of writes costs one copy).
``VDI.metadata_latest`` says whether the copy is current. At most :data:`MAX_REPLICAS`
VDIs are replicated to at once (NO_MORE_REDO_LOGS_ALLOWED).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from openxapi.api.dr_vdi import write_copy
from openxapi.api.state import ServerState
from openxapi.api.storage_access import storage_of
from openxapi.db import image
from openxapi.errors import ApiError
from openxapi.spec.model import NULL_REF

log = logging.getLogger("openxapi.dr")

MAX_REPLICAS = 8
FLUSH_DELAY = 0.5
#: The size the reference gives a new metadata VDI (about 4 GB less room for a statefile).
METADATA_VDI_SIZE = (4_000_000_000 // (4 << 20) - 2) * (4 << 20)


@dataclass(slots=True)
class Replica:
    vdi: str
    vbd: str
    written: int = -1  # the generation of the copy on the disk


def control_domain(state: ServerState) -> str:
    """This host's control domain (the VM the metadata VBDs belong to)."""
    host = state.store.get("host", state.host_ref)
    dom0 = host["control_domain"] if host is not None else NULL_REF
    if dom0 != NULL_REF and state.store.get("VM", dom0) is not None:
        return str(dom0)
    for ref, rec in state.store.table("VM").items():
        if rec["is_control_domain"]:
            return ref
    raise ApiError("INTERNAL_ERROR", "this host has no control domain")


class Replication:
    """The replicated VDIs of one server and the task that keeps their copies current."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.replicas: dict[str, Replica] = {}
        self._dirty = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._unsubscribe = state.store.on_commit(self._committed)

    def _committed(self, generation: int) -> None:
        if self.replicas:
            self._dirty.set()

    # ---- turning replication on and off ----------------------------------------------------
    async def enable(self, vdi: str) -> None:
        """Attach ``vdi`` to dom0 and write the first copy; CANNOT_ENABLE_REDO_LOG when the
        copy cannot be written (nothing is left attached)."""
        if vdi in self.replicas:
            return
        if len(self.replicas) >= MAX_REPLICAS:
            raise ApiError("NO_MORE_REDO_LOGS_ALLOWED")
        st = self.state
        storage = storage_of(st)
        await destroy_all_vbds(st, vdi)
        from openxapi.api.handlers.vbd import create_vbd

        vbd = create_vbd(
            storage,
            {
                "VM": control_domain(st),
                "VDI": vdi,
                "device": "",
                "userdevice": "autodetect",
                "bootable": False,
                "mode": "RW",
                "type": "Disk",
                "unpluggable": True,
                "empty": False,
                "other_config": {},
                "currently_attached": False,
                "qos_algorithm_type": "",
                "qos_algorithm_params": {},
            },
        )
        storage.put("VBD", vbd, currently_attached=True)
        storage.refresh_vdi(vdi)
        replica = Replica(vdi, vbd)
        try:
            await st.store.sync()
            await self._write(replica, image.take(st.store))
        except (ApiError, OSError, ValueError) as e:
            storage.destroy_vbd_record(vbd)
            await st.store.sync()
            reason = " ".join(e.description()) if isinstance(e, ApiError) else str(e)
            raise ApiError("CANNOT_ENABLE_REDO_LOG", reason) from None
        self.replicas[vdi] = replica
        self._set_latest(vdi, True)
        await st.store.sync()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(
                self._run(), name="openxapi-dr-replication"
            )

    async def disable(self, vdi: str) -> None:
        """Stop replicating to ``vdi``: its dom0 VBD goes, metadata_latest becomes false."""
        replica = self.replicas.pop(vdi, None)
        if replica is None:
            return
        st = self.state
        if st.store.get("VBD", replica.vbd) is not None:
            storage_of(st).destroy_vbd_record(replica.vbd)
        self._set_latest(vdi, False)
        await st.store.sync()
        if not self.replicas and self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None

    async def close(self) -> None:
        """At server stop: bring every copy up to date, then stop."""
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        try:
            await self.flush()
        except Exception:
            log.exception("the last database copy could not be written")
        self._unsubscribe()

    # ---- keeping copies current -------------------------------------------------------------
    def _set_latest(self, vdi: str, value: bool) -> None:
        rec = self.state.store.get("VDI", vdi)
        if rec is not None and rec["metadata_latest"] != value:
            self.state.store.update("VDI", vdi, {"metadata_latest": value})

    async def _write(self, replica: Replica, snap: image.Snapshot) -> None:
        data = await asyncio.to_thread(image.dump, snap)
        await write_copy(storage_of(self.state), replica.vdi, snap.generation, data)
        replica.written = snap.generation

    async def flush(self) -> None:
        """Write the current store to every replica whose copy is older."""
        st = self.state
        stale = [r for r in self.replicas.values() if r.written < st.store.committed]
        if not stale:
            return
        snap = image.take(st.store)
        data = await asyncio.to_thread(image.dump, snap)
        for replica in stale:
            if self.replicas.get(replica.vdi) is not replica:
                continue
            if st.store.get("VDI", replica.vdi) is None:  # the VDI went: stop
                self.replicas.pop(replica.vdi, None)
                continue
            try:
                await write_copy(storage_of(st), replica.vdi, snap.generation, data)
            except (ApiError, OSError, ValueError) as e:
                log.error("database replication to VDI %s failed: %s", replica.vdi, e)
                self._set_latest(replica.vdi, False)
                continue
            replica.written = snap.generation
            self._set_latest(replica.vdi, True)
        await st.store.sync()

    async def _run(self) -> None:
        pause = FLUSH_DELAY
        loop = asyncio.get_running_loop()
        while self.replicas:
            await self._dirty.wait()
            await asyncio.sleep(pause)
            self._dirty.clear()
            started = loop.time()
            try:
                await self.flush()
            except Exception:
                log.exception("database replication failed")
            # A large database is copied less often: copying takes at most a fifth of the time.
            pause = max(FLUSH_DELAY, 4 * (loop.time() - started))


async def destroy_all_vbds(state: ServerState, vdi: str) -> None:
    """Remove the VDI's VBDs before dom0 takes it; a disk in use by a running VM refuses."""
    storage = storage_of(state)
    rec = state.record("VDI", vdi)
    for vbd in list(rec["VBDs"]):
        vrec = state.store.get("VBD", vbd)
        if vrec is None:
            continue
        owner = state.store.get("VM", vrec["VM"])
        if vrec["currently_attached"] and owner is not None and not owner["is_control_domain"]:
            raise ApiError("VDI_IN_USE", vdi, "enable_database_replication")
        storage.destroy_vbd_record(vbd)
    await state.store.sync()


def replication_of(state: ServerState) -> Replication:
    r = state.extras.get("dr_replication")
    if not isinstance(r, Replication):
        r = Replication(state)
        state.extras["dr_replication"] = r
    return r


def replicated(state: ServerState) -> dict[str, Replica]:
    """The replicas of a server, without starting replication."""
    r = state.extras.get("dr_replication")
    return r.replicas if isinstance(r, Replication) else {}


async def stop_replication(state: ServerState) -> None:
    """At server stop: final copies, then no more writes."""
    r = state.extras.get("dr_replication")
    if isinstance(r, Replication):
        await r.close()


async def resume_replication(state: ServerState) -> None:
    """At server start (SRs attached): replicate again to this pool's metadata VDIs that
    dom0 still holds, as the reference re-enables replication when their SR is plugged."""
    dom0 = control_domain(state)
    for vdi, rec in list(state.store.table("VDI").items()):
        if rec["type"] != "metadata" or rec["metadata_of_pool"] != state.pool_ref:
            continue
        held = any(
            (v := state.store.get("VBD", vbd)) is not None and v["VM"] == dom0
            for vbd in rec["VBDs"]
        )
        if not held:
            continue
        try:
            await replication_of(state).enable(vdi)
        except ApiError as e:
            log.warning("database replication to VDI %s not resumed: %s", vdi, e.description())
