"""The running daemon: composition of store, API, HTTP listeners and background work."""
