"""The table of hand-written message handlers.

Modules under ``openxapi.api`` register behaviour with :func:`handler`; the dispatcher
checks at start-up that every custom message of the description is either handled or
sits on the explicit not-implemented list (``not_implemented.txt``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openxapi.api.context import CallContext
    from openxapi.api.state import ServerState

Handler = Callable[..., Awaitable[Any]]
"""``async def h(state: ServerState, ctx: CallContext, *params) -> result``"""

_HANDLERS: dict[str, Handler] = {}


def handler(*wire_names: str) -> Callable[[Handler], Handler]:
    """Register a coroutine as the behaviour of one or more messages (``class.message``)."""

    def register(fn: Handler) -> Handler:
        for name in wire_names:
            if name in _HANDLERS:
                raise RuntimeError(f"two handlers for {name}")
            _HANDLERS[name] = fn
        return fn

    return register


def handlers() -> dict[str, Handler]:
    """Every registered handler, importing the modules that define them first."""
    from openxapi.api import handlers as _  # noqa: F401  (registers on import)

    return _HANDLERS


def not_implemented() -> frozenset[str]:
    """Custom messages whose behaviour is not built: they answer NOT_IMPLEMENTED."""
    text = resources.files("openxapi.api").joinpath("not_implemented.txt").read_text()
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


__all__ = ["CallContext", "Handler", "ServerState", "handler", "handlers", "not_implemented"]
