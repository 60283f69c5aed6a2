"""The RPC endpoints: envelopes, CORS preflight, parse errors (core-api.md §1.1-§1.5)."""

from __future__ import annotations

import xmlrpc.client

import orjson

from openxapi.http.message import Request
from openxapi.http.router import Router
from openxapi.server.rpc import RpcEndpoints
from tests.api.world import ROOT_PASSWORD, World


def _xml(name: str, *params: object) -> bytes:
    return xmlrpc.client.dumps(params, name, allow_none=True).encode()


async def _post(world: World, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    ep = RpcEndpoints(world.dispatcher)
    handler = ep.jsonrpc if path == "/jsonrpc" else ep.xmlrpc
    resp = await handler(Request("POST", path, body=body, peer="127.0.0.1"))
    return resp.status, dict(resp.headers), resp.body


async def test_xmlrpc_login_and_call(world: World) -> None:
    status, headers, body = await _post(
        world, "/", _xml("session.login_with_password", "root", ROOT_PASSWORD)
    )
    assert status == 200 and headers["Content-Type"] == "text/xml"
    assert headers["Access-Control-Allow-Origin"] == "*"
    (reply,), _ = xmlrpc.client.loads(body)
    assert reply["Status"] == "Success"
    session = reply["Value"]
    _, _, body = await _post(world, "/RPC2", _xml("pool.get_all", session))
    (reply,), _ = xmlrpc.client.loads(body)
    assert reply == {"Status": "Success", "Value": [world.state.pool_ref]}


async def test_xmlrpc_failure_is_a_struct_not_a_fault(world: World) -> None:
    status, _, body = await _post(world, "/json", _xml("VM.get_all", "bad"))
    assert status == 200
    (reply,), _ = xmlrpc.client.loads(body)
    assert reply == {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", "bad"]}


async def test_xmlrpc_list_methods_is_bare(world: World) -> None:
    _, _, body = await _post(world, "/", _xml("system.listMethods"))
    (names,), _ = xmlrpc.client.loads(body)
    assert isinstance(names, list) and "VM.get_all" in names


async def test_unparseable_xml_is_500(world: World) -> None:
    status, headers, body = await _post(world, "/", b"<methodCall><methodName>x")
    assert status == 500
    assert headers["Content-Type"] == "text/html"
    assert b"Parse_error" in body


async def test_jsonrpc_v2(world: World) -> None:
    req = {
        "jsonrpc": "2.0",
        "method": "session.login_with_password",
        "params": ["root", ROOT_PASSWORD],
        "id": 7,
    }
    status, headers, body = await _post(world, "/jsonrpc", orjson.dumps(req))
    assert status == 200 and headers["Content-Type"] == "application/json"
    doc = orjson.loads(body)
    assert doc["id"] == 7 and doc["result"].startswith("OpaqueRef:")
    req = {"jsonrpc": "2.0", "method": "VM.get_all", "params": ["bad"], "id": "x"}
    doc = orjson.loads((await _post(world, "/jsonrpc", orjson.dumps(req)))[2])
    assert doc == {
        "jsonrpc": "2.0",
        "error": {"code": 1, "message": "SESSION_INVALID", "data": ["bad"]},
        "id": "x",
    }


async def test_jsonrpc_v1(world: World) -> None:
    req = {"method": "VM.get_all", "params": ["bad"], "id": 1}
    doc = orjson.loads((await _post(world, "/jsonrpc", orjson.dumps(req)))[2])
    assert doc == {"result": None, "error": ["SESSION_INVALID", "bad"], "id": 1}


async def test_jsonrpc_records_use_the_json_codec(world: World) -> None:
    req = {
        "jsonrpc": "2.0",
        "method": "host.get_record",
        "params": [world.root, world.state.host_ref],
        "id": 1,
    }
    doc = orjson.loads((await _post(world, "/jsonrpc", orjson.dumps(req)))[2])
    assert doc["result"]["uuid"] == world.store.get("host", world.state.host_ref)["uuid"]  # type: ignore[index]


async def test_unparseable_json_is_500(world: World) -> None:
    status, _, body = await _post(world, "/jsonrpc", b"{nope")
    assert status == 500 and b"Jsonrpc.Parse_error" in body


async def test_cors_preflight(world: World) -> None:
    ep = RpcEndpoints(world.dispatcher)
    req = Request("OPTIONS", "/jsonrpc", headers={"access-control-request-headers": "content-type"})
    resp = await ep.jsonrpc(req)
    assert resp.status == 200 and resp.body == b""
    headers = dict(resp.headers)
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Access-Control-Allow-Methods"] == "POST, OPTIONS"
    assert headers["Access-Control-Allow-Headers"] == "content-type"
    assert headers["Access-Control-Max-Age"] == "86400"


def test_routes() -> None:
    router = Router()
    RpcEndpoints(None).install(router)  # type: ignore[arg-type]
    for path in ("/", "/RPC2", "/xmlrpc", "/json", "/jsonrpc"):
        route = router.resolve("POST", path)
        assert route is not None, path
        assert router.resolve("OPTIONS", path) is not None
