"""The PyPI ``XenAPI`` SDK against a real server: transports, generic messages, value types.

Everything goes over real sockets to an ``openxapi serve`` process; the expectations are
the reference's (core-api.md §1-3, clients.md §0-1) as amended by rulings.md.
"""

from __future__ import annotations

import itertools
import os
import re
import ssl
import time
import uuid
import xmlrpc.client
from collections.abc import Iterator
from typing import Any

import pytest
import XenAPI

from openxapi.api.registry import not_implemented
from openxapi.spec import types as T
from openxapi.spec.model import NULL_REF, Class, load
from tests.e2e.test_sdk_support import (
    DUMMY_DATETIME,
    close,
    dummy_args,
    failure,
    logged_in,
    raw_call,
    sdk,
    unix_session,
    verified_transport,
    vm_struct,
)
from tests.serverproc import ROOT_PASSWORD, ServerProcess

pytestmark = pytest.mark.e2e

API = load()
API_VERSION = "2.23"
DATETIME_RE = re.compile(r"^\d{8}T\d\d:\d\d:\d\dZ$")

# Classes the generic read tests cover; the ones marked populated get objects first.
SAMPLE_CLASSES = [
    "pool",
    "host",
    "host_metrics",
    "host_cpu",
    "VM",
    "VM_metrics",
    "network",
    "VIF",
    "VBD",
    "VDI",
    "SR",
    "PBD",
    "task",
    "role",
    "subject",
    "secret",
    "blob",
    "console",
    "Bond",
    "VLAN",
    "tunnel",
    "PCI",
    "Certificate",
    "Repository",
    "Observer",
    "VM_group",
    "VTPM",
    "VM_appliance",
    "VMSS",
    "PIF",
    "SM",
    "PVS_cache_storage",
]
POPULATED = [
    "pool",
    "host",
    "host_metrics",
    "host_cpu",
    "VM",
    "VM_metrics",
    "network",
    "VIF",
    "VBD",
    "VDI",
    "PBD",
    "task",
    "role",
    "subject",
    "secret",
    "console",
    "Observer",
    "VM_group",
    "VM_appliance",
    "VMSS",
    "PVS_cache_storage",
]
# Objects the population fixture makes with each class's minimal constructor struct.
MADE_BY_CONSTRUCTOR = [
    "VIF",
    "VBD",
    "subject",
    "secret",
    "console",
    "Observer",
    "VM_group",
    "VM_appliance",
    "VMSS",
    "PVS_cache_storage",
]
# Classes with a generated constructor whose lifecycle is current.
CREATABLE = sorted(
    c.name
    for c in API.classes.values()
    if "create" in c.messages
    and c.messages["create"].implicit
    and c.messages["create"].lifecycle != "removed"
    and "get_all" in c.messages
)


# ---- helpers -------------------------------------------------------------------------------
def norm(v: Any) -> Any:
    """What the SDK returns, with DateTime objects as their text (for comparisons)."""
    if isinstance(v, xmlrpc.client.DateTime):
        return v.value
    if isinstance(v, list):
        return [norm(x) for x in v]
    if isinstance(v, dict):
        return {k: norm(x) for k, x in v.items()}
    return v


def as_client_sees(v: Any, t: T.Type) -> Any:
    """A description value as XML-RPC delivers it to the SDK (ints become strings)."""
    if isinstance(t, T.Prim):
        if t.name == "int":
            return str(v)
        if t.name == "float":
            return float(v)
        if t.name == "datetime":
            return str(v)
        return v
    if isinstance(t, T.Set):
        return [as_client_sees(x, t.elem) for x in v]
    if isinstance(t, T.Map):
        return {str(k): as_client_sees(x, t.value) for k, x in v.items()}
    return v


_vif_devices = itertools.count()
# Members the reference fills in itself when a create leaves them empty.
DERIVED_WHEN_EMPTY = {("VM", "other_config"), ("network", "bridge")}
_vbd_devices = itertools.count()


def required_value(cls: str, fname: str, t: T.Type, refs: dict[str, str]) -> Any:
    """A value for a constructor member without a default."""
    if cls == "VIF" and fname in ("device", "MAC"):  # a free device number, a valid MAC
        return str(next(_vif_devices)) if fname == "device" else "02:00:00:00:00:01"
    if cls == "VBD" and fname in ("userdevice", "empty"):  # a free device holding the VDI
        return str(next(_vbd_devices)) if fname == "userdevice" else False
    if cls == "VDI" and fname in ("SR", "virtual_size"):  # an attached SR; whole sectors
        return refs["default_SR"] if fname == "SR" else str(1 << 20)
    if isinstance(t, T.Ref):
        return refs.get(t.cls, NULL_REF)
    if isinstance(t, T.Enum):
        return API.enums[t.name][0]
    if isinstance(t, T.Prim):
        return {
            "string": f"{cls}-{fname}",
            "int": "7",
            "float": 0.5,
            "bool": True,
            "datetime": xmlrpc.client.DateTime(DUMMY_DATETIME),
        }[t.name]
    if isinstance(t, T.Set):
        return []
    return {"k": "v"}


def minimal_struct(cls: Class, refs: dict[str, str]) -> dict[str, Any]:
    if cls.name == "VM":
        return vm_struct("minimal VM")
    return {
        f.name: required_value(cls.name, f.name, f.type, refs)
        for f in cls.fields
        if f.in_constructor and not f.has_default
    }


def getters_of(cls: Class) -> dict[str, str]:
    """field name -> lifecycle of its get_<field> message."""
    return {
        f.name: cls.messages[f"get_{f.name}"].lifecycle
        for f in cls.fields
        if f"get_{f.name}" in cls.messages
    }


def api_of(x: Any, cls: str) -> Any:
    return getattr(x, cls)


# ---- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def session(server: ServerProcess) -> Iterator[XenAPI.Session]:
    with logged_in(server.http_url) as s:
        yield s


@pytest.fixture(scope="module")
def x(session: XenAPI.Session) -> Any:
    return session.xenapi


@pytest.fixture(scope="module")
def host(x: Any) -> str:
    hosts = x.host.get_all()
    assert len(hosts) == 1
    return str(hosts[0])


@pytest.fixture(scope="module")
def population(x: Any, host: str) -> dict[str, str]:
    """One object of every populated class the server lets a client create."""
    refs: dict[str, str] = {"host": host}
    refs["VM"] = x.VM.create(vm_struct("e2e population VM"))
    refs["network"] = x.network.create({"name_label": "e2e net", "other_config": {}})
    refs["default_SR"] = x.pool.get_default_SR(x.pool.get_all()[0])
    refs["PBD"] = x.SR.get_PBDs(refs["default_SR"])[0]
    refs["SR"] = x.SR.introduce("", "e2e SR without PBD", "", "dummy", "user", False, {})
    refs["VDI"] = x.VDI.create(minimal_struct(API.classes["VDI"], refs))
    for cname in MADE_BY_CONSTRUCTOR:
        refs[cname] = api_of(x, cname).create(minimal_struct(API.classes[cname], refs))
    refs["task"] = x.task.create("e2e task", "made by the population fixture")
    return refs


# ---- 1. transports, login forms, API version ---------------------------------------------
@pytest.mark.parametrize("form", [2, 3, 4])
@pytest.mark.parametrize("path", ["", "/"])
def test_login_forms_over_http(server: ServerProcess, form: int, path: str) -> None:
    args = ["root", ROOT_PASSWORD, "1.0", "e2e-originator"][:form]
    with sdk(server.http_url + path) as s:
        s.xenapi.login_with_password(*args)
        ref = s._session
        assert ref.startswith("OpaqueRef:")
        assert s.API_version == API_VERSION
        rec = s.xenapi.session.get_record(ref)
        assert rec["originator"] == ("e2e-originator" if form == 4 else "")
        s.xenapi.session.logout()
        assert s._session is None
    reply = raw_call(server.http_url, "pool.get_all", ref)
    assert reply == {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", ref]}


def test_https_verified_against_server_certificate(server: ServerProcess) -> None:
    with sdk(server.https_url, transport=verified_transport(server)) as s:
        s.xenapi.login_with_password("root", ROOT_PASSWORD, "1.0", "e2e")
        assert s.API_version == API_VERSION
        assert len(s.xenapi.VM.get_all_records()) >= 1
        s.xenapi.session.logout()


def test_https_verified_through_ssl_cert_file(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(server.cert_path))
    with sdk(server.https_url) as s:
        s.xenapi.login_with_password("root", ROOT_PASSWORD)
        assert s.API_version == API_VERSION
        s.xenapi.logout()


def test_https_unknown_certificate_is_refused(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with sdk(server.https_url) as s, pytest.raises(ssl.SSLCertVerificationError):
        s.xenapi.login_with_password("root", ROOT_PASSWORD)


def test_https_ignore_ssl(server: ServerProcess) -> None:
    with sdk(server.https_url + "/", ignore_ssl=True) as s:
        s.xenapi.login_with_password("root", ROOT_PASSWORD, "1.0")
        assert s.API_version == API_VERSION
        s.xenapi.session.logout()


@pytest.mark.parametrize("creds", [("root", ROOT_PASSWORD), ("nobody", "wrong"), ("", "")])
def test_unix_socket_is_preauthenticated_as_root(
    server: ServerProcess, creds: tuple[str, str]
) -> None:
    s = unix_session(server.socket_path)
    try:
        s.xenapi.login_with_password(*creds, "1.0", "e2e-local")
        rec = s.xenapi.session.get_record(s._session)
        assert rec["is_local_superuser"] is True
        assert rec["rbac_permissions"] == []
        assert s.API_version == API_VERSION
        # root-only messages pass RBAC on a local session
        assert failure(s.xenapi.session.change_password, "wrong-old", "new")[0] == (
            "SESSION_AUTHENTICATION_FAILED"
        )
        s.xenapi.session.logout()
    finally:
        close(s)


# ---- 7. a fresh server looks like a fresh XenServer --------------------------------------
def test_fresh_server_world(x: Any, host: str) -> None:
    pools = x.pool.get_all_records()
    assert len(pools) == 1
    (pool,) = pools.values()
    assert pool["master"] == host
    assert isinstance(pool["other_config"], dict)

    h = x.host.get_record(host)
    assert h["hostname"] and h["address"]
    assert h["API_version_major"] == "2" and h["API_version_minor"] == "23"
    assert int(h["cpu_info"]["cpu_count"]) == os.cpu_count()
    sv = h["software_version"]
    for key in [
        "product_brand",
        "product_version",
        "platform_name",
        "platform_version",
        "build_number",
        "xapi",
        "hostname",
        "date",
    ]:
        assert key in sv, key
    assert sv["product_brand"] == "openxapi"
    assert sv["product_version"] == "8.4.0"
    assert sv["platform_name"] == "openxapi"
    assert sv["xapi"] == API_VERSION
    assert sv["hostname"] == h["hostname"]

    metrics = x.host_metrics.get_record(h["metrics"])
    assert int(metrics["memory_total"]) > 0
    assert metrics["live"] is True

    cpus = x.host_cpu.get_all_records()
    assert len(cpus) == os.cpu_count()
    assert sorted(int(c["number"]) for c in cpus.values()) == list(range(len(cpus)))
    assert all(c["host"] == host for c in cpus.values())
    assert sorted(h["host_CPUs"]) == sorted(cpus)

    dom0s = [(r, v) for r, v in x.VM.get_all_records().items() if v["is_control_domain"]]
    assert len(dom0s) == 1
    dom0_ref, dom0 = dom0s[0]
    assert dom0["power_state"] == "Running"
    assert dom0["resident_on"] == host
    assert dom0_ref in h["resident_VMs"]
    assert h["control_domain"] == dom0_ref
    assert x.VM_metrics.get_record(dom0["metrics"])["uuid"]

    before = time.time()
    servertime = x.host.get_servertime(host)
    assert isinstance(servertime, xmlrpc.client.DateTime)
    assert DATETIME_RE.match(servertime.value)
    stamp = time.mktime(time.strptime(servertime.value, "%Y%m%dT%H:%M:%SZ")) - time.timezone
    assert abs(stamp - before) < 60
    local = x.host.get_server_localtime(host)
    assert isinstance(local, xmlrpc.client.DateTime)
    assert re.match(r"^\d{8}T\d\d:\d\d:\d\d", local.value)


def test_api_version_probe_uses_pool_master(session: XenAPI.Session, x: Any, host: str) -> None:
    pool = x.pool.get_all()[0]
    assert x.pool.get_master(pool) == host
    assert f"{x.host.get_API_version_major(host)}.{x.host.get_API_version_minor(host)}" == (
        API_VERSION
    )


# ---- 2. generic reads on many classes ------------------------------------------------------
@pytest.mark.parametrize("cname", SAMPLE_CLASSES)
def test_generic_reads(x: Any, population: dict[str, str], cname: str) -> None:
    cls = API.classes[cname]
    api = api_of(x, cname)
    refs = api.get_all()
    records = api.get_all_records()
    assert sorted(refs) == sorted(records)
    if cname in POPULATED:
        assert records, f"no {cname} objects"
    getters = getters_of(cls)
    for ref in sorted(records)[:2]:
        rec = records[ref]
        assert norm(api.get_record(ref)) == norm(rec)
        assert set(rec) == set(getters), "record members are the fields with getters"
        assert api.get_by_uuid(rec["uuid"]) == ref
        if "get_by_name_label" in cls.messages:
            assert ref in api.get_by_name_label(rec["name_label"])
        for fname, lifecycle in getters.items():
            getter = getattr(api, f"get_{fname}")
            if lifecycle == "removed":
                assert failure(getter, ref) == ["MESSAGE_REMOVED"]
            else:
                assert norm(getter(ref)) == norm(rec[fname]), fname
    bogus = f"OpaqueRef:{uuid.uuid4()}"
    for bad in (NULL_REF, bogus, "not a ref"):
        assert failure(api.get_record, bad) == ["HANDLE_INVALID", cname, bad]
    getter = next(f for f, lc in getters.items() if lc != "removed")
    assert failure(getattr(api, f"get_{getter}"), bogus) == ["HANDLE_INVALID", cname, bogus]
    unknown = str(uuid.uuid4())
    assert failure(api.get_by_uuid, unknown) == ["UUID_INVALID", cname, unknown]


@pytest.mark.parametrize("cname", CREATABLE)
def test_create_minimal_fills_defaults_and_destroy(
    x: Any, population: dict[str, str], cname: str
) -> None:
    cls = API.classes[cname]
    api = api_of(x, cname)
    struct = minimal_struct(cls, population)
    ref = api.create(struct)
    try:
        assert ref.startswith("OpaqueRef:") and ref in api.get_all()
        rec = api.get_record(ref)
        assert api.get_by_uuid(rec["uuid"]) == ref
        for f in cls.fields:
            if not f.in_constructor:
                continue
            if f.name in struct:
                expected = norm(struct[f.name])
                if isinstance(f.type, T.Prim) and f.type.name == "int":
                    expected = str(expected)
            else:
                expected = norm(as_client_sees(f.default, f.type))
            got = norm(rec[f.name])
            if (cname, f.name) in DERIVED_WHEN_EMPTY:
                continue
            if isinstance(f.type, T.Ref) and expected in ("", NULL_REF):
                assert got in ("", NULL_REF), f.name
            else:
                assert got == expected, f.name
    finally:
        api.destroy(ref)
    assert ref not in api.get_all()
    assert failure(api.get_record, ref) == ["HANDLE_INVALID", cname, ref]
    assert failure(api.destroy, ref) == ["HANDLE_INVALID", cname, ref]


# VIF and network copies clash with their source (device number, bridge name) by design.
@pytest.mark.parametrize(
    "cname", [c for c in CREATABLE if c not in ("VBD", "PBD", "VIF", "network")]
)
def test_create_accepts_a_full_record(x: Any, population: dict[str, str], cname: str) -> None:
    """W14: a get_record result passed back into create; read-only members are ignored."""
    cls = API.classes[cname]
    api = api_of(x, cname)
    source = population.get(cname) or api.create(minimal_struct(cls, population))
    full = api.get_record(source)
    full["an_extra_member"] = "ignored"
    copy = api.create(full)
    try:
        rec = api.get_record(copy)
        assert copy != source
        assert rec["uuid"] != full["uuid"]
        for f in cls.fields:
            if f.in_constructor:
                assert norm(rec[f.name]) == norm(full[f.name]), f.name
    finally:
        api.destroy(copy)


def test_create_ignores_read_only_members(x: Any, host: str) -> None:
    ref = x.VM.create(
        vm_struct(
            "read-only members",
            is_control_domain=True,
            resident_on=host,
            domid="5",
            uuid="00000000-0000-0000-0000-000000000000",
        )
    )
    try:
        rec = x.VM.get_record(ref)
        assert rec["is_control_domain"] is False
        assert rec["resident_on"] == NULL_REF
        assert rec["domid"] != "5"
        assert rec["uuid"] != "00000000-0000-0000-0000-000000000000"
        assert rec["power_state"] == "Halted"
    finally:
        x.VM.destroy(ref)


def test_create_missing_required_member(x: Any) -> None:
    struct = vm_struct("incomplete")
    del struct["memory_static_max"]
    err = failure(x.VM.create, struct)
    assert err[0] == "INTERNAL_ERROR"
    assert "memory_static_max" in err[1]


def test_vm_create_like_the_reference(x: Any) -> None:
    ref = x.VM.create(vm_struct("has metrics"))
    try:
        assert x.VM.get_domid(ref) == "-1"
        metrics = x.VM.get_metrics(ref)
        assert x.VM_metrics.get_record(metrics)["uuid"]
    finally:
        x.VM.destroy(ref)


def test_rw_setters_round_trip(x: Any, population: dict[str, str], host: str) -> None:
    """Every generated setter of a sample of creatable classes writes what get_ reads."""
    checked = 0
    for cname in [
        "VM",
        "network",
        "VIF",
        "VBD",
        "VDI",
        "PBD",
        "VM_appliance",
        "VMSS",
        "VM_group",
        "console",
        "secret",
    ]:
        cls = API.classes[cname]
        api = api_of(x, cname)
        ref = population[cname]
        for f in cls.fields:
            msg = cls.messages.get(f"set_{f.name}")
            if msg is None or not msg.implicit or msg.lifecycle == "removed":
                continue
            value = _new_value(f.type, api.get_record(ref)[f.name], host)
            assert getattr(api, f"set_{f.name}")(ref, value) == ""
            got = norm(getattr(api, f"get_{f.name}")(ref))
            assert got == norm(as_client_sees(value, f.type)), f"{cname}.{f.name}"
            checked += 1
    assert checked > 30


def _new_value(t: T.Type, current: Any, host: str) -> Any:
    if isinstance(t, T.Prim):
        return {
            "string": "set <&> value",
            "int": 4242,
            "float": 2.5,
            "bool": not current,
            "datetime": DUMMY_DATETIME,
        }[t.name]
    if isinstance(t, T.Enum):
        values = API.enums[t.name]
        return values[(values.index(current) + 1) % len(values)]
    if isinstance(t, T.Ref):
        return host if t.cls == "host" else NULL_REF
    if isinstance(t, T.Set):
        return ["a", "b"] if t.elem == T.STRING else []
    if isinstance(t, T.Map):
        return {"k1": "v1", "k2": "v2"} if t.key == T.STRING and t.value == T.STRING else {}
    raise AssertionError(t)


def test_map_add_remove(x: Any, population: dict[str, str]) -> None:
    vm = population["VM"]
    uuid_ = x.VM.get_uuid(vm)
    x.VM.set_other_config(vm, {})
    x.VM.add_to_other_config(vm, "k", "v")
    x.VM.add_to_other_config(vm, "k2", "v2")
    assert x.VM.get_other_config(vm) == {"k": "v", "k2": "v2"}
    err = failure(x.VM.add_to_other_config, vm, "k", "other")
    assert err[0] == "MAP_DUPLICATE_KEY"
    assert err[1:3] == ["VM", "other_config"] and err[3] in (uuid_, vm) and err[4] == "k"
    assert len(err) == 5
    assert x.VM.get_other_config(vm)["k"] == "v"
    x.VM.remove_from_other_config(vm, "k")
    x.VM.remove_from_other_config(vm, "never-there")
    assert x.VM.get_other_config(vm) == {"k2": "v2"}
    # a generated map accessor on an RW field, and its DB column name in the error
    x.VM.add_to_VCPUs_params(vm, "weight", "256")
    err = failure(x.VM.add_to_VCPUs_params, vm, "weight", "1")
    assert err[0] == "MAP_DUPLICATE_KEY" and err[1] == "VM" and err[4] == "weight"
    assert err[2] == API.classes["VM"].field_map["VCPUs_params"].column
    x.VM.remove_from_VCPUs_params(vm, "weight")
    assert "weight" not in x.VM.get_VCPUs_params(vm)


def test_set_add_remove(x: Any, population: dict[str, str]) -> None:
    vm = population["VM"]
    x.VM.set_tags(vm, [])
    x.VM.add_tags(vm, "red")
    x.VM.add_tags(vm, "blue")
    x.VM.add_tags(vm, "red")
    assert sorted(x.VM.get_tags(vm)) == ["blue", "red"]
    x.VM.remove_tags(vm, "red")
    x.VM.remove_tags(vm, "absent")
    assert x.VM.get_tags(vm) == ["blue"]


def test_get_all_records_where(x: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    a = x.VM.create(vm_struct(f"where-a-{tag}", is_a_template=True))
    b = x.VM.create(vm_struct(f"where-b-{tag}"))
    try:
        q = x.VM.get_all_records_where
        assert set(q(f'field "name__label" = "where-a-{tag}"')) == {a}
        assert set(
            q(f'field "name__label" = "where-a-{tag}" or field "name__label" = "where-b-{tag}"')
        ) == {a, b}
        assert set(
            q(f'field "name__label" = "where-b-{tag}" and field "is_a_template" = "false"')
        ) == {b}
        assert (
            set(q(f'field "name__label" = "where-b-{tag}" and field "is_a_template" = "true"'))
            == set()
        )
        everyone = set(x.VM.get_all())
        assert set(q(f'not (field "name__label" = "where-a-{tag}")')) == everyone - {a}
        assert set(q("true")) == everyone
        rec = q(f'field "name__label" = "where-a-{tag}"')[a]
        assert norm(rec) == norm(x.VM.get_record(a))
        assert set(x.VM.get_all_where(f'field "name__label" = "where-b-{tag}"')) == {b}
        for bad in ('field "name__label" =', '"unterminated', "field name__label = x", "and"):
            err = failure(q, bad)
            assert err[0] == "INVALID_VALUE" and err[1] == bad and len(err) == 3, err
    finally:
        x.VM.destroy(a)
        x.VM.destroy(b)


def test_one_to_many_relations(x: Any, population: dict[str, str], host: str) -> None:
    vm = x.VM.create(vm_struct("relations"))
    net = population["network"]
    vdi = population["VDI"]
    try:
        vif = x.VIF.create(minimal_struct(API.classes["VIF"], {"VM": vm, "network": net}))
        vbd = x.VBD.create(minimal_struct(API.classes["VBD"], {"VM": vm, "VDI": vdi}))
        assert x.VM.get_VIFs(vm) == [vif]
        assert x.VM.get_VBDs(vm) == [vbd]
        assert vif in x.network.get_VIFs(net)
        assert vbd in x.VDI.get_VBDs(vdi)
        x.VIF.destroy(vif)
        x.VBD.destroy(vbd)
        assert x.VM.get_VIFs(vm) == []
        assert x.VM.get_VBDs(vm) == []
        assert vif not in x.network.get_VIFs(net)
        assert vbd not in x.VDI.get_VBDs(vdi)
        pbd = x.PBD.create(
            minimal_struct(API.classes["PBD"], {"host": host, "SR": population["SR"]})
        )
        assert pbd in x.host.get_PBDs(host)
        x.PBD.destroy(pbd)
        assert pbd not in x.host.get_PBDs(host)
    finally:
        x.VM.destroy(vm)


# ---- 3. field types through the SDK ------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain",
        "<tag attr=\"v\">&amp; & ]]> 'q' </tag>",
        "Grüße, 日本語, emoji 🚀, math ∑",
        "tab\tand\nnewline",
        "  leading and trailing spaces  ",
    ],
)
def test_strings_round_trip(x: Any, population: dict[str, str], text: str) -> None:
    vm = population["VM"]
    x.VM.set_name_description(vm, text)
    assert x.VM.get_name_description(vm) == text
    assert x.VM.get_record(vm)["name_description"] == text
    x.VM.add_to_xenstore_data(vm, f"key {text}", text)
    assert x.VM.get_xenstore_data(vm)[f"key {text}"] == text
    x.VM.remove_from_xenstore_data(vm, f"key {text}")


@pytest.mark.parametrize(
    ("sent", "got"),
    [
        (0, "0"),
        (-5, "-5"),
        (2**31 - 1, "2147483647"),
        ("4294967296", "4294967296"),
        ("-4294967296", "-4294967296"),
        ("9223372036854775807", "9223372036854775807"),
        ("-9223372036854775808", "-9223372036854775808"),
    ],
)
def test_ints_round_trip_as_strings(
    x: Any, population: dict[str, str], sent: Any, got: str
) -> None:
    vm = population["VM"]
    x.VM.set_user_version(vm, sent)
    assert x.VM.get_user_version(vm) == got
    assert x.VM.get_record(vm)["user_version"] == got


def test_int_out_of_range_is_a_type_error(x: Any, population: dict[str, str]) -> None:
    vm = population["VM"]
    assert failure(x.VM.set_user_version, vm, "9223372036854775808") == [
        "FIELD_TYPE_ERROR",
        "value",
    ]
    assert failure(x.VM.set_user_version, vm, "12abc") == ["FIELD_TYPE_ERROR", "value"]


def test_floats_bools_and_enums(x: Any) -> None:
    vm = x.VM.create(vm_struct("typed", HVM_shadow_multiplier=2.5, is_a_template=True))
    try:
        assert x.VM.get_HVM_shadow_multiplier(vm) == 2.5
        assert isinstance(x.VM.get_HVM_shadow_multiplier(vm), float)
        assert x.VM.get_is_a_template(vm) is True
        x.VM.set_is_a_template(vm, False)
        assert x.VM.get_is_a_template(vm) is False
        for value in API.enums["on_normal_exit"]:
            x.VM.set_actions_after_shutdown(vm, value)
            assert x.VM.get_actions_after_shutdown(vm) == value
        assert failure(x.VM.set_actions_after_shutdown, vm, "explode") == [
            "FIELD_TYPE_ERROR",
            "value",
        ]
        assert failure(x.VM.set_actions_after_shutdown, vm, "Destroy") == [
            "FIELD_TYPE_ERROR",
            "value",
        ]
        assert x.VM.get_record(vm)["HVM_shadow_multiplier"] == 2.5
    finally:
        x.VM.destroy(vm)


def test_datetimes(x: Any, population: dict[str, str], host: str) -> None:
    metrics = x.host.get_metrics(host)
    stamp = x.host_metrics.get_last_updated(metrics)
    assert isinstance(stamp, xmlrpc.client.DateTime) and DATETIME_RE.match(stamp.value)
    task = x.task.get_record(population["task"])
    assert isinstance(task["created"], xmlrpc.client.DateTime)
    assert task["finished"].value == "19700101T00:00:00Z"
    # a datetime parameter: a DateTime passes the type check, other values do not
    assert [p.type for p in API.messages["message.get_since"].params] == [T.DATETIME]
    try:
        x.message.get_since(xmlrpc.client.DateTime(DUMMY_DATETIME))
    except XenAPI.Failure as e:
        assert e.details[0] != "FIELD_TYPE_ERROR", e.details
    assert failure(x.message.get_since, 12) == ["FIELD_TYPE_ERROR", "since"]
    assert failure(x.message.get_since, "yesterday") == ["FIELD_TYPE_ERROR", "since"]


def test_float_parameter(x: Any) -> None:
    vm = x.VM.create(vm_struct("float parameter"))
    try:
        try:
            x.VM.set_HVM_shadow_multiplier(vm, 1.5)
        except XenAPI.Failure as e:
            assert e.details[0] != "FIELD_TYPE_ERROR", e.details
        assert failure(x.VM.set_HVM_shadow_multiplier, vm, "abc") == ["FIELD_TYPE_ERROR", "value"]
        assert failure(x.VM.set_HVM_shadow_multiplier, vm, True) == ["FIELD_TYPE_ERROR", "value"]
    finally:
        x.VM.destroy(vm)


def test_refs_and_sets_of_refs(x: Any, host: str) -> None:
    vm = x.VM.create(vm_struct("refs"))
    obs = x.Observer.create({"name_label": "refs", "hosts": [host]})
    try:
        x.VM.set_affinity(vm, host)
        assert x.VM.get_affinity(vm) == host
        x.VM.set_affinity(vm, NULL_REF)
        assert x.VM.get_affinity(vm) == NULL_REF
        assert x.Observer.get_hosts(obs) == [host]
    finally:
        x.VM.destroy(vm)
        x.Observer.destroy(obs)


def test_enum_keyed_map(x: Any, population: dict[str, str]) -> None:
    vm = population["VM"]
    x.VM.set_blocked_operations(vm, {"start": "maintenance", "clone": ""})
    assert x.VM.get_blocked_operations(vm) == {"start": "maintenance", "clone": ""}
    x.VM.add_to_blocked_operations(vm, "destroy", "keep")
    assert x.VM.get_blocked_operations(vm)["destroy"] == "keep"
    assert failure(x.VM.add_to_blocked_operations, vm, "not_an_op", "x") == [
        "FIELD_TYPE_ERROR",
        "key",
    ]
    assert failure(x.VM.set_blocked_operations, vm, {"bogus": "x"}) == ["FIELD_TYPE_ERROR", "value"]
    x.VM.remove_from_blocked_operations(vm, "destroy")
    x.VM.set_blocked_operations(vm, {})
    assert x.VM.get_blocked_operations(vm) == {}


def test_int_set_from_constructor(x: Any, population: dict[str, str]) -> None:
    struct = minimal_struct(API.classes["VIF"], population)
    struct["trunks"] = ["10", 20]
    vif = x.VIF.create(struct)
    try:
        assert x.VIF.get_trunks(vif) == ["10", "20"]
    finally:
        x.VIF.destroy(vif)


@pytest.mark.parametrize(
    ("method", "args", "param"),
    [
        ("set_name_label", [5], "value"),
        ("set_name_label", [None], "value"),
        ("set_name_label", [["a"]], "value"),
        ("set_user_version", [1.5], "value"),
        ("set_is_a_template", ["true"], "value"),
        ("set_is_a_template", [1], "value"),
        ("set_tags", ["not a list"], "value"),
        ("set_tags", [[1, 2]], "value"),
        ("set_VCPUs_params", [{"a": 1}], "value"),
        ("set_VCPUs_params", [["a"]], "value"),
        ("set_affinity", [7], "value"),
    ],
)
def test_wrong_types(
    x: Any, population: dict[str, str], method: str, args: list[Any], param: str
) -> None:
    assert failure(getattr(x.VM, method), population["VM"], *args) == ["FIELD_TYPE_ERROR", param]


def test_wrong_type_of_self_and_of_create_member(x: Any) -> None:
    assert failure(x.VM.get_record, 42) == ["FIELD_TYPE_ERROR", "self"]
    assert failure(x.VM.create, "not a struct") == ["FIELD_TYPE_ERROR", "args"]
    struct = vm_struct("bad member", user_version="many")
    assert failure(x.VM.create, struct) == ["FIELD_TYPE_ERROR", "user_version"]


def test_arity(x: Any, population: dict[str, str]) -> None:
    vm = population["VM"]
    assert failure(x.VM.get_record) == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH",
        "VM.get_record",
        "1",
        "0",
    ]
    assert failure(x.VM.get_record, vm, "extra") == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH",
        "VM.get_record",
        "1",
        "2",
    ]
    assert failure(x.VM.set_name_label, vm) == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH",
        "VM.set_name_label",
        "2",
        "1",
    ]
    assert failure(x.VM.get_all, "x") == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH",
        "VM.get_all",
        "0",
        "1",
    ]


def test_unknown_method_and_aliases(x: Any, population: dict[str, str]) -> None:
    assert failure(x.VM.no_such_message) == ["MESSAGE_METHOD_UNKNOWN", "VM.no_such_message"]
    assert failure(x.NoSuchClass.get_all) == ["MESSAGE_METHOD_UNKNOWN", "NoSuchClass.get_all"]
    assert sorted(x.VM_get_all()) == sorted(x.VM.get_all())
    vm = population["VM"]
    assert x.VM_get_name_label(vm) == x.VM.get_name_label(vm)
    assert failure(x.Async_VM_get_all) == ["MESSAGE_METHOD_UNKNOWN", "Async_VM_get_all"]


def test_removed_message(x: Any, host: str, population: dict[str, str]) -> None:
    assert failure(x.VM.get_is_snapshot_from_vmpp, population["VM"]) == ["MESSAGE_REMOVED"]
    pool = x.pool.get_all()[0]
    assert failure(x.pool.enable_ssl_legacy, pool) == ["MESSAGE_REMOVED"]


def test_not_implemented_message(x: Any) -> None:
    missing = sorted(not_implemented())
    msg = next(
        API.messages[w]
        for w in missing
        if API.messages[w].session and API.messages[w].lifecycle != "removed"
    )
    err = failure(getattr(api_of(x, msg.cls), msg.name), *dummy_args(msg, API))
    assert err == ["NOT_IMPLEMENTED", msg.wire_name]


def test_system_list_methods(session: XenAPI.Session) -> None:
    methods = session.system.listMethods()
    assert isinstance(methods, list)
    assert set(methods) == set(API.messages)
    for name in (
        "VM.get_all_records",
        "host.get_all_records",
        "VM_guest_metrics.get_all_records",
        "session.login_with_password",
        "event.from",
    ):
        assert name in methods


def test_async_call_returns_a_task(x: Any) -> None:
    task = x.Async.VM.create(vm_struct("made asynchronously"))
    assert task.startswith("OpaqueRef:")
    rec = _wait_task(x, task)
    assert rec["status"] == "success"
    assert rec["progress"] == 1.0
    assert rec["error_info"] == []
    assert rec["name_label"] == "Async.VM.create"
    m = re.fullmatch(r"<value>(OpaqueRef:[0-9a-f-]+)</value>", rec["result"])
    assert m, rec["result"]
    vm = m.group(1)
    assert x.VM.get_name_label(vm) == "made asynchronously"
    task2 = x.Async.VM.destroy(vm)
    rec2 = _wait_task(x, task2)
    assert rec2["status"] == "success" and rec2["result"] == "<value></value>"
    task3 = x.Async.VM.destroy(vm)
    rec3 = _wait_task(x, task3)
    assert rec3["status"] == "failure"
    assert rec3["error_info"] == ["HANDLE_INVALID", "VM", vm]
    for t in (task, task2, task3):
        x.task.destroy(t)
    assert failure(x.Async.VM.get_record, vm)[0] == "Fault"


def _wait_task(x: Any, task: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while x.task.get_status(task) == "pending":
        assert time.monotonic() < deadline, "task still pending"
        time.sleep(0.02)
    rec: dict[str, Any] = x.task.get_record(task)
    return rec


# ---- 4. errors and the SDK's SESSION_INVALID retry ---------------------------------------
def test_session_invalid_triggers_relogin(server: ServerProcess) -> None:
    with logged_in(server.http_url) as s:
        first = s._session
        assert raw_call(server.http_url, "session.logout", first) == {
            "Status": "Success",
            "Value": "",
        }
        reply = raw_call(server.http_url, "VM.get_all", first)
        assert reply["ErrorDescription"] == ["SESSION_INVALID", first]
        vms = s.xenapi.VM.get_all()
        assert vms
        assert s._session != first
        assert s.xenapi.session.get_is_local_superuser(s._session) is True


def test_errors_are_sdk_failures_with_reference_shape(x: Any) -> None:
    with pytest.raises(XenAPI.Failure) as info:
        x.VM.get_record(NULL_REF)
    assert info.value.details == ["HANDLE_INVALID", "VM", NULL_REF]
    assert all(isinstance(d, str) for d in info.value.details)


# ---- 6. the session --------------------------------------------------------------------
def test_session_record_shape(session: XenAPI.Session, x: Any, host: str) -> None:
    ref = session._session
    rec = x.session.get_record(ref)
    expected = [f.name for f in API.classes["session"].fields]
    assert list(rec) == expected
    assert expected == [
        "uuid",
        "this_host",
        "this_user",
        "last_active",
        "pool",
        "other_config",
        "is_local_superuser",
        "subject",
        "validation_time",
        "auth_user_sid",
        "auth_user_name",
        "rbac_permissions",
        "tasks",
        "parent",
        "originator",
        "client_certificate",
    ]
    assert rec["this_host"] == host == x.session.get_this_host(ref)
    assert rec["this_user"] == NULL_REF == x.session.get_this_user(ref)
    assert rec["auth_user_name"] == "root"
    assert rec["is_local_superuser"] is True
    assert rec["originator"] == "openxapi-e2e"
    assert rec["subject"] == NULL_REF
    assert rec["auth_user_sid"] == ""
    assert rec["pool"] is False
    assert rec["client_certificate"] is False
    assert rec["parent"] == NULL_REF
    assert isinstance(rec["validation_time"], xmlrpc.client.DateTime)
    assert isinstance(rec["last_active"], xmlrpc.client.DateTime)
    assert x.session.get_by_uuid(rec["uuid"]) == ref
    x.session.add_to_other_config(ref, "who", "e2e")
    assert x.session.get_other_config(ref) == {"who": "e2e"}
    x.session.remove_from_other_config(ref, "who")
