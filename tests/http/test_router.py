"""Longest-prefix routing with per-method routes, as xapi's handler table behaves."""

from __future__ import annotations

import pytest

from openxapi.http import Request, Response, Router


def _handler(name: str):  # type: ignore[no-untyped-def]
    async def handle(request: Request) -> Response:
        return Response(200, body=name.encode())

    handle.__name__ = name
    return handle


@pytest.fixture
def router() -> Router:
    r = Router()
    r.add("/", _handler("xmlrpc"), methods={"POST", "OPTIONS"})
    r.add("/jsonrpc", _handler("jsonrpc"), methods={"POST", "OPTIONS"})
    r.add("/import_raw_vdi", _handler("import"), methods={"PUT"}, stream=True)
    r.add("/export_raw_vdi", _handler("export"), methods={"GET", "HEAD"})
    r.add("/console", _handler("console"), methods={"CONNECT"})
    return r


def _name(router: Router, method: str, path: str) -> str | None:
    route = router.resolve(method, path)
    return None if route is None else route.handler.__name__


def test_longest_prefix_wins(router: Router) -> None:
    assert _name(router, "POST", "/") == "xmlrpc"
    assert _name(router, "POST", "/RPC2") == "xmlrpc"
    assert _name(router, "POST", "/xmlrpc") == "xmlrpc"
    assert _name(router, "POST", "/jsonrpc") == "jsonrpc"
    assert _name(router, "PUT", "/import_raw_vdi/") == "import"
    assert _name(router, "PUT", "/import_raw_vdi") == "import"
    assert _name(router, "GET", "/export_raw_vdi/") == "export"
    assert _name(router, "CONNECT", "/console") == "console"


def test_method_selects_among_prefixes(router: Router) -> None:
    # PUT /jsonrpc has no PUT route at any matching prefix.
    assert router.resolve("PUT", "/jsonrpc") is None
    assert router.allowed_methods("/jsonrpc") == {"POST", "OPTIONS"}
    # A POST to the import path falls back to the catch-all XML-RPC route, as in xapi.
    assert _name(router, "POST", "/import_raw_vdi/") == "xmlrpc"
    assert router.resolve("GET", "/") is None


def test_no_prefix_matches() -> None:
    r = Router()
    r.add("/jsonrpc", _handler("jsonrpc"))
    assert r.resolve("POST", "/other") is None
    assert r.allowed_methods("/other") is None
    assert _name(r, "DELETE", "/jsonrpc") == "jsonrpc"


def test_stream_flag_kept(router: Router) -> None:
    route = router.resolve("PUT", "/import_raw_vdi/")
    assert route is not None and route.stream


def test_duplicate_route_refused(router: Router) -> None:
    with pytest.raises(ValueError):
        router.add("/jsonrpc", _handler("again"), methods={"POST"})
    router.add("/jsonrpc", _handler("getter"), methods={"GET"})
    assert _name(router, "GET", "/jsonrpc") == "getter"
    assert _name(router, "POST", "/jsonrpc") == "jsonrpc"
