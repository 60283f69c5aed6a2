"""Xen Orchestra's npm ``xen-api`` client (4.7.6) against a real ``openxapi serve``.

The client is driven by ``node/xapi_session.mjs``; what it reports is checked against what
the Python SDK reads over XML-RPC, field by field and typed by the API description, so a
wire-format slip (an int that is not a number over JSON-RPC, a dropped empty string over
XML-RPC, a wrapped ``system.listMethods``) shows up as a named field.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xmlrpc.client
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import XenAPI  # type: ignore[import-untyped]

from openxapi.spec import types as T
from openxapi.spec.model import Api, load
from tests.serverproc import ROOT_PASSWORD, ServerProcess

pytestmark = [
    pytest.mark.e2e,
    # The shared ServerProcess leaves its output pipe for the garbage collector on stop().
    pytest.mark.filterwarnings("ignore:unclosed file <_io.TextIOWrapper:ResourceWarning"),
]

NODE_DIR = Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "xapi_session.mjs"
GIB = 1024**3

# Transports as the client names them, and the codec each ends up on.
JSON = ("auto", "json")
XML = ("xml-rpc", "xml")


@cache
def api() -> Api:
    return load()


def find_node() -> str:
    """The node binary. The project's test command installs node and the npm module, so their
    absence fails the calling test with what to do about it (a fixture would only error)."""
    exe = shutil.which("node")
    if exe is None:
        pytest.fail("`node` (v18 or later) is not on PATH; install Node.js to run these tests")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    if major < 18:
        pytest.fail(f"node {version.stdout.strip()} is too old; xen-api needs v18 or later")
    if not (NODE_DIR / "node_modules" / "xen-api" / "package.json").is_file():
        pytest.fail(f"npm module xen-api is missing: run `npm install` in {NODE_DIR}")
    return exe


class PySide:
    """The Python SDK's view of the server, over XML-RPC."""

    def __init__(self, url: str) -> None:
        self.session = XenAPI.Session(url)
        self.session.xenapi.login_with_password("root", ROOT_PASSWORD, "1.0", "e2e-npm")
        self.x = self.session.xenapi

    def pool(self) -> tuple[str, dict[str, Any]]:
        ((ref, rec),) = self.x.pool.get_all_records().items()
        return ref, rec


@pytest.fixture(scope="module")
def py(server: ServerProcess) -> Iterator[PySide]:
    side = PySide(server.http_url)
    yield side
    side.x.session.logout()
    side.session("close")()


def _vm_args(label: str) -> dict[str, Any]:
    return {
        "name_label": label,
        "name_description": "",
        "user_version": "1",
        "is_a_template": False,
        "affinity": "OpaqueRef:NULL",
        "memory_static_max": str(4 * GIB),
        "memory_dynamic_max": str(4 * GIB),
        "memory_dynamic_min": str(GIB),
        "memory_static_min": str(GIB),
        "VCPUs_params": {},
        "VCPUs_max": "2",
        "VCPUs_at_startup": "1",
        "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart",
        "actions_after_crash": "restart",
        "PV_bootloader": "",
        "PV_kernel": "",
        "PV_ramdisk": "",
        "PV_args": "",
        "PV_bootloader_args": "",
        "PV_legacy_args": "",
        "HVM_boot_policy": "BIOS order",
        "HVM_boot_params": {"order": "cd"},
        "platform": {},
        "PCI_bus": "",
        "other_config": {"made-by": "python"},
        "recommendations": "",
    }


@pytest.fixture(scope="module")
def vm(py: PySide) -> str:
    """A VM made from Python, with plenty of empty strings and a > 2^31 int."""
    return str(py.x.VM.create(_vm_args("py-made")))


def run_client(
    node: str,
    url: str,
    transport: str,
    ops: list[tuple[str, list[Any]]],
    *,
    strict_tls: bool = False,
) -> dict[str, Any]:
    """Run the node driver; returns its report (connection facts plus one result per op)."""
    program = {
        "user": "root",
        "password": ROOT_PASSWORD,
        "ops": [{"op": op, "args": args} for op, args in ops],
    }
    argv = [node, str(SCRIPT), url, transport]
    if strict_tls:
        argv.append("strict-tls")
    proc = subprocess.run(
        argv, input=json.dumps(program), capture_output=True, text=True, timeout=60, cwd=NODE_DIR
    )
    assert proc.returncode == 0, f"node exited {proc.returncode}:\n{proc.stderr}"
    report: dict[str, Any] = json.loads(proc.stdout)
    if strict_tls:
        return report
    assert report["connected"], f"client could not connect: {report.get('error')}\n{proc.stderr}"
    assert len(report["results"]) == len(ops)
    return report


def ok(result: dict[str, Any]) -> Any:
    assert "error" not in result, f"client got an error: {result['error']}"
    return result["ok"]


def err(result: dict[str, Any]) -> dict[str, Any]:
    assert "error" in result, f"expected an error, client got {result.get('ok')!r}"
    e: dict[str, Any] = result["error"]
    assert e["name"] == "XapiError", e
    return e


# --------------------------------------------------------------------------------------------
# Typed comparison of what node saw with what Python saw


def _compact_iso(iso: str) -> str:
    """``1970-01-01T00:00:00.000Z`` → xapi's ``19700101T00:00:00Z``."""
    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d:\d\d:\d\d)(?:\.\d+)?Z", iso)
    assert m is not None, iso
    return f"{m[1]}{m[2]}{m[3]}T{m[4]}Z"


def mismatches(js: Any, pyv: Any, t: T.Type, codec: str, path: str = "") -> list[str]:
    """Where node's value differs from the SDK's, given the API type and the codec used."""
    bad = [f"{path}: node {js!r} vs python {pyv!r} ({t}, {codec})"]
    if isinstance(t, T.Option):
        return mismatches(js, pyv, t.inner, codec, path)
    if isinstance(t, T.Record):
        return _record_mismatches(js, pyv, t.cls, codec, path)
    if isinstance(t, T.Set):
        if not isinstance(js, list) or len(js) != len(pyv):
            return bad
        return [
            m
            for i, (a, b) in enumerate(zip(js, pyv, strict=True))
            for m in mismatches(a, b, t.elem, codec, f"{path}[{i}]")
        ]
    if isinstance(t, T.Map):
        if not isinstance(js, dict) or set(js) != set(pyv):
            return bad
        return [m for k in pyv for m in mismatches(js[k], pyv[k], t.value, codec, f"{path}[{k}]")]
    if t == T.INT:
        if codec == "json":
            return [] if type(js) is int and js == int(pyv) else bad
        return [] if isinstance(js, str) and js == pyv else bad
    if t == T.FLOAT:
        return [] if type(js) in (int, float) and js == float(pyv) else bad
    if t == T.BOOL:
        return [] if js is pyv else bad
    if t == T.DATETIME:
        assert isinstance(pyv, xmlrpc.client.DateTime)
        if codec == "json":
            return [] if js == pyv.value else bad
        return [] if isinstance(js, dict) and _compact_iso(js["$date"]) == pyv.value else bad
    return [] if isinstance(js, str) and js == pyv else bad


def _record_mismatches(js: Any, pyv: Any, cls: str, codec: str, path: str) -> list[str]:
    if not isinstance(js, dict):
        return [f"{path}: node has {js!r}, not a {cls} record"]
    fields = api().classes[cls].field_map
    own = {k: v for k, v in js.items() if not k.startswith("$")}
    out = [f"{path}.{k}: only python has it" for k in sorted(set(pyv) - set(own))]
    out += [f"{path}.{k}: only node has it" for k in sorted(set(own) - set(pyv))]
    for k in sorted(set(own) & set(pyv)):
        out += mismatches(own[k], pyv[k], fields[k].type, codec, f"{path}.{k}")
    return out


def assert_same_records(js: Any, pyv: Any, cls: str, codec: str) -> None:
    """A ref → record map (get_all_records) read by both sides."""
    assert isinstance(js, dict) and set(js) == set(pyv), (sorted(js), sorted(pyv))
    problems = [m for ref in pyv for m in _record_mismatches(js[ref], pyv[ref], cls, codec, ref)]
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize(
    ("scheme", "transport", "codec"),
    [("http", *JSON), ("http", *XML), ("https", *JSON), ("https", *XML)],
    ids=["http-jsonrpc", "http-xmlrpc", "https-jsonrpc", "https-xmlrpc"],
)
def test_connect_and_read_match_python(
    server: ServerProcess, py: PySide, vm: str, scheme: str, transport: str, codec: str
) -> None:
    node = find_node()
    url = server.http_url if scheme == "http" else server.https_url
    pool_ref, pool = py.pool()
    master = pool["master"]
    report = run_client(
        node,
        url,
        transport,
        [
            ("call", ["VM.get_all_records"]),
            ("call", ["host.get_record", master]),
            ("getRecord", ["host", master]),
            ("call", ["host_cpu.get_all_records"]),
            ("getAllRecords", ["VM"]),
            ("call", ["VM.get_record", vm]),
        ],
    )
    want_vms = py.x.VM.get_all_records()
    want_host = py.x.host.get_record(master)
    want_cpus = py.x.host_cpu.get_all_records()
    vms, host, host_obj, cpus, wrapped_vms, one_vm = (ok(r) for r in report["results"])

    got_pool = report["pool"]
    assert got_pool["$ref"] == pool_ref
    assert got_pool["master"] == master
    assert isinstance(got_pool["other_config"], dict)
    assert _record_mismatches(got_pool, pool, "pool", codec, "pool") == []

    assert vm in vms and len(vms) >= 2  # control domain + the VM made from Python
    assert_same_records(vms, want_vms, "VM", codec)
    assert_same_records(wrapped_vms, want_vms, "VM", codec)
    assert _record_mismatches(one_vm, want_vms[vm], "VM", codec, vm) == []
    assert one_vm["PV_kernel"] == ""  # an empty string survives (W6)
    assert one_vm["HVM_boot_params"] == {"order": "cd"}

    assert _record_mismatches(host, want_host, "host", codec, "host") == []
    assert host_obj["$ref"] == master and host_obj["$type"] == "host"
    assert host_obj["$id"] == want_host["uuid"]
    assert _record_mismatches(host_obj, want_host, "host", codec, "host") == []
    assert len(cpus) >= 1
    assert_same_records(cpus, want_cpus, "host_cpu", codec)


def test_strict_tls_refuses_the_self_signed_certificate(server: ServerProcess) -> None:
    node = find_node()
    report = run_client(node, server.https_url, "auto", [], strict_tls=True)
    assert report["connected"] is False
    assert re.search(r"certificate|self.signed", report["error"]["message"], re.I), report


@pytest.mark.parametrize(("transport", "codec"), [JSON, XML], ids=["jsonrpc", "xmlrpc"])
def test_ints_are_numbers_over_json_and_strings_over_xml(
    server: ServerProcess, py: PySide, vm: str, transport: str, codec: str
) -> None:
    node = find_node()
    _, pool = py.pool()
    master = pool["master"]
    big = 5_000_000_000 + (1 if codec == "xml" else 0)  # beyond int32, distinct per run
    report = run_client(
        node,
        server.http_url,
        transport,
        [
            ("getRecord", ["host", master]),
            ("call", ["host_cpu.get_all_records"]),
            ("getField", ["VM", vm, "memory_static_max"]),
            ("setField", ["VM", vm, "user_version", big]),
            ("getField", ["VM", vm, "user_version"]),
        ],
    )
    host, cpus, mem, _, user_version = (ok(r) for r in report["results"])

    def wrap(n: int) -> int | str:
        return n if codec == "json" else str(n)

    assert host["API_version_major"] == wrap(int(py.x.host.get_API_version_major(master)))
    assert host["API_version_minor"] == wrap(int(py.x.host.get_API_version_minor(master)))
    assert {c["number"] for c in cpus.values()} == {wrap(i) for i in range(len(cpus))}
    assert mem == wrap(4 * GIB)
    assert user_version == wrap(big)
    assert py.x.VM.get_user_version(vm) == str(big)
    assert report["pool"]["ha_host_failures_to_tolerate"] == wrap(0)


@pytest.mark.parametrize(("transport", "codec"), [JSON, XML], ids=["jsonrpc", "xmlrpc"])
def test_writes_and_errors_from_node(
    server: ServerProcess, py: PySide, vm: str, transport: str, codec: str
) -> None:
    node = find_node()
    pool_ref, pool = py.pool()
    label = f'from node over {codec} <&> "ü"'
    report = run_client(
        node,
        server.http_url,
        transport,
        [
            ("call", ["pool.add_to_other_config", pool_ref, "xo:test", "v"]),  # 0
            ("getField", ["pool", pool_ref, "other_config"]),
            ("call", ["pool.remove_from_other_config", pool_ref, "xo:test"]),
            ("call", ["pool.remove_from_other_config", pool_ref, "xo:test"]),  # key absent
            ("setFieldEntry", ["pool", pool_ref, "other_config", "xo:entry", "e1"]),
            ("setFieldEntry", ["pool", pool_ref, "other_config", "xo:entry", "e2"]),  # 5
            ("call", ["pool.add_to_other_config", pool_ref, "xo:entry", "dup"]),
            ("getField", ["pool", pool_ref, "other_config"]),
            ("setFieldEntry", ["pool", pool_ref, "other_config", "xo:entry", None]),
            ("call", ["VM.set_name_label", vm, label]),
            ("setField", ["VM", vm, "name_description", f"desc {codec}"]),  # 10
            ("setField", ["pool", pool_ref, "migration_compression", codec == "xml"]),
            ("call", ["VM.add_tags", vm, f"tag-{codec}"]),
            ("call", ["VM.add_to_other_config", vm, f"empty-{codec}", ""]),
            ("call", ["VM.get_record", "OpaqueRef:NULL"]),
            ("call", ["VM.foo"]),  # 15
            ("call", ["VM.get_by_uuid", "no-such-uuid"]),
            ("call", ["VM.set_name_label", vm]),
            ("call", ["host.get_record", vm]),
            ("getRecord", ["VM", vm]),
        ],
    )
    r = report["results"]
    for i in (0, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13):
        ok(r[i])
    assert ok(r[1])["xo:test"] == "v"
    assert ok(r[7])["xo:entry"] == "e2"

    dup = err(r[6])
    assert dup["code"] == "MAP_DUPLICATE_KEY"
    assert dup["params"][:2] == ["pool", "other_config"]
    assert dup["params"][2] in (pool_ref, pool["uuid"]) and dup["params"][3] == "xo:entry"
    assert err(r[14])["code"] == "HANDLE_INVALID"
    assert err(r[14])["params"] == ["VM", "OpaqueRef:NULL"]
    assert err(r[15])["code"] == "MESSAGE_METHOD_UNKNOWN"
    assert err(r[15])["params"] == ["VM.foo"]
    assert err(r[16])["code"] == "UUID_INVALID"
    assert err(r[16])["params"] == ["VM", "no-such-uuid"]
    assert err(r[17])["code"] == "MESSAGE_PARAMETER_COUNT_MISMATCH"
    assert err(r[17])["params"] == ["VM.set_name_label", "2", "1"]
    assert err(r[18])["code"] == "HANDLE_INVALID"
    assert err(r[18])["params"] == ["host", vm]

    record = ok(r[19])
    assert record["name_label"] == label
    assert record["other_config"][f"empty-{codec}"] == ""  # an empty map value survives (W6)
    other_config = py.x.pool.get_other_config(pool_ref)
    assert "xo:test" not in other_config and "xo:entry" not in other_config
    assert py.x.pool.get_migration_compression(pool_ref) is (codec == "xml")
    assert py.x.VM.get_name_label(vm) == label
    assert py.x.VM.get_name_description(vm) == f"desc {codec}"
    assert f"tag-{codec}" in py.x.VM.get_tags(vm)
    assert py.x.VM.get_other_config(vm)[f"empty-{codec}"] == ""


def _classes_with_get_all_records() -> set[str]:
    return {w.split(".")[0] for w in api().messages if w.endswith(".get_all_records")}


@pytest.mark.parametrize(("transport", "codec"), [JSON, XML], ids=["jsonrpc", "xmlrpc"])
def test_list_methods_gives_the_client_every_type(
    server: ServerProcess, py: PySide, transport: str, codec: str
) -> None:
    node = find_node()
    report = run_client(
        node, server.http_url, transport, [("listMethods", []), ("fetchAllTypes", [])]
    )
    listed, fetched = ok(report["results"][0]), ok(report["results"][1])
    expected = _classes_with_get_all_records()
    assert isinstance(listed, list)
    assert {f"{c}.get_all_records" for c in expected} <= set(listed)
    assert sorted(report["types"]) == sorted(expected)
    assert set(fetched) == expected

    removed = {c for c in expected if api().messages[f"{c}.get_all_records"].lifecycle == "removed"}
    failed = {c: o["error"] for c, o in fetched.items() if "error" in o}
    assert set(failed) == removed, failed
    assert all(e["code"] == "MESSAGE_REMOVED" for e in failed.values()), failed
    for cls in ("pool", "host", "host_cpu", "VM", "role"):
        assert fetched[cls]["count"] == len(getattr(py.x, cls).get_all_records()), cls


def test_list_methods_is_unwrapped_over_xmlrpc(server: ServerProcess) -> None:
    """W7: the bare array, no Status/Value struct, on the path xen-api posts to."""
    with xmlrpc.client.ServerProxy(server.http_url + "/xmlrpc") as proxy:
        listed = proxy.system.listMethods()
    assert isinstance(listed, list)
    assert "VM.get_all_records" in listed and "host_cpu.get_all_records" in listed


@pytest.mark.parametrize(("transport", "codec"), [JSON, XML], ids=["jsonrpc", "xmlrpc"])
def test_message_records_reach_the_client(
    server: ServerProcess, py: PySide, transport: str, codec: str
) -> None:
    """xen-api fetches every listed type when it starts watching; ``message`` is one."""
    node = find_node()
    report = run_client(node, server.http_url, transport, [("getAllRecords", ["message"])])
    assert_same_records(ok(report["results"][0]), py.x.message.get_all_records(), "message", codec)
