"""A real API stack in-process: store, server state, dispatcher and first-start objects.

The wiring is that of ``App.start`` without listeners, so tests call
``dispatcher.call(name, params, ctx)`` exactly as the RPC endpoints do.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.api.world import ROOT_PASSWORD, World, open_world


@pytest.fixture(scope="session")
def accounts_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An account book with root, hashed once per test run (hashing is deliberately slow)."""
    from openxapi.auth.accounts import AccountBook

    d = tmp_path_factory.mktemp("accounts")
    AccountBook(d).ensure_root(ROOT_PASSWORD)
    return d / "accounts.json"


@pytest.fixture
def data_dir(tmp_path: Path, accounts_template: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    shutil.copy(accounts_template, d / "accounts.json")
    return d


@pytest.fixture
async def world(data_dir: Path) -> AsyncIterator[World]:
    """A fresh server state with a root session, kept in memory only."""
    w = await open_world(data_dir, durable=False)
    yield w
    await w.close()
