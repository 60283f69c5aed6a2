"""The self-signed certificate and HTTPS listener, checked by a verifying client."""

from __future__ import annotations

import asyncio
import http.client
import os
import ssl
import stat
from pathlib import Path

import pytest

from openxapi.http import HttpServer, Request, Response, Router
from openxapi.http.tls import ensure_self_signed, server_context


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "sub" / "server.pem", directory / "sub" / "server.key"
    assert ensure_self_signed(cert, key, ["myhost", "localhost"], ["127.0.0.1", "::1"])
    return cert, key


def test_files_created_once_with_private_key_mode(cert_files: tuple[Path, Path]) -> None:
    cert, key = cert_files
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    before = cert.read_bytes()
    assert not ensure_self_signed(cert, key, ["other"], [])
    assert cert.read_bytes() == before


def _https_get(port: int, host: str, cafile: Path, strict: bool) -> tuple[int, bytes, str]:
    context = ssl.create_default_context(cafile=str(cafile))
    if strict:
        context.verify_flags |= ssl.VERIFY_X509_STRICT
    conn = http.client.HTTPSConnection(host, port, context=context, timeout=5)
    conn.request("POST", "/RPC2", b"<x/>")
    response = conn.getresponse()
    body = response.read()
    version = conn.sock.version() or ""
    conn.close()
    return response.status, body, version


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_https_verified_against_san(cert_files: tuple[Path, Path], host: str) -> None:
    cert, key = cert_files

    async def rpc(request: Request) -> Response:
        return Response(200, [("Content-Type", "text/xml")], request.transport.encode())

    router = Router()
    router.add("/", rpc)
    server = HttpServer(router)
    port = await server.start_tcp("127.0.0.1", 0, ssl=server_context(cert, key))
    try:
        for strict in (False, True):
            status, body, version = await asyncio.to_thread(_https_get, port, host, cert, strict)
            assert (status, body) == (200, b"https")
            assert version in ("TLSv1.2", "TLSv1.3")
    finally:
        await server.close()


async def test_https_rejects_names_not_in_certificate(cert_files: tuple[Path, Path]) -> None:
    cert, key = cert_files
    router = Router()
    server = HttpServer(router)
    port = await server.start_tcp("127.0.0.1", 0, ssl=server_context(cert, key))
    try:
        context = ssl.create_default_context(cafile=str(cert))
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="not-this-host"
            )
    finally:
        await server.close()


def test_context_needs_tls12_and_no_client_cert(cert_files: tuple[Path, Path]) -> None:
    context = server_context(*cert_files)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE
