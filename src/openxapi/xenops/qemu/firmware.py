"""UEFI domains in QEMU: OVMF from pflash, with a per-domain variable-store image.

The image is made at launch from the variable store the record holds and read back while
the domain runs and when it goes, so what the firmware (or the guest through it) writes
reaches the record, as varstored's writes do in the reference. Secure Boot needs OVMF's
SMM build, hence a q35 machine with SMM and a secure flash.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from openxapi.xenops import uefi_vars
from openxapi.xenops.backend import BackendError, DomainSpec, FirmwareSpec

log = logging.getLogger("openxapi.qemu")

OVMF_DIR = Path(os.environ.get("OPENXAPI_OVMF_DIR", "/usr/share/OVMF"))
CODE = "OVMF_CODE_4M.fd"
SECURE_CODE = "OVMF_CODE_4M.secboot.fd"
#: The empty variable store every domain's image is made from.
VARS_TEMPLATE = "OVMF_VARS_4M.fd"
#: The distribution's store with Secure Boot keys enrolled: the host's default keys.
KEYS_TEMPLATE = "OVMF_VARS_4M.ms.fd"
#: The name of a domain's variable-store image (a link) inside its directory.
VARS_LINK = "efivars.fd"


def installed() -> bool:
    return (OVMF_DIR / CODE).is_file() and (OVMF_DIR / VARS_TEMPLATE).is_file()


def qemu_args(fw: FirmwareSpec | None, domain_dir: Path) -> tuple[str, list[str]]:
    """The machine type and the extra arguments for a domain with firmware ``fw``
    (None: the machine's own BIOS)."""
    if fw is None:
        return "pc", []
    code = OVMF_DIR / (SECURE_CODE if fw.secureboot else CODE)
    argv = [
        "-drive",
        f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
        "-drive",
        f"if=pflash,format=raw,unit=1,file={domain_dir / VARS_LINK}",
    ]
    if not fw.secureboot:
        return "pc", argv
    argv += [
        "-global",
        "driver=cfi.pflash01,property=secure,value=on",
        "-global",
        "ICH9-LPC.disable_s3=1",
    ]
    return "q35,smm=on", argv


def default_keys() -> dict[str, bytes]:
    """PK, KEK, db and dbx of the distribution's enrolled store as varstored auth files
    (empty when OVMF is not installed)."""
    try:
        store = uefi_vars.read_edk2((OVMF_DIR / KEYS_TEMPLATE).read_bytes())
    except (OSError, uefi_vars.StoreError):
        return {}
    out: dict[str, bytes] = {}
    for name in ("PK", "KEK", "db", "dbx"):
        var = store.get(name, uefi_vars.security_guid(name))
        if var is not None:
            out[f"{name}.auth"] = uefi_vars.auth_file(var.timestamp, var.data)
    return out


class EfiVarsImages:
    """The variable-store images of one backend's UEFI domains.

    An image lives outside the domain's directory (which holds a link to it), so a new
    QEMU instance of the same domain (a local migration) opens the same image.
    """

    def __init__(self, run_root: Path, report: Callable[[str, str], None]) -> None:
        self.root = run_root / "efivars"
        self.report = report
        self._last: dict[str, tuple[float, str]] = {}

    def image(self, uuid: str) -> Path:
        return self.root / f"{uuid}.fd"

    def prepare(self, spec: DomainSpec, domain_dir: Path) -> None:
        """Write the image ``spec`` starts from and link it into ``domain_dir``."""
        fw = spec.firmware
        if fw is None:
            return
        if not installed():
            raise BackendError(spec.uuid, f"UEFI firmware (OVMF) is not installed in {OVMF_DIR}")
        try:
            store = uefi_vars.decode(fw.variables) if fw.variables else uefi_vars.VarStore()
            image = uefi_vars.write_edk2((OVMF_DIR / VARS_TEMPLATE).read_bytes(), store)
        except (OSError, uefi_vars.StoreError) as e:
            raise BackendError(spec.uuid, f"the UEFI variable store: {e}") from None
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.image(spec.uuid)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(image)
        os.replace(tmp, path)
        link = domain_dir / VARS_LINK
        link.unlink(missing_ok=True)
        os.symlink(path, link)
        self._last[spec.uuid] = (path.stat().st_mtime, uefi_vars.encode(uefi_vars.read_edk2(image)))

    def poll(self, uuid: str) -> None:
        """Report the domain's variables when its image changed since last looked at."""
        path = self.image(uuid)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return
        last = self._last.get(uuid)
        if last is not None and last[0] == mtime:
            return
        try:
            blob = uefi_vars.encode(uefi_vars.read_edk2(path.read_bytes()))
        except (OSError, uefi_vars.StoreError) as e:
            log.warning("domain %s: its UEFI variable store is unreadable: %s", uuid, e)
            return
        self._last[uuid] = (mtime, blob)
        if last is None or last[1] != blob:
            self.report(uuid, blob)

    def gone(self, uuid: str, domain_dir: Path) -> None:
        """The domain's process went: report its last variables; the image goes once no
        other instance of the domain links to it."""
        if not (domain_dir / VARS_LINK).is_symlink():
            return
        self.poll(uuid)
        path = self.image(uuid)
        for link in self.root.parent.glob(f"*/{VARS_LINK}"):
            if link.parent != domain_dir and link.is_symlink() and link.resolve() == path:
                return
        self._last.pop(uuid, None)
        with contextlib.suppress(OSError):
            path.unlink()
            self.root.rmdir()  # once it holds no image
