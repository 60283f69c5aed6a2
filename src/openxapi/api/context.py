"""What a call carries besides its parameters: where it came from and who made it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class CallContext:
    """Per-call facts the dispatcher and handlers need.

    ``transport`` is "http", "https", "unix" or "internal"; calls over the unix socket
    are pre-authenticated as root, as in the reference. ``peer_gone(callback)``, when the
    transport offers it, registers a callback run if the client disconnects before the
    answer (long polls use it) and returns its unregister function. ``answer_now(value)``,
    when offered, sends the call's successful result to the client at once, before the
    handler returns (a woken long poll answered without resuming the whole call stack);
    it returns False when it cannot.
    """

    transport: str = "internal"
    peer: str = ""
    codec: str = "xml"  # "xml" | "json": which encoding cached records are built for
    user_agent: str = ""
    session: str = ""
    is_superuser: bool = False
    roles: frozenset[str] = field(default_factory=frozenset)
    wire_name: str = ""
    task: str = ""
    peer_gone: Callable[[Callable[[], None]], Callable[[], None]] | None = None
    answer_now: Callable[[Any], bool] | None = None

    @property
    def local_root(self) -> bool:
        """True for calls that arrive on the host's own unix socket."""
        return self.transport == "unix"
