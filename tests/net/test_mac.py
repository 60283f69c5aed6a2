"""MAC derivation and validation as the reference does them (storage-network-http.md §2.3)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openxapi.net.mac import generate_mac, is_valid_mac, mac_from_bytes


def reference_chain(device: int, seed: str) -> str:
    """The reference's recursion, written out independently: chain n f acc."""

    def md5(b: bytes) -> bytes:
        return hashlib.md5(b).digest()

    def chain(n: int, acc: bytes) -> bytes:
        return md5(acc) if n == 0 else chain(n - 1, md5(acc))

    h = chain(device * 2, seed.encode())
    h2 = md5(h)
    octets = [h[0], h[1], h[2], h[3], h2[1], h2[2]]
    octets[0] = (octets[0] | 0x2) & ~0x1
    return ":".join(format(o, "02x") for o in octets)


@given(st.integers(min_value=0, max_value=40), st.text(max_size=40))
def test_generate_mac_matches_the_reference_recursion(device: int, seed: str) -> None:
    assert generate_mac(device, seed) == reference_chain(device, seed)


def test_known_vectors() -> None:
    # md5("seed") = fe4c0f30aa35...: its first four octets, then octets 1-2 of md5 of that.
    assert generate_mac(0, "seed") == "fe:4c:0f:30:75:c6"
    assert generate_mac(1, "seed") == "ee:ce:60:c9:09:aa"
    assert generate_mac(3, "4b0d4b2c-7b0e-4f4e-9b53-2f1b6e3c0a11") == "36:e2:65:55:df:18"


@given(st.integers(min_value=0, max_value=30), st.uuids())
def test_generated_macs_are_local_unicast_and_valid(device: int, seed: object) -> None:
    mac = generate_mac(device, str(seed))
    assert is_valid_mac(mac)
    first = int(mac[:2], 16)
    assert first & 0x02 and not first & 0x01
    assert mac == mac.lower()


def test_devices_of_one_seed_differ_and_repeat() -> None:
    macs = [generate_mac(d, "a-seed") for d in range(16)]
    assert len(set(macs)) == 16
    assert macs == [generate_mac(d, "a-seed") for d in range(16)]
    assert generate_mac(0, "a-seed") != generate_mac(0, "another-seed")


def test_negative_device_is_refused() -> None:
    with pytest.raises(ValueError):
        generate_mac(-1, "s")


@pytest.mark.parametrize(
    ("mac", "ok"),
    [
        ("00:11:22:33:44:55", True),
        ("AA:bb:CC:dd:EE:ff", True),
        ("", False),
        ("00:11:22:33:44", False),
        ("00:11:22:33:44:55:66", False),
        ("0:11:22:33:44:55", False),
        ("00-11-22-33-44-55", False),
        ("00:11:22:33:44:5g", False),
        ("000:11:22:33:44:55", False),
        ("00:11:22:33:44:55\n", False),
    ],
)
def test_is_valid_mac(mac: str, ok: bool) -> None:
    assert is_valid_mac(mac) is ok


def test_mac_from_bytes_sets_local_and_clears_multicast() -> None:
    assert mac_from_bytes(bytes([0xFF, 1, 2, 3, 4, 5])) == "fe:01:02:03:04:05"
    assert mac_from_bytes(bytes([0x00, 0, 0, 0, 0, 0])) == "02:00:00:00:00:00"
    with pytest.raises(ValueError):
        mac_from_bytes(b"\x00" * 5)
