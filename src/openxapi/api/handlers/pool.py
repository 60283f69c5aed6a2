"""pool: behaviour beyond the generated accessors."""

from __future__ import annotations
