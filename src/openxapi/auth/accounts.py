"""The local account book: root and the accounts made with ``openxapi user``.

Kept in ``accounts.json`` in the data directory (mode 0600, replaced atomically and
fsync'd), so the command line can manage accounts whether or not the server runs; the
server mirrors each account as a ``subject`` record carrying its roles.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openxapi.auth.passwords import hash_password, verify_password

ROOT = "root"
ROLES = ("pool-admin", "pool-operator", "vm-power-admin", "vm-admin", "vm-operator", "read-only")


@dataclass(slots=True)
class Account:
    name: str
    password_hash: str
    roles: list[str] = field(default_factory=list)

    @property
    def subject_identifier(self) -> str:
        return f"local:{self.name}"


class AccountError(Exception):
    """A request the account book refuses (unknown account, bad role, ...)."""


class AccountBook:
    """Read and change ``accounts.json``; every change is durable when the call returns."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "accounts.json"
        self._lock_path = Path(data_dir) / "accounts.lock"
        self._stamp: tuple[int, int, int] | None = None
        self._accounts: dict[str, Account] = {}

    # ---- file handling ----------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def reload(self) -> bool:
        """Re-read the file if it changed; True when it did."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            changed = bool(self._accounts) or self._stamp is not None
            self._accounts, self._stamp = {}, None
            return changed
        # Inode too: the file is replaced atomically, so a new write is a new inode even
        # within one timestamp tick.
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return False
        data: dict[str, Any] = json.loads(self.path.read_text() or "{}")
        self._accounts = {
            name: Account(name, a["password_hash"], list(a.get("roles", [])))
            for name, a in data.get("accounts", {}).items()
        }
        self._stamp = stamp
        return True

    def _write(self) -> None:
        data = {
            "version": 1,
            "accounts": {
                a.name: {"password_hash": a.password_hash, "roles": a.roles}
                for a in self._accounts.values()
            },
        }
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        st = self.path.stat()
        self._stamp = (st.st_mtime_ns, st.st_size, st.st_ino)

    # ---- queries ------------------------------------------------------------------------
    def get(self, name: str) -> Account | None:
        return self._accounts.get(name)

    def all(self) -> list[Account]:
        return sorted(self._accounts.values(), key=lambda a: a.name)

    def verify(self, name: str, password: str) -> Account | None:
        """The account if ``password`` is right (slow: call from an executor)."""
        acct = self._accounts.get(name)
        if acct is None or not verify_password(acct.password_hash, password):
            return None
        return acct

    # ---- changes ------------------------------------------------------------------------
    def ensure_root(self, password: str | None) -> str | None:
        """Create root on first start; returns the generated password if one was made."""
        with self._locked():
            self.reload()
            if ROOT in self._accounts:
                return None
            generated = None
            if not password:
                password = generated = secrets.token_urlsafe(12)
            self._accounts[ROOT] = Account(ROOT, hash_password(password), ["pool-admin"])
            self._write()
            return generated

    def add(self, name: str, password: str, roles: list[str]) -> Account:
        _check_name(name)
        _check_roles(roles)
        with self._locked():
            self.reload()
            if name in self._accounts:
                raise AccountError(f"account {name} already exists")
            acct = Account(name, hash_password(password), list(roles))
            self._accounts[name] = acct
            self._write()
            return acct

    def remove(self, name: str) -> None:
        if name == ROOT:
            raise AccountError("root cannot be removed")
        with self._locked():
            self.reload()
            if name not in self._accounts:
                raise AccountError(f"no account {name}")
            del self._accounts[name]
            self._write()

    def set_password(self, name: str, password: str) -> None:
        with self._locked():
            self.reload()
            acct = self._accounts.get(name)
            if acct is None:
                raise AccountError(f"no account {name}")
            acct.password_hash = hash_password(password)
            self._write()

    def set_roles(self, name: str, roles: list[str]) -> None:
        _check_roles(roles)
        with self._locked():
            self.reload()
            acct = self._accounts.get(name)
            if acct is None:
                raise AccountError(f"no account {name}")
            acct.roles = list(roles)
            self._write()


def _check_name(name: str) -> None:
    if not name or len(name) > 64 or not all(c.isalnum() or c in "._-@" for c in name):
        raise AccountError(f"invalid account name {name!r}")


def _check_roles(roles: list[str]) -> None:
    if not roles:
        raise AccountError("an account needs at least one role")
    for r in roles:
        if r not in ROLES:
            raise AccountError(f"unknown role {r!r}; roles are: {', '.join(ROLES)}")
