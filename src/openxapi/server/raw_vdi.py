"""``PUT /import_raw_vdi`` and ``GET /export_raw_vdi``: a disk's contents over HTTP.

Formats ``raw`` (the default), ``vhd`` and ``qcow2``. Both endpoints answer ``200`` with a
``task-id`` header before any disk data moves; what goes wrong later is recorded on the
task, which ends in success once the last byte is written (export) or the new contents
are durable and in place (import). An import never leaves a partly written disk: the new
contents replace the old only once complete.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from openxapi.api.context import CallContext
from openxapi.api.dispatch import Dispatcher
from openxapi.api.handlers.vdi import create_vdi, delete_vdi
from openxapi.api.storage_access import Storage, storage_of
from openxapi.errors import ApiError
from openxapi.http.message import BodyStream, Request, Response
from openxapi.http.router import Router
from openxapi.server.http_access import HttpAccess, HttpCall, Refused, named_object
from openxapi.storage.driver import DiskReader
from openxapi.storage.errors import StorageError
from openxapi.storage.transfer import (
    CONTENT_TYPES,
    QEMU_FORMATS,
    export_image,
    export_raw,
    import_image,
    import_raw,
)

log = logging.getLogger("openxapi.transfer")


class _Progress:
    """Task progress as bytes move; raises TASK_CANCELLED once the task is cancelled."""

    def __init__(self, storage: Storage, ctx: CallContext, total: int) -> None:
        self.storage = storage
        self.ctx = ctx
        self.total = max(total, 1)

    def __call__(self, done: int) -> None:
        self.storage.progress(self.ctx, min(done / self.total, 1.0) * 0.99)


class _Truncated(Exception):
    """The client closed the connection before the body's declared end."""


class _Body:
    """The request body as a byte source that notices an upload cut short."""

    def __init__(self, stream: BodyStream) -> None:
        self.stream = stream
        self.received = 0

    async def read(self, n: int = 65536) -> bytes:
        data = await self.stream.read(n)
        self.received += len(data)
        if not data and self.stream.truncated:
            raise _Truncated()
        return data


class RawVdiEndpoints:
    """The two raw-disk transfer handlers bound to one dispatcher."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.state = dispatcher.state
        self.access = HttpAccess(dispatcher)

    def install(self, router: Router) -> None:
        router.add("/import_raw_vdi", self.import_raw_vdi, methods={"PUT"}, stream=True)
        router.add("/export_raw_vdi", self.export_raw_vdi, methods={"GET"})

    @property
    def storage(self) -> Storage:
        return storage_of(self.state)

    def _vdi(self, text: str) -> str:
        """A VDI named by ref or uuid, or HANDLE_INVALID."""
        st = self.state
        if st.store.get("VDI", text) is not None:
            return text
        ref = st.store.ref_of_uuid("VDI", text)
        if ref is None:
            raise ApiError("HANDLE_INVALID", "VDI", text)
        return ref

    def _sr(self, req: Request) -> str | None:
        return named_object(self.state, req, "SR", "sr_id", "sr_uuid")

    @staticmethod
    def _format(req: Request) -> str:
        fmt = req.query.get("format", "raw") or "raw"
        if fmt not in QEMU_FORMATS:
            raise ApiError("INTERNAL_ERROR", f"Unknown format {fmt}")
        return fmt

    # ---- import ------------------------------------------------------------------------
    async def import_raw_vdi(self, req: Request) -> Response:
        try:
            call = await self.access.begin(req, "put_import_raw_vdi", "VDI.import")
        except Refused as r:
            return r.response
        try:
            fmt = self._format(req)
        except ApiError as e:
            return self.access.refuse(call, 404, e)
        if "transfer-encoding" in req.headers:
            te = req.headers["transfer-encoding"]
            return self.access.refuse(
                call, 404, ApiError("INTERNAL_ERROR", f"Cannot handle encoding: {te}")
            )
        if "chunked" in req.query:
            what = "Cannot handle chunked VHD" if fmt != "raw" else "Cannot handle chunked raw"
            return self.access.refuse(call, 404, ApiError("INTERNAL_ERROR", what))
        length_text = req.headers.get("content-length", "")
        length = int(length_text) if length_text.isdigit() else None
        created = "vdi" not in req.query
        try:
            vdi = await self._import_target(req, call, fmt, length)
        except ApiError as e:
            status = 400 if e.code == "INTERNAL_ERROR" else 404
            return self.access.refuse(call, status, e)
        # As the reference: the head goes out before the body is read, and the reply ends
        # (the connection closes) once the import has ended, so a client that reads the
        # reply to its end never closes while its upload is still being consumed.
        headers = [
            ("task-id", call.task),
            ("Content-Type", "application/octet-stream"),
            ("Connection", "close"),
        ]
        assert req.stream is not None
        body = self._receive(call, vdi, fmt, req.stream, length, created)
        return Response(200, headers, stream=body)

    async def _import_target(
        self, req: Request, call: HttpCall, fmt: str, length: int | None
    ) -> str:
        """The VDI to write (made now when only an SR is named), after the checks."""
        storage = self.storage
        text = req.query.get("vdi", "")
        if text:
            vdi = self._vdi(text)
            rec = self.state.record("VDI", vdi)
            if rec["read_only"]:
                raise ApiError("VDI_READONLY", vdi)
            for vbd in rec["VBDs"]:
                brec = self.state.store.get("VBD", vbd)
                if brec is not None and brec["currently_attached"]:
                    raise ApiError("VDI_IN_USE", vdi, "import")
            for task, op in rec["current_operations"].items():
                raise ApiError("OTHER_OPERATION_IN_PROGRESS", "VDI", vdi, op, task)
            await storage.driver(rec["SR"])
            if "VDI_CREATE" not in storage.features(rec["SR"]):
                raise ApiError("SR_OPERATION_NOT_SUPPORTED", rec["SR"])
            return vdi
        sr = self._sr(req)
        if sr is not None and fmt == "raw" and length is not None:
            return await create_vdi(
                storage,
                call.ctx,
                sr,
                length,
                {
                    "name_label": "Imported VDI",
                    "name_description": "",
                    "type": "user",
                    "sharable": False,
                    "read_only": False,
                },
            )
        if sr is not None and fmt != "raw":
            raise ApiError(
                "INTERNAL_ERROR", f"Importing a {fmt} image directly into an SR is not supported"
            )
        raise ApiError("INTERNAL_ERROR", "Not enough info supplied to import")

    async def _receive(
        self,
        call: HttpCall,
        vdi: str,
        fmt: str,
        stream: BodyStream,
        length: int | None,
        created: bool,
    ) -> AsyncIterator[bytes]:
        """Runs once the 200 is sent: write the body into the disk, then end the task. A
        disk made for this import is destroyed again if the import fails."""
        storage = self.storage
        st = self.state
        ctx = call.ctx
        body = _Body(stream)
        ok = False
        try:
            rec = st.record("VDI", vdi)
            sr = rec["SR"]
            drv = await storage.driver(sr)
            progress = _Progress(storage, ctx, length or rec["virtual_size"])
            with storage.errors(sr, vdi):
                writer = await drv.open_writer(rec["location"])
                try:
                    if fmt == "raw":
                        await import_raw(body, writer, progress)
                    else:
                        await import_image(body, fmt, writer, drv.scratch_dir, progress)
                    info = await writer.commit()
                except BaseException:
                    await writer.abort()
                    raise
            if st.store.get("VDI", vdi) is not None:
                storage.put("VDI", vdi, physical_utilisation=info.physical_utilisation)
                await storage.refresh_capacity(sr, drv)
            self.access.succeed(call, vdi)
            ok = True
        except _Truncated:
            log.warning("upload into %s ended early: %d of %s bytes", vdi, body.received, length)
            self.access.fail(call.task, ApiError("IMPORT_ERROR_PREMATURE_EOF"))
        except ApiError as e:
            self.access.fail(call.task, e)
        except StorageError as e:
            self.access.fail(call.task, ApiError("VDI_IO_ERROR", str(e)))
        except Exception as e:
            log.exception("import into %s failed", vdi)
            self.access.fail(call.task, ApiError("INTERNAL_ERROR", f"{type(e).__name__}: {e}"))
        finally:
            if created and not ok and st.store.get("VDI", vdi) is not None:
                try:
                    await delete_vdi(storage, CallContext(), vdi)
                except ApiError as e:
                    log.warning("could not remove the disk of a failed import: %s", e)
            self.access.end(call)
            await st.store.sync()
        return
        yield b""  # an async generator that sends no body

    # ---- export ------------------------------------------------------------------------
    async def export_raw_vdi(self, req: Request) -> Response:
        try:
            call = await self.access.begin(req, "get_export_raw_vdi", "VDI.export")
        except Refused as r:
            return r.response
        storage = self.storage
        try:
            fmt = self._format(req)
        except ApiError as e:
            return self.access.refuse(call, 404, e)
        text = req.query.get("vdi", "")
        if not text:
            return self.access.refuse(
                call, 400, ApiError("INTERNAL_ERROR", "Not enough info supplied to export")
            )
        reader: DiskReader | None = None
        try:
            vdi = self._vdi(text)
            rec = self.state.record("VDI", vdi)
            storage.check_vdi(vdi, "copy")
            drv = await storage.driver(rec["SR"])
            with storage.errors(rec["SR"], vdi):
                reader = await drv.open_reader(rec["location"])
                progress = _Progress(storage, call.ctx, reader.size)
                if fmt == "raw":
                    body, size = export_raw(reader, progress), reader.size
                else:
                    body, size = await export_image(reader, fmt, drv.scratch_dir)
        except ApiError as e:
            if reader is not None:
                await reader.close()
            return self.access.refuse(call, 404 if e.code == "HANDLE_INVALID" else 500, e)
        headers = [
            ("task-id", call.task),
            ("Content-Type", CONTENT_TYPES[fmt]),
            ("Content-Disposition", f'attachment; filename="{rec["uuid"]}.{fmt}"'),
            ("Content-Length", str(size)),
        ]
        return Response(200, headers, stream=self._send(call, vdi, reader, body, size))

    async def _send(
        self,
        call: HttpCall,
        vdi: str,
        reader: DiskReader,
        body: AsyncIterator[bytes],
        size: int,
    ) -> AsyncIterator[bytes]:
        """The disk's bytes; the task succeeds as the last one is handed to the socket."""
        storage = self.storage
        sent = 0
        done = False
        try:
            async with storage.operation("VDI", vdi, "copy", call.ctx):
                async for chunk in body:
                    sent += len(chunk)
                    yield chunk
                if sent == size:
                    done = True
                    self.access.succeed(call, "")
        except ApiError as e:
            self.access.fail(call.task, e)
        except Exception as e:
            log.exception("export of %s failed", vdi)
            self.access.fail(call.task, ApiError("INTERNAL_ERROR", f"{type(e).__name__}: {e}"))
        finally:
            if not done:
                self.access.fail(
                    call.task,
                    ApiError("CLIENT_ERROR", f"the transfer stopped after {sent} of {size} bytes"),
                )
            await reader.close()
            aclose: Any = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()
            self.access.end(call)
            await self.state.store.sync()


def install(router: Router, dispatcher: Dispatcher) -> None:
    """Route the raw-disk transfer endpoints."""
    RawVdiEndpoints(dispatcher).install(router)
