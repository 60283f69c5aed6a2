"""The pool's and host's UEFI certificates: the defaults, the refusing setters, custom
certificates (when allowed) and the pool's Secure Boot readiness."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest

from openxapi.api import uefi
from openxapi.api.vm_domains import start_domains, stop_domains
from openxapi.xenops import uefi_vars
from tests.api.handlers.vm_kit import new_vm, rec
from tests.api.world import World


@pytest.fixture
async def w(world: World) -> AsyncIterator[World]:
    await start_domains(world.state)  # as the server does at start-up
    yield world
    await stop_domains(world.state)


def defaults() -> dict[str, bytes]:
    return uefi.unpack(uefi.default_certificates())


async def readiness(w: World) -> object:
    return await w.call("pool.get_guest_secureboot_readiness", w.root, w.state.pool_ref)


async def test_pool_and_host_show_the_default_certificates(w: World) -> None:
    pool = rec(w, "pool", w.state.pool_ref)
    host = rec(w, "host", w.state.host_ref)
    assert pool["uefi_certificates"] == host["uefi_certificates"] != ""
    assert set(uefi.unpack(pool["uefi_certificates"])) == {
        "PK.auth",
        "KEK.auth",
        "db.auth",
        "dbx.auth",
    }
    assert pool["custom_uefi_certificates"] == ""
    assert await readiness(w) == "ready"


async def test_the_old_setters_refuse(w: World) -> None:
    assert await w.fail("host.set_uefi_certificates", w.root, w.state.host_ref, "x") == [
        "OPERATION_NOT_ALLOWED",
        "To set UEFI certificates use: `Pool.set_custom_uefi_certificates`",
    ]
    assert await w.fail("pool.set_uefi_certificates", w.root, w.state.pool_ref, "x") == [
        "OPERATION_NOT_ALLOWED",
        "Setting UEFI certificates is deprecated, please use `set_custom_uefi_certificates`",
    ]
    assert await w.fail("pool.set_custom_uefi_certificates", w.root, w.state.pool_ref, "") == [
        "OPERATION_NOT_ALLOWED",
        "Setting UEFI certificates is not possible when allow_custom_uefi_certs is false",
    ]
    assert await w.fail("pool.set_uefi_certificates", w.root, "OpaqueRef:p", "x") == [
        "HANDLE_INVALID",
        "pool",
        "OpaqueRef:p",
    ]


async def test_custom_certificates_replace_the_defaults_for_new_stores(w: World) -> None:
    w.state.config.allow_custom_uefi_certs = True
    pool = w.state.pool_ref
    keys = defaults()
    no_dbx = uefi.pack({k: v for k, v in keys.items() if k != "dbx.auth"})
    await w.call("pool.set_custom_uefi_certificates", w.root, pool, no_dbx)
    assert rec(w, "pool", pool)["custom_uefi_certificates"] == no_dbx
    assert rec(w, "pool", pool)["uefi_certificates"] == uefi.default_certificates()
    assert await readiness(w) == "ready_no_dbx"
    vm = await new_vm(w, HVM_boot_params={"firmware": "uefi"}, platform={"secureboot": "true"})
    await w.call("VM.start", w.root, vm, False, False)
    assert await w.call("VM.get_secureboot_readiness", w.root, vm) == "ready_no_dbx"
    enrolled = uefi_vars.decode(rec(w, "VM", vm)["NVRAM"]["EFI-variables"])
    assert sorted(enrolled.names()) == ["KEK", "PK", "db"]
    for value, expected in (
        (uefi.pack({"PK.auth": keys["PK.auth"]}), "not_ready"),
        ("not a tar", "not_ready"),
        (base64.b64encode(b"neither").decode(), "not_ready"),
        ("", "ready"),
    ):
        await w.call("pool.set_custom_uefi_certificates", w.root, pool, value)
        assert await readiness(w) == expected, value
