"""The API fixtures of tests/api, shared with the server tests."""

from tests.api.conftest import accounts_template, data_dir, world

__all__ = ["accounts_template", "data_dir", "world"]
