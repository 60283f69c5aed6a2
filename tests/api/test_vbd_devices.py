"""VBD device names: validity, the readings that make two names clash, autodetect."""

from __future__ import annotations

import pytest

from openxapi.api import vbd_devices as d


@pytest.mark.parametrize(
    ("name", "vbd_type", "valid"),
    [
        ("autodetect", "Disk", True),
        ("0", "Disk", True),
        ("254", "CD", True),
        ("xvda", "Disk", True),
        ("xvdp", "Disk", True),
        ("xvdq", "Disk", False),
        ("hdb", "CD", True),
        ("sdc2", "Disk", True),
        ("fda", "Floppy", True),
        ("fdc", "Floppy", False),
        ("3", "Floppy", False),
        ("", "Disk", False),
        ("-1", "Disk", False),
        ("disk0", "Disk", False),
        ("xvd", "Disk", False),
    ],
)
def test_validity(name: str, vbd_type: str, valid: bool) -> None:
    assert d.is_valid(name, vbd_type) is valid


@pytest.mark.parametrize(
    ("a", "b", "clash"),
    [
        ("1", "xvdb", True),
        ("1", "hdb", True),
        ("xvdb", "hdb", False),
        ("1", "sdb", False),
        ("5", "xvdf", True),
        ("5", "hdf", False),
        ("0", "0", True),
        ("xvda", "xvda1", False),
        ("2", "", False),
        ("2", "not-a-device", False),
    ],
)
def test_clashes(a: str, b: str, clash: bool) -> None:
    assert d.clashes(a, d.used([b])) is clash
    assert d.clashes(b, d.used([a])) is clash or not d.readings(b)


def test_autodetect_takes_the_lowest_free_number() -> None:
    assert d.autodetect(set(), "Disk") == "0"
    assert d.autodetect(d.used(["0", "xvdb", "hdd"]), "Disk") == "2"
    assert d.autodetect(d.used(["2"]), "CD") == "0"
    assert d.autodetect(d.used([str(n) for n in range(255)]), "Disk") is None
    assert d.autodetect(d.used([str(n) for n in range(255)]), "Disk", control_domain=True) == "255"


def test_autodetect_floppies() -> None:
    assert d.autodetect(set(), "Floppy") == "fda"
    assert d.autodetect(d.used(["fda"]), "Floppy") == "fdb"
    assert d.autodetect(d.used(["fda", "fdb"]), "Floppy") is None


@pytest.mark.parametrize(
    ("userdevice", "hvm", "device"),
    [
        ("0", False, "xvda"),
        ("0", True, "hda"),
        ("3", True, "hdd"),
        ("4", True, "xvde"),
        ("25", False, "xvdz"),
        ("26", False, "xvdaa"),
        ("xvdc", True, "xvdc"),
    ],
)
def test_linux_names(userdevice: str, hvm: bool, device: str) -> None:
    assert d.linux_name(userdevice, hvm) == device
