"""Password hashing: argon2id hashes that verify the right password only."""

from __future__ import annotations

from openxapi.auth.passwords import hash_password, verify_password


def test_hash_verifies_the_password() -> None:
    h = hash_password("correct horse")
    assert h.startswith("$argon2id$")
    assert "correct horse" not in h
    assert verify_password(h, "correct horse")


def test_hash_rejects_other_passwords() -> None:
    h = hash_password("secret")
    assert not verify_password(h, "Secret")
    assert not verify_password(h, "")
    assert not verify_password(h, "secret ")


def test_hashes_are_salted() -> None:
    assert hash_password("same") != hash_password("same")


def test_garbage_hash_rejects() -> None:
    assert not verify_password("not a hash", "x")
    assert not verify_password("", "")


def test_unicode_password() -> None:
    h = hash_password("pässwörd✓")
    assert verify_password(h, "pässwörd✓")
    assert not verify_password(h, "passwORD")
