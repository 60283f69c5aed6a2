"""Fixtures that run a real server process for the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serverproc import ROOT_PASSWORD, ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(Path(tmp_path_factory.mktemp("srv")))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def root_password() -> str:
    return ROOT_PASSWORD
