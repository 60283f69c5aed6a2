"""The ISO 9660 writer, read back with isoinfo (genisoimage's reader)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from openxapi.storage.iso9660 import SECTOR, build, iso_name


def isoinfo(image: Path, *args: str) -> str:
    done = subprocess.run(["isoinfo", "-i", str(image), *args], capture_output=True, check=True)
    return done.stdout.decode()


def test_files_are_read_back_under_both_name_sets(tmp_path: Path) -> None:
    files = {
        "unattend.xml": b"<unattend/>\n",
        "big.bin": bytes(range(256)) * 40,  # spans several sectors
        "empty.txt": b"",
    }
    image = tmp_path / "cd.iso"
    data = build(files, "SYSPREP")
    assert len(data) % SECTOR == 0
    image.write_bytes(data)
    info = isoinfo(image, "-d")
    assert "Volume id: SYSPREP" in info
    assert "Joliet with UCS level 3 found" in info
    assert "UNATTEND.XML;1" in isoinfo(image, "-l")
    joliet = isoinfo(image, "-J", "-l")
    for name in files:
        assert f" {name} " in joliet
    for name, content in files.items():
        got = subprocess.run(
            ["isoinfo", "-i", str(image), "-J", "-x", f"/{name}"], capture_output=True, check=True
        ).stdout
        assert got == content
    plain = subprocess.run(
        ["isoinfo", "-i", str(image), "-x", "/UNATTEND.XML;1"], capture_output=True, check=True
    ).stdout
    assert plain == files["unattend.xml"]


def test_names_in_the_primary_descriptor() -> None:
    assert iso_name("unattend.xml") == "UNATTEND.XML;1"
    assert iso_name("a-long file name.text") == "A_LONG_F.TEX;1"
    assert iso_name("README") == "README.;1"


@pytest.mark.parametrize("name", ["", "a/b", "x" * 65])
def test_unusable_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        build({name: b"x"})
