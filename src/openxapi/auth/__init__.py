"""Local accounts and password hashing."""
