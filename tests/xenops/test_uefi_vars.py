"""UEFI variable stores: varstored's serialisation, edk2 flash images, auth files."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from openxapi.xenops import uefi_vars as u

OVMF = Path("/usr/share/OVMF")
needs_ovmf = pytest.mark.skipif(not (OVMF / "OVMF_VARS_4M.fd").is_file(), reason="no OVMF")


def sample() -> u.VarStore:
    store = u.VarStore()
    store.put(u.Variable("BootOrder", u.GLOBAL_GUID, 0x7, b"\x00\x00"))
    store.put(u.Variable("db", u.SECURITY_DB_GUID, 0x27, b"siglists", bytes(range(16))))
    store.put(u.Variable("Lang", u.GLOBAL_GUID, 0x7, b"eng\0"))
    return store


def facts(store: u.VarStore) -> list[tuple[str, bytes, int, bytes, bytes]]:
    return [(v.name, v.guid, v.attributes, v.data, v.timestamp) for v in store.variables]


def test_varstored_round_trip_and_replacement() -> None:
    store = sample()
    store.put(u.Variable("Lang", u.GLOBAL_GUID, 0x7, b"fra\0"))
    back = u.decode(u.encode(store))
    assert facts(back) == facts(store) and back.names() == ["BootOrder", "db", "Lang"]
    assert back.remove("db", u.SECURITY_DB_GUID) and not back.remove("db", u.GLOBAL_GUID)
    raw = u.serialize_varstored(store)
    assert raw[:4] == b"VARS" and struct.unpack_from("<IQ", raw, 4) == (2, 3)


def test_volatile_variables_are_not_serialised() -> None:
    store = sample()
    store.put(u.Variable("SecureBoot", u.GLOBAL_GUID, 0x6, b"\x01"))
    assert "SecureBoot" not in u.decode(u.encode(store)).names()


def test_version_one_stores_have_no_ancillary_data() -> None:
    name = "PK".encode("utf-16-le")
    body = struct.pack("<Q", len(name)) + name + struct.pack("<Q", 1) + b"\x01"
    body += u.GLOBAL_GUID + struct.pack("<I", 0x27) + bytes(48)
    store = u.parse_varstored(b"VARS" + struct.pack("<IQQ", 1, 1, len(body)) + body)
    assert store.names() == ["PK"] and store.variables[0].attributes == 0x27


@pytest.mark.parametrize(
    "raw",
    [
        b"VAR",
        b"VARX" + bytes(20),
        b"VARS" + struct.pack("<IQQ", 3, 0, 0),
        b"VARS" + struct.pack("<IQQ", 2, 0, 0),  # no ancillary data
        b"VARS" + struct.pack("<IQQ", 1, 1, 0),  # a variable that is not there
        b"VARS" + struct.pack("<IQQ", 1, 0, 0) + b"x",  # trailing bytes
    ],
)
def test_malformed_stores_are_refused(raw: bytes) -> None:
    with pytest.raises(u.StoreError):
        u.parse_varstored(raw)


def test_not_base64_is_refused() -> None:
    with pytest.raises(u.StoreError):
        u.decode("not base64!")


@needs_ovmf
def test_edk2_images_hold_what_they_are_given() -> None:
    template = (OVMF / "OVMF_VARS_4M.fd").read_bytes()
    assert u.read_edk2(template).variables == []
    image = u.write_edk2(template, sample())
    assert len(image) == len(template)
    assert facts(u.read_edk2(image)) == facts(sample())
    big = u.VarStore([u.Variable(f"V{i}", u.GLOBAL_GUID, 7, bytes(50000)) for i in range(6)])
    with pytest.raises(u.StoreError):
        u.write_edk2(template, big)
    with pytest.raises(u.StoreError):
        u.read_edk2(bytes(4096))


@needs_ovmf
def test_the_distributions_enrolled_store_reads_as_secure_boot_keys() -> None:
    store = u.read_edk2((OVMF / "OVMF_VARS_4M.ms.fd").read_bytes())
    for name in ("PK", "KEK", "db", "dbx"):
        var = store.get(name, u.security_guid(name))
        assert var is not None and var.attributes == u.SECURE_ATTRIBUTES
    kek = store.get("KEK", u.GLOBAL_GUID)
    assert kek is not None and u.x509_certificates(kek.data)


def test_auth_files_and_signature_lists() -> None:
    stamp = bytes(range(16))
    lists = u.x509_siglist(b"DER-1") + u.x509_siglist(b"DER-22", owner=b"o" * 16)
    assert u.parse_auth_file(u.auth_file(stamp, lists)) == (stamp, lists)
    assert u.x509_certificates(lists) == [b"DER-1", b"DER-22"]
    with pytest.raises(u.StoreError):
        u.parse_auth_file(stamp + bytes(24))
