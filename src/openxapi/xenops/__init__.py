"""xenops."""
