"""UEFI variable stores of VMs and the pool's Secure Boot certificates, as the reference's
varstored and its tools treat them.

The pool's certificates are varstored auth files (PK, KEK, db, dbx) in a base64 tar:
``pool.uefi_certificates`` holds the host's defaults, ``pool.custom_uefi_certificates``
an override when custom certificates are allowed. A VM's first UEFI boot enrols them into
its store, and whatever its firmware writes later is saved back into
``VM.NVRAM["EFI-variables"]`` unless ``NVRAM["EFI-variables-on-boot"]`` is "reset".
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import functools
import io
import posixpath
import tarfile
from typing import Any

from cryptography import x509

from openxapi.api.state import ServerState
from openxapi.errors import ApiError
from openxapi.xenops import uefi_vars
from openxapi.xenops.backend import DomainBackend, FirmwareSpec

EFI_VARIABLES = "EFI-variables"
ON_BOOT = "EFI-variables-on-boot"
#: The order varstored enrols keys in (PK last, so the store leaves setup mode last) and
#: whether a missing auth file stops the enrolment.
ENROLMENT = (("dbx", False), ("db", True), ("KEK", True), ("PK", True))
SECURE_NAMES = ("PK", "KEK", "db", "dbx")
#: Certificates expiring within this time make an update of a VM's certificates due.
EXPIRY_WINDOW = dt.timedelta(days=365)


# ---- what a VM boots with -------------------------------------------------------------
def truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def uses_uefi(rec: dict[str, Any]) -> bool:
    """The VM's firmware as the reference reads HVM_boot_params["firmware"] (BIOS if absent)."""
    firmware = rec["HVM_boot_params"].get("firmware")
    if firmware is None or firmware == "bios":
        return False
    if firmware != "uefi":
        raise ApiError("INVALID_VALUE", "HVM-boot-params['firmware']", firmware)
    on_boot = rec["NVRAM"].get(ON_BOOT)
    if on_boot is not None and on_boot not in ("persist", "reset"):
        raise ApiError("INVALID_VALUE", "NVRAM['EFI-variables-on-boot']", on_boot)
    return True


def persists(rec: dict[str, Any]) -> bool:
    """Whether what the firmware writes is kept (the store is not reset at each boot)."""
    return bool(rec["NVRAM"].get(ON_BOOT, "persist") != "reset")


def store_of(rec: dict[str, Any]) -> uefi_vars.VarStore | None:
    """The VM's variable store (None when it has none); INTERNAL_ERROR when malformed, as
    the reference's varstored tools fail on it."""
    blob = rec["NVRAM"].get(EFI_VARIABLES)
    if blob is None:
        return None
    try:
        return uefi_vars.decode(blob)
    except uefi_vars.StoreError as e:
        raise ApiError(
            "INTERNAL_ERROR", f"varstored {rec['uuid']}: the EFI variables are malformed: {e}"
        ) from None


def save_store(state: ServerState, ref: str, blob: str) -> None:
    """NVRAM["EFI-variables"] becomes ``blob``, the other NVRAM keys kept (the reference's
    set_NVRAM_EFI_variables, which no power state stops)."""
    nvram = state.record("VM", ref)["NVRAM"]
    if nvram.get(EFI_VARIABLES) != blob:
        state.store.update("VM", ref, {"NVRAM": {**nvram, EFI_VARIABLES: blob}})


def firmware_spec(state: ServerState, ref: str) -> FirmwareSpec | None:
    """The firmware a VM boots with (None: BIOS). Its first boot enrols the pool's keys and
    a pending certificate update is applied, both saved as varstored saves them."""
    rec = state.record("VM", ref)
    if not uses_uefi(rec):
        return None
    platform = rec["platform"]
    if platform.get("secureboot") == "auto":
        value = "true" if active_certificates(state) else "false"
        platform = {**platform, "secureboot": value}
        state.store.update("VM", ref, {"platform": platform})
    store = store_of(rec)
    if store is None:
        store = uefi_vars.VarStore()
        enrol(store, active_auth_files(state), [])
        if not store.variables:
            return FirmwareSpec(truthy(platform.get("secureboot")), "")
        if persists(rec):
            save_store(state, ref, uefi_vars.encode(store))
    elif rec["secureboot_certificates_state"] == "update_on_boot":
        update_certificates(store, active_auth_files(state))
        if persists(rec):
            save_store(state, ref, uefi_vars.encode(store))
            state.store.update("VM", ref, {"secureboot_certificates_state": "ok"})
    return FirmwareSpec(truthy(platform.get("secureboot")), uefi_vars.encode(store))


# ---- Secure Boot keys in a store ------------------------------------------------------
def enrol(store: uefi_vars.VarStore, files: dict[str, bytes], out: list[str]) -> None:
    """Set dbx, db, KEK and PK from the auth files as varstored's key set-up does, logging
    to ``out`` what its tools print; stops before PK when a required file is missing."""
    for name, required in ENROLMENT:
        raw = files.get(f"{name}.auth")
        if raw is None:
            if not required:
                out.append(f"setup_keys: Continuing keys setup despite missing optional {name}\n")
                continue
            return
        out.append(f"setup_keys: Setting {name}...\n")
        try:
            timestamp, data = uefi_vars.parse_auth_file(raw)
        except uefi_vars.StoreError as e:
            raise ApiError("INTERNAL_ERROR", f"varstored: {name}.auth: {e}") from None
        guid = uefi_vars.security_guid(name)
        old = store.get(name, guid)
        if name == "dbx" and old is not None:  # dbx is appended to
            data = old.data + data
        store.put(uefi_vars.Variable(name, guid, uefi_vars.SECURE_ATTRIBUTES, data, timestamp))


def _certs(store: uefi_vars.VarStore, name: str) -> list[bytes]:
    var = store.get(name, uefi_vars.security_guid(name))
    return uefi_vars.x509_certificates(var.data) if var is not None else []


def _offered(files: dict[str, bytes], name: str) -> list[bytes]:
    raw = files.get(f"{name}.auth")
    if raw is None:
        return []
    try:
        return uefi_vars.x509_certificates(uefi_vars.parse_auth_file(raw)[1])
    except uefi_vars.StoreError:
        return []


def _expires_soon(der: bytes, now: dt.datetime) -> bool:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return False
    return bool(cert.not_valid_after_utc < now + EXPIRY_WINDOW)


def certificates_state(store: uefi_vars.VarStore | None, files: dict[str, bytes]) -> str:
    """ "update_available" when the store's KEK or db hold a certificate that expires soon
    (or has expired) and the pool offers KEK or db certificates the store lacks."""
    if store is None or store.get("PK", uefi_vars.GLOBAL_GUID) is None:
        return "ok"
    now = dt.datetime.now(dt.UTC)
    held = {name: _certs(store, name) for name in ("KEK", "db")}
    if not any(_expires_soon(c, now) for certs in held.values() for c in certs):
        return "ok"
    missing = any(c not in held[n] for n in ("KEK", "db") for c in _offered(files, n))
    return "update_available" if missing else "ok"


def update_certificates(store: uefi_vars.VarStore, files: dict[str, bytes]) -> None:
    """Append to KEK and db the pool's certificates they lack."""
    for name in ("KEK", "db"):
        var = store.get(name, uefi_vars.security_guid(name))
        if var is None:
            continue
        held = uefi_vars.x509_certificates(var.data)
        extra = b"".join(uefi_vars.x509_siglist(c) for c in _offered(files, name) if c not in held)
        if extra:
            var.data += extra


# ---- the pool's certificates ------------------------------------------------------------
def pack(files: dict[str, bytes]) -> str:
    """A base64 tar of auth files (reproducible: no times, no owners)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return base64.b64encode(buf.getvalue()).decode()


def unpack(value: str) -> dict[str, bytes]:
    """The files of a base64 tar by base name; none when it is not one (the reference
    then extracts nothing)."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return {}
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for member in tar.getmembers():
                f = tar.extractfile(member) if member.isfile() else None
                if f is not None and member.size <= 1 << 20:
                    out[posixpath.basename(member.name)] = f.read()
    except (tarfile.TarError, OSError, EOFError):
        return {}
    return out


@functools.cache
def default_certificates() -> str:
    """The host's default auth files as a base64 tar ("" when it has none)."""
    from openxapi.xenops.qemu.firmware import default_keys  # QEMU's modules load on demand

    files = default_keys()
    return pack(files) if files else ""


def custom_allowed(state: ServerState) -> bool:
    return state.config.allow_custom_uefi_certs


def active_certificates(state: ServerState) -> str:
    """The certificates VMs get: the custom ones when allowed and set, else the pool's."""
    pool = state.record("pool", state.pool_ref)
    if custom_allowed(state) and pool["custom_uefi_certificates"]:
        return str(pool["custom_uefi_certificates"])
    return str(pool["uefi_certificates"]) or default_certificates()


def active_auth_files(state: ServerState) -> dict[str, bytes]:
    value = active_certificates(state)
    return unpack(value) if value else {}


def sync_certificates(state: ServerState) -> None:
    """host.uefi_certificates and pool.uefi_certificates show the host's default auth
    files, as the reference refreshes them at start-up."""
    value = default_certificates()
    for cls, ref in (("host", state.host_ref), ("pool", state.pool_ref)):
        rec = state.store.get(cls, ref)
        if rec is not None and rec["uefi_certificates"] != value:
            state.store.update(cls, ref, {"uefi_certificates": value})


# ---- variables written by a running firmware ------------------------------------------
def install(state: ServerState, backend: DomainBackend) -> None:
    """Keep what domains' firmware writes (the backend reports it) in their VMs' NVRAM."""
    pending: set[asyncio.Task[None]] = set()

    def saved(uuid: str, blob: str) -> None:
        ref = state.store.ref_of_uuid("VM", uuid)
        rec = state.store.get("VM", ref) if ref is not None else None
        if ref is None or rec is None or not persists(rec):
            return
        if rec["NVRAM"].get(EFI_VARIABLES) == blob:
            return
        save_store(state, ref, blob)
        try:
            task = asyncio.get_running_loop().create_task(state.store.sync())
        except RuntimeError:
            return
        pending.add(task)
        task.add_done_callback(pending.discard)

    backend.set_variables_listener(saved)
    sync_certificates(state)
