"""``PUT /import`` and ``GET /export``: whole VMs as XVA streams over HTTP.

Both answer ``200`` with a ``task-id`` header before any data moves; what goes wrong later
is recorded on the task. An export holds the VM's ``export`` operation (so it cannot start
meanwhile) and succeeds as its last byte is handed to the connection; a client that goes
away fails it with CLIENT_ERROR. An import's task ends with the XML-RPC array of the new
VM refs once every disk is written; on any failure everything it made is removed. Neither
holds a whole disk in memory: chunks flow one or two MiB at a time, with backpressure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from openxapi.api.dispatch import Dispatcher
from openxapi.api.storage_access import Storage, storage_of
from openxapi.api.vm_domains import domains_of
from openxapi.api.vm_export import plan_export
from openxapi.api.vm_import import VmImport, import_xva
from openxapi.errors import ApiError
from openxapi.http.message import BodyStream, Request, Response, text_response
from openxapi.http.router import Router
from openxapi.server.http_access import HttpAccess, HttpCall, Refused, UploadBody, named_object
from openxapi.spec.model import NULL_REF
from openxapi.storage.driver import DiskReader
from openxapi.storage.xva_format import (
    COMPRESSIONS,
    ExportDisk,
    XvaReader,
    compression_available,
    xva_stream,
)

log = logging.getLogger("openxapi.transfer")

#: How long a failed import goes on reading the upload it no longer needs.
DISCARD_SECONDS = 10.0


def _copy_check(storage: Storage, vdi: str) -> Callable[[], None]:
    return lambda: storage.check_vdi(vdi, "copy")


def _flag(req: Request, key: str) -> bool:
    """The reference's reading of boolean query flags: exactly "true"."""
    return req.query.get(key, "") == "true"


class _Guarded:
    """A response stream whose clean-up runs exactly once when the connection is done
    with it, even if the connection never started reading it."""

    def __init__(
        self, body: AsyncGenerator[bytes, None], cleanup: Callable[[], Awaitable[None]]
    ) -> None:
        self._body = body
        self._cleanup = cleanup
        self._closed = False

    def __aiter__(self) -> _Guarded:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._body.__anext__()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._body.aclose()
        finally:
            await self._cleanup()


class XvaEndpoints:
    """The VM import and export handlers bound to one dispatcher."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.state = dispatcher.state
        self.access = HttpAccess(dispatcher)

    def install(self, router: Router) -> None:
        router.add("/import", self.import_vm, methods={"PUT"}, stream=True)
        router.add("/export", self.export_vm, methods={"GET"})

    @property
    def storage(self) -> Storage:
        return storage_of(self.state)

    def _finisher(self, call: HttpCall, why: str) -> Callable[[], Awaitable[None]]:
        """Clean-up shared by both endpoints: a task still pending fails with ``why``,
        the request's temporary session is closed."""
        ended = False

        async def finish() -> None:
            nonlocal ended
            if ended:
                return
            ended = True
            self.access.fail(call.task, ApiError("CLIENT_ERROR", why))
            self.access.end(call)
            await self.state.store.sync()

        return finish

    # ---- import --------------------------------------------------------------------------
    def _target_sr(self, req: Request) -> str:
        """The SR named by ``sr_id`` or ``sr_uuid``, else the pool's default SR."""
        st = self.state
        named = named_object(st, req, "SR", "sr_id", "sr_uuid")
        if named is not None:
            return named
        default = st.record("pool", st.pool_ref)["default_SR"]
        if default == NULL_REF or st.store.get("SR", default) is None:
            raise ApiError("DEFAULT_SR_NOT_FOUND", default)
        return str(default)

    async def import_vm(self, req: Request) -> Response:
        if req.path.rstrip("/") != "/import":
            return text_response(404, "not found")
        try:
            call = await self.access.begin(req, "put_import", "VM.import")
        except Refused as r:
            return r.response
        if "transfer-encoding" in req.headers:
            return self.access.refuse(call, 403, ApiError("IMPORT_ERROR_CANNOT_HANDLE_CHUNKED"))
        try:
            sr = self._target_sr(req)
        except ApiError as e:
            return self.access.refuse(call, 404 if e.code != "DEFAULT_SR_NOT_FOUND" else 500, e)
        if self.state.record("SR", sr)["content_type"] == "iso":
            return self.access.refuse(call, 400, ApiError("SR_OPERATION_NOT_SUPPORTED"))
        try:
            await self.storage.driver(sr)
        except ApiError as e:
            return self.access.refuse(call, 500, e)
        self.dispatcher.tasks.set_progress(call.ctx, 0.0)
        await self.state.store.sync()
        headers = [
            ("task-id", call.task),
            ("Content-Type", "application/octet-stream"),
            ("Connection", "close"),
        ]
        assert req.stream is not None
        finish = self._finisher(call, "the import ended before its upload was read")
        body = self._receive(
            call, sr, _flag(req, "restore"), _flag(req, "force"), req.stream, finish
        )
        return Response(200, headers, stream=_Guarded(body, finish))

    async def _receive(
        self,
        call: HttpCall,
        sr: str,
        restore: bool,
        force: bool,
        stream: BodyStream,
        finish: Callable[[], Awaitable[None]],
    ) -> AsyncGenerator[bytes, None]:
        """Runs once the 200 is sent: read the XVA, make the VM, write its disks; then
        ``finish`` ends the request's session."""
        st = self.state
        reader = XvaReader(UploadBody(stream))
        job = VmImport(st, call.ctx, sr, restore=restore, force=force)
        ok = False
        try:
            refs = await import_xva(job, reader, force)
            self.access.succeed(call, refs)
            ok = True
        except ApiError as e:
            log.info("import failed: %s", e.description())
            self.access.fail(call.task, e)
        except asyncio.CancelledError:
            self.access.fail(call.task, ApiError("IMPORT_ERROR", "the import was interrupted"))
            raise
        except Exception as e:
            log.exception("import failed")
            self.access.fail(call.task, ApiError("IMPORT_ERROR", f"{type(e).__name__}: {e}"))
        finally:
            try:
                await reader.close()
            finally:
                await finish()
        if not ok:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.discard_rest(), DISCARD_SECONDS)
        return
        yield b""  # an async generator that sends no body

    # ---- export --------------------------------------------------------------------------
    def _vm(self, req: Request) -> str:
        named = named_object(self.state, req, "VM", "ref", "uuid")
        if named is not None:
            return named
        raise ApiError("INTERNAL_ERROR", "Not enough info supplied to export")

    def _opener(self, vdi: str) -> Callable[[], Awaitable[DiskReader]]:
        async def open_disk() -> DiskReader:
            rec = self.state.record("VDI", vdi)
            drv = await self.storage.driver(rec["SR"])
            with self.storage.errors(rec["SR"], vdi):
                return await drv.open_reader(rec["location"])

        return open_disk

    async def export_vm(self, req: Request) -> Response:
        if req.path.rstrip("/") != "/export":
            return text_response(404, "not found")
        try:
            call = await self.access.begin(req, "get_export", "VM.export")
        except Refused as r:
            return r.response
        kind = COMPRESSIONS.get(req.query.get("use_compression", ""), "")
        if kind and not compression_available(kind):
            error = ApiError("INTERNAL_ERROR", f"{kind} compression is not available")
            return self.access.refuse(call, 500, error)
        preserve = _flag(req, "preserve_power_state")
        ctx = call.ctx
        storage = self.storage
        held = contextlib.AsyncExitStack()
        try:
            vm = self._vm(req)
            await held.enter_async_context(domains_of(self.state).operation(vm, "export", ctx))
            plan = plan_export(self.state, vm, preserve)
            disks = []
            for oid, vdi in plan.disks:
                rec = self.state.record("VDI", vdi)
                await storage.driver(rec["SR"])
                await held.enter_async_context(
                    storage.operation("VDI", vdi, "copy", ctx, _copy_check(storage, vdi))
                )
                disks.append(ExportDisk(oid, int(rec["virtual_size"]), self._opener(vdi)))
        except ApiError as e:
            await held.aclose()
            status = 400 if e.code == "INTERNAL_ERROR" else 500
            if e.code in ("HANDLE_INVALID", "UUID_INVALID"):
                status = 404
            return self.access.refuse(call, status, e)
        self.dispatcher.tasks.set_progress(ctx, 0.0)
        await self.state.store.sync()
        total = max(sum(d.size for d in disks), 1)

        def progress(done: int) -> None:
            storage.progress(ctx, min(done / total, 1.0) * 0.99)

        headers = [
            ("task-id", call.task),
            ("Content-Type", "application/octet-stream"),
            ("Content-Disposition", 'attachment; filename="export.xva"'),
        ]
        finish = self._finisher(call, "the client stopped reading the export")

        async def cleanup() -> None:
            try:
                await held.aclose()
            finally:
                await finish()

        body = self._send(call, xva_stream(plan.ova_xml, disks, kind, progress))
        return Response(200, headers, stream=_Guarded(body, cleanup))

    async def _send(
        self, call: HttpCall, stream: AsyncGenerator[bytes, None]
    ) -> AsyncGenerator[bytes, None]:
        """The XVA's bytes; the task succeeds as the last one is handed to the connection.
        A failure fails the task and breaks the connection, so the client cannot take a
        cut-short stream for a whole one."""
        try:
            async for piece in stream:
                yield piece
            self.access.succeed(call, "")
        except ApiError as e:
            self.access.fail(call.task, e)
            raise
        except Exception as e:
            log.exception("export failed")
            self.access.fail(call.task, ApiError("INTERNAL_ERROR", f"{type(e).__name__}: {e}"))
            raise
        finally:
            aclose: Any = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()


def install(router: Router, dispatcher: Dispatcher) -> None:
    """Route the VM import and export endpoints."""
    XvaEndpoints(dispatcher).install(router)
