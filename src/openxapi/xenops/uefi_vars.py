"""UEFI variable stores in the two forms a VM's variables take here.

The record keeps them as the reference's varstored serialises them (base64 in
``VM.NVRAM["EFI-variables"]``); OVMF keeps them in an edk2 variable-store flash image.
Both hold the same facts per variable (name, vendor GUID, attributes, data, timestamp),
so a store converts losslessly between the two apart from firmware-private extras.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass, field

#: The EFI global-variable GUID (PK, KEK, Boot####...) and the image-security one (db, dbx).
GLOBAL_GUID = bytes.fromhex("61dfe48bca93d211aa0d00e098032b8c")
SECURITY_DB_GUID = bytes.fromhex("cbb219d73a3d9645a3bcdad00e67656f")
#: The signature-list types of X.509 certificates and the PKCS#7 certificate type.
CERT_X509_GUID = bytes.fromhex("a159c0a5e494a74a87b5ab155c2bf072")
CERT_PKCS7_GUID = bytes.fromhex("9dd2af4adf68ee498aa9347d375665a7")

NON_VOLATILE = 0x1
BOOTSERVICE_ACCESS = 0x2
RUNTIME_ACCESS = 0x4
TIME_AUTHENTICATED = 0x20
APPEND_WRITE = 0x40
#: The attributes of PK, KEK, db and dbx as firmware and varstored set them.
SECURE_ATTRIBUTES = NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS | TIME_AUTHENTICATED

NAME_LIMIT = 4096
DATA_LIMIT = 57344
_MAGIC = b"VARS"
_HEADER = struct.Struct("<4sIQQ")  # magic, version, count, data length
_ANCILLARY_V2 = 8 + 0x104  # the MOR key and the PPI data of version 2
_FIXED = 8 + 8 + 16 + 4 + 16 + 32  # lengths, GUID, attributes, timestamp, cert


class StoreError(ValueError):
    """A variable store that cannot be read."""


@dataclass(slots=True)
class Variable:
    """One UEFI variable; ``name`` without its terminating NUL."""

    name: str
    guid: bytes
    attributes: int
    data: bytes
    timestamp: bytes = bytes(16)
    cert: bytes = bytes(32)

    @property
    def key(self) -> tuple[str, bytes]:
        return (self.name, self.guid)


@dataclass(slots=True)
class VarStore:
    """The variables of one VM, with the ancillary bytes varstored keeps beside them."""

    variables: list[Variable] = field(default_factory=list)
    ancillary: bytes = bytes(_ANCILLARY_V2)

    def get(self, name: str, guid: bytes) -> Variable | None:
        return next((v for v in self.variables if v.key == (name, guid)), None)

    def put(self, var: Variable) -> None:
        """Add ``var``, replacing a variable of the same name and GUID in place."""
        for i, old in enumerate(self.variables):
            if old.key == var.key:
                self.variables[i] = var
                return
        self.variables.append(var)

    def remove(self, name: str, guid: bytes) -> bool:
        before = len(self.variables)
        self.variables = [v for v in self.variables if v.key != (name, guid)]
        return len(self.variables) != before

    def names(self) -> list[str]:
        return [v.name for v in self.variables]


def security_guid(name: str) -> bytes:
    """The vendor GUID of a Secure Boot database variable."""
    return GLOBAL_GUID if name in ("PK", "KEK") else SECURITY_DB_GUID


# ---- varstored serialisation --------------------------------------------------------
def _encode_name(name: str) -> bytes:
    return name.encode("utf-16-le", "surrogatepass")


def _decode_name(raw: bytes) -> str:
    return raw.decode("utf-16-le", "replace").rstrip("\0")


def parse_varstored(raw: bytes) -> VarStore:
    """A store from varstored's serialisation (versions 1 and 2), checked as it checks."""
    if len(raw) < _HEADER.size:
        raise StoreError("the store is shorter than its header")
    magic, version, count, _ = _HEADER.unpack_from(raw)
    if magic != _MAGIC or version > 2:
        raise StoreError("not a variable store of a known version")
    pos = _HEADER.size
    ancillary = bytes(_ANCILLARY_V2)
    if version == 2:
        if len(raw) - pos < _ANCILLARY_V2:
            raise StoreError("the store is shorter than its header")
        ancillary = raw[pos : pos + _ANCILLARY_V2]
        pos += _ANCILLARY_V2
    rem = len(raw) - pos
    store = VarStore(ancillary=ancillary)
    for _ in range(count):
        if rem < _FIXED:
            raise StoreError("a variable runs past the end of the store")
        rem -= _FIXED
        (name_len,) = struct.unpack_from("<Q", raw, pos)
        if name_len == 0 or name_len > min(rem, NAME_LIMIT):
            raise StoreError("a variable name has a bad length")
        name = raw[pos + 8 : pos + 8 + name_len]
        pos += 8 + name_len
        rem -= name_len
        (data_len,) = struct.unpack_from("<Q", raw, pos)
        if data_len == 0 or data_len > min(rem, DATA_LIMIT):
            raise StoreError("a variable's data has a bad length")
        data = raw[pos + 8 : pos + 8 + data_len]
        pos += 8 + data_len
        rem -= data_len
        guid = raw[pos : pos + 16]
        (attributes,) = struct.unpack_from("<I", raw, pos + 16)
        timestamp = raw[pos + 20 : pos + 36]
        cert = raw[pos + 36 : pos + 68]
        pos += 68
        store.variables.append(
            Variable(_decode_name(name), guid, attributes, data, timestamp, cert)
        )
    if rem:
        raise StoreError(f"{rem} bytes more than the variables hold")
    return store


def serialize_varstored(store: VarStore) -> bytes:
    """varstored's version-2 serialisation of the non-volatile variables of ``store``."""
    body = bytearray()
    count = 0
    for v in store.variables:
        if not v.attributes & NON_VOLATILE or not v.data:
            continue
        name = _encode_name(v.name)
        body += struct.pack("<Q", len(name)) + name
        body += struct.pack("<Q", len(v.data)) + v.data
        body += v.guid + struct.pack("<I", v.attributes) + v.timestamp + v.cert
        count += 1
    ancillary = store.ancillary.ljust(_ANCILLARY_V2, b"\0")[:_ANCILLARY_V2]
    return _HEADER.pack(_MAGIC, 2, count, len(body)) + ancillary + bytes(body)


def decode(blob: str) -> VarStore:
    """The store of a ``NVRAM["EFI-variables"]`` value."""
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise StoreError("the store is not base64") from None
    return parse_varstored(raw)


def encode(store: VarStore) -> str:
    return base64.b64encode(serialize_varstored(store)).decode()


# ---- edk2 (OVMF) variable-store flash images ----------------------------------------
_NVDATA_GUID = bytes.fromhex("8d2bf1ff96768b4ca9852747075b4f50")
_AUTH_STORE_GUID = bytes.fromhex("782cf3aa7b949a43a1802e144ec37792")
_VAR_HEADER = struct.Struct("<HBxIQ16sIII16s")  # id, state, attrs, count, time, pk, sizes, guid
_VAR_ADDED = 0x3F
_VAR_IN_DELETED_TRANSITION = 0x3E


def _store_range(image: bytes) -> tuple[int, int]:
    """Where the variables of an edk2 flash image live: (first byte, end)."""
    if len(image) < 0x48 or image[16:32] != _NVDATA_GUID or image[40:44] != b"_FVH":
        raise StoreError("not an edk2 variable-store image")
    (header_len,) = struct.unpack_from("<H", image, 48)
    store = header_len
    if image[store : store + 16] != _AUTH_STORE_GUID:
        raise StoreError("the image does not hold authenticated variables")
    (size,) = struct.unpack_from("<I", image, store + 16)
    if store + size > len(image):
        raise StoreError("the variable store runs past the image")
    return store + 28, store + size


def read_edk2(image: bytes) -> VarStore:
    """The live variables of an edk2 variable-store image, in the order they lie there."""
    start, end = _store_range(image)
    found: dict[tuple[str, bytes], Variable] = {}
    pos = start
    while pos + _VAR_HEADER.size <= end:
        sid, st, attrs, _, time, _, name_size, data_size, guid = _VAR_HEADER.unpack_from(image, pos)
        if sid != 0x55AA:
            break
        name_at = pos + _VAR_HEADER.size
        data_at = name_at + name_size
        if data_at + data_size > end:
            raise StoreError("a variable runs past the end of the store")
        if st in (_VAR_ADDED, _VAR_IN_DELETED_TRANSITION):
            name = _decode_name(image[name_at:data_at])
            var = Variable(name, guid, attrs, image[data_at : data_at + data_size], time)
            if st == _VAR_ADDED or var.key not in found:
                found.pop(var.key, None)
                found[var.key] = var
        pos = (data_at + data_size + 3) & ~3
    return VarStore(variables=list(found.values()))


def write_edk2(template: bytes, store: VarStore) -> bytes:
    """``template`` (an edk2 variable-store image) holding exactly the variables of
    ``store``."""
    start, end = _store_range(template)
    out = bytearray()
    for v in store.variables:
        name = _encode_name(v.name) + b"\0\0"
        out += _VAR_HEADER.pack(
            0x55AA, _VAR_ADDED, v.attributes, 0, v.timestamp, 0, len(name), len(v.data), v.guid
        )
        out += name + v.data
        out += b"\xff" * (-len(out) % 4)
    if len(out) > end - start:
        raise StoreError("the variables do not fit the firmware's variable store")
    out += b"\xff" * (end - start - len(out))
    return template[:start] + bytes(out) + template[end:]


# ---- Secure Boot auth files (what varstored enrols keys from) -----------------------
_AUTH_HEADER = struct.Struct("<IHH16s")  # dwLength, wRevision, wCertificateType, CertType


def auth_file(timestamp: bytes, data: bytes) -> bytes:
    """An auth file (EFI_VARIABLE_AUTHENTICATION_2 with no signature) setting ``data``."""
    return timestamp + _AUTH_HEADER.pack(_AUTH_HEADER.size, 0x0200, 0x0EF1, CERT_PKCS7_GUID) + data


def parse_auth_file(raw: bytes) -> tuple[bytes, bytes]:
    """The timestamp and the signature lists an auth file sets."""
    if len(raw) < 16 + _AUTH_HEADER.size:
        raise StoreError("the auth file is shorter than its header")
    length, _, cert_type, guid = _AUTH_HEADER.unpack_from(raw, 16)
    if cert_type != 0x0EF1 or guid != CERT_PKCS7_GUID or length < _AUTH_HEADER.size:
        raise StoreError("the auth file has no PKCS#7 authentication header")
    if 16 + length > len(raw) or len(raw) - 16 - length > DATA_LIMIT:
        raise StoreError("the auth file has a bad length")
    return raw[:16], raw[16 + length :]


def x509_certificates(siglists: bytes) -> list[bytes]:
    """The DER X.509 certificates in a run of EFI signature lists."""
    out: list[bytes] = []
    pos = 0
    while pos + 28 <= len(siglists):
        kind = siglists[pos : pos + 16]
        total, header, size = struct.unpack_from("<III", siglists, pos + 16)
        if total < 28 + header or pos + total > len(siglists):
            break
        if kind == CERT_X509_GUID and size > 16:
            at = pos + 28 + header
            while at + size <= pos + total:
                out.append(siglists[at + 16 : at + size])  # after the owner GUID
                at += size
        pos += total
    return out


def x509_siglist(der: bytes, owner: bytes = bytes(16)) -> bytes:
    """One EFI signature list holding the certificate ``der``."""
    size = 16 + len(der)
    return CERT_X509_GUID + struct.pack("<III", 28 + size, 0, size) + owner + der
