"""OVMF for UEFI domains: the machine and flash arguments, and the variable-store images
made from the record's store and read back from what the firmware wrote."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from openxapi.xenops import uefi_vars as u
from openxapi.xenops.backend import DomainSpec, FirmwareSpec
from openxapi.xenops.qemu import firmware
from openxapi.xenops.qemu.cmdline import DomainPaths, build

pytestmark = pytest.mark.skipif(not firmware.installed(), reason="OVMF is not installed")


def spec(fw: FirmwareSpec | None) -> DomainSpec:
    return DomainSpec(uuid="u-1", name="vm", memory=256 << 20, vcpus=1, firmware=fw)


def test_bios_uefi_and_secure_boot_machines() -> None:
    paths = DomainPaths(Path("/r/u-1"))
    bios = build(spec(None), paths)
    assert "pc" in bios and not any("pflash" in a for a in bios)
    uefi = build(spec(FirmwareSpec()), paths)
    assert uefi[uefi.index("-machine") + 1] == "pc"
    flash = [uefi[i + 1] for i, a in enumerate(uefi) if a == "-drive" and "pflash" in uefi[i + 1]]
    assert flash == [
        f"if=pflash,format=raw,unit=0,readonly=on,file={firmware.OVMF_DIR / firmware.CODE}",
        "if=pflash,format=raw,unit=1,file=/r/u-1/efivars.fd",
    ]
    secure = build(spec(FirmwareSpec(secureboot=True)), paths)
    assert secure[secure.index("-machine") + 1] == "q35,smm=on"
    assert "driver=cfi.pflash01,property=secure,value=on" in secure
    assert any(a.endswith(firmware.SECURE_CODE) for a in secure)


def test_images_follow_the_firmwares_writes(tmp_path: Path) -> None:
    reports: list[tuple[str, str]] = []
    images = firmware.EfiVarsImages(tmp_path, lambda uuid, blob: reports.append((uuid, blob)))
    store = u.VarStore([u.Variable("Lang", u.GLOBAL_GUID, 7, b"eng\0")])
    domain = tmp_path / "u-1"
    domain.mkdir()
    images.prepare(spec(FirmwareSpec(variables=u.encode(store))), domain)
    link = domain / firmware.VARS_LINK
    assert link.resolve() == images.image("u-1")
    images.poll("u-1")
    assert reports == []  # nothing written yet
    store.put(u.Variable("MTC", u.GLOBAL_GUID, 7, b"\x01\0\0\0"))
    image = u.write_edk2(images.image("u-1").read_bytes(), store)
    images.image("u-1").write_bytes(image)
    os.utime(images.image("u-1"), (1, 1))
    images.poll("u-1")
    assert [u.decode(b).names() for _, b in reports] == [["Lang", "MTC"]]
    # a second instance of the domain (a local migration) keeps the image alive
    other = tmp_path / "u-1.incoming"
    other.mkdir()
    os.symlink(os.readlink(link), other / firmware.VARS_LINK)
    images.gone("u-1", domain)
    shutil.rmtree(domain)  # as the backend removes a domain's directory once it is gone
    assert images.image("u-1").exists()
    images.gone("u-1", other)
    assert not images.image("u-1").exists() and not images.root.exists()
    assert len(reports) == 1


def test_a_bad_store_fails_the_launch(tmp_path: Path) -> None:
    images = firmware.EfiVarsImages(tmp_path, lambda uuid, blob: None)
    with pytest.raises(Exception, match="variable store"):
        images.prepare(spec(FirmwareSpec(variables="AAAA")), tmp_path)


def test_default_keys_are_the_distributions_enrolled_ones() -> None:
    keys = firmware.default_keys()
    assert sorted(keys) == ["KEK.auth", "PK.auth", "db.auth", "dbx.auth"]
    stamp, lists = u.parse_auth_file(keys["db.auth"])
    assert len(stamp) == 16 and u.x509_certificates(lists)
