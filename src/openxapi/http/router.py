"""Longest-prefix request routing, as xapi does it.

A route claims every path that starts with its prefix (plain string prefix, so
`/import_raw_vdi/` and `/import_raw_vdi?x` both belong to `/import_raw_vdi`, and `/` catches
whatever no longer prefix claims). Among the routes that accept the request's method, the
longest prefix wins.
"""

from __future__ import annotations

from dataclasses import dataclass

from openxapi.http.message import Handler

_CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class Route:
    """A handler bound to a path prefix, the methods it accepts and its body mode."""

    prefix: str
    handler: Handler
    methods: frozenset[str] | None
    stream: bool

    def allows(self, method: str) -> bool:
        return self.methods is None or method in self.methods


class Router:
    """The table of routes a server dispatches on."""

    def __init__(self) -> None:
        self._routes: list[Route] = []
        self._cache: dict[tuple[str, str], Route | None] = {}

    def add(
        self,
        prefix: str,
        handler: Handler,
        *,
        methods: set[str] | None = None,
        stream: bool = False,
    ) -> None:
        """Route requests whose path starts with `prefix` (and whose method is in `methods`,
        if given) to `handler`. A stream route gets the body as `Request.stream`."""
        allowed = None if methods is None else frozenset(m.upper() for m in methods)
        for route in self._routes:
            if route.prefix == prefix and (
                allowed is None or route.methods is None or allowed & route.methods
            ):
                raise ValueError(f"a route for {prefix!r} already accepts these methods")
        self._routes.append(Route(prefix, handler, allowed, stream))
        self._routes.sort(key=lambda r: len(r.prefix), reverse=True)
        self._cache.clear()

    @property
    def routes(self) -> list[Route]:
        """Routes, longest prefix first."""
        return list(self._routes)

    def resolve(self, method: str, path: str) -> Route | None:
        """The route for this request, or None (see `allowed_methods` to tell 404 from 405)."""
        key = (method, path)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = None
        for route in self._routes:
            if path.startswith(route.prefix) and route.allows(method):
                found = route
                break
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key] = found
        return found

    def allowed_methods(self, path: str) -> set[str] | None:
        """Methods some route accepts for `path`; None if no prefix matches it at all."""
        matched = [r for r in self._routes if path.startswith(r.prefix)]
        if not matched:
            return None
        methods: set[str] = set()
        for route in matched:
            if route.methods is not None:
                methods |= route.methods
        return methods
