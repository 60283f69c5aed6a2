"""The local account book: changes, file permissions, first-start root, locking."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

import pytest

from openxapi.auth.accounts import ROOT, AccountBook, AccountError


def test_add_list_verify(tmp_path: Path) -> None:
    book = AccountBook(tmp_path)
    acct = book.add("alice", "pw-a", ["vm-admin", "read-only"])
    assert acct.subject_identifier == "local:alice"
    book.add("bob", "pw-b", ["read-only"])
    assert [a.name for a in book.all()] == ["alice", "bob"]
    assert book.verify("alice", "pw-a") is not None
    assert book.verify("alice", "pw-b") is None
    assert book.verify("nobody", "pw-a") is None
    other = AccountBook(tmp_path)
    assert other.reload() is True
    assert other.get("alice") is not None
    assert other.get("alice").roles == ["vm-admin", "read-only"]  # type: ignore[union-attr]


def test_the_file_holds_hashes_only_and_is_private(tmp_path: Path) -> None:
    book = AccountBook(tmp_path)
    book.add("alice", "plain-secret", ["read-only"])
    path = tmp_path / "accounts.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "plain-secret" not in text
    assert json.loads(text)["accounts"]["alice"]["roles"] == ["read-only"]


def test_add_refuses_duplicates_bad_names_and_roles(tmp_path: Path) -> None:
    book = AccountBook(tmp_path)
    book.add("alice", "pw", ["read-only"])
    with pytest.raises(AccountError):
        book.add("alice", "pw", ["read-only"])
    for name in ("", "a b", "x" * 65, "semi;colon"):
        with pytest.raises(AccountError):
            book.add(name, "pw", ["read-only"])
    with pytest.raises(AccountError):
        book.add("carol", "pw", [])
    with pytest.raises(AccountError):
        book.add("carol", "pw", ["superhero"])
    assert [a.name for a in book.all()] == ["alice"]


def test_remove(tmp_path: Path) -> None:
    book = AccountBook(tmp_path)
    book.add("alice", "pw", ["read-only"])
    book.remove("alice")
    assert book.all() == []
    with pytest.raises(AccountError):
        book.remove("alice")
    book.ensure_root("r")
    with pytest.raises(AccountError):
        book.remove(ROOT)


def test_set_password(tmp_path: Path) -> None:
    book = AccountBook(tmp_path)
    book.add("alice", "old", ["read-only"])
    book.set_password("alice", "new")
    assert book.verify("alice", "new") is not None
    assert book.verify("alice", "old") is None
    fresh = AccountBook(tmp_path)
    fresh.reload()
    assert fresh.verify("alice", "new") is not None
    with pytest.raises(AccountError):
        book.set_password("nobody", "x")


def test_set_roles(tmp_path: Path) -> None:
    book = AccountBook(tmp_path)
    book.add("alice", "pw", ["read-only"])
    book.set_roles("alice", ["pool-admin"])
    assert book.get("alice").roles == ["pool-admin"]  # type: ignore[union-attr]
    with pytest.raises(AccountError):
        book.set_roles("alice", ["nope"])


def test_ensure_root_generates_a_password_once(tmp_path: Path) -> None:
    book = AccountBook(tmp_path)
    generated = book.ensure_root(None)
    assert generated and len(generated) >= 12
    root = book.verify(ROOT, generated)
    assert root is not None and root.roles == ["pool-admin"]
    assert book.ensure_root(None) is None
    assert book.ensure_root("other") is None
    assert AccountBook(tmp_path).verify(ROOT, "other") is None


def test_ensure_root_with_a_given_password(tmp_path: Path) -> None:
    book = AccountBook(tmp_path)
    assert book.ensure_root("given") is None
    assert book.verify(ROOT, "given") is not None


def test_reload_sees_changes_from_another_book(tmp_path: Path) -> None:
    a, b = AccountBook(tmp_path), AccountBook(tmp_path)
    a.add("alice", "pw", ["read-only"])
    b.reload()
    b.remove("alice")
    assert a.reload() is True
    assert a.get("alice") is None
    assert a.reload() is False


def test_missing_file_means_no_accounts(tmp_path: Path) -> None:
    book = AccountBook(tmp_path / "nowhere")
    assert book.reload() is False
    assert book.all() == []


def test_concurrent_changes_from_separate_books_are_all_kept(tmp_path: Path) -> None:
    names = [f"user{i}" for i in range(8)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(names))

    def add(name: str) -> None:
        try:
            book = AccountBook(tmp_path)
            barrier.wait()
            book.add(name, "pw", ["read-only"])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=add, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    book = AccountBook(tmp_path)
    book.reload()
    assert [a.name for a in book.all()] == sorted(names)
