"""Limits that keep one client from starving the others: sizes, timeouts, connection caps
and a per-address request rate.

Defaults follow the reference (1 KiB of request head, 300 KiB RPC bodies, 10 s / 60 s to
receive the first request's head) except where the rulings ask for more headroom.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Server limits; a rate of 0 turns rate limiting off."""

    #: Request line plus headers plus the blank line; beyond it, 431.
    max_header_bytes: int = 1024
    #: Body of a non-streaming request; beyond it, 500 as the reference answers.
    max_body_bytes: int = 300 * 1024
    #: Longest wait for each read while the first request's head arrives; then 408.
    header_read_timeout: float = 10.0
    #: Longest wait for the whole head of the first request; then 408.
    header_total_timeout: float = 60.0
    #: An idle keep-alive connection is closed after this long.
    idle_timeout: float = 300.0
    #: Concurrent connections from one client address (the unix socket is exempt); then 503.
    max_connections_per_address: int = 4096
    #: Sustained requests per second per client address; then 429.
    rate_per_second: float = 100_000.0
    #: Requests a client address may send in a burst.
    rate_burst: float = 200_000.0
    #: How long close() lets running handlers finish before cancelling them.
    shutdown_grace: float = 10.0


class RateLimiter:
    """Token buckets keyed by client address."""

    __slots__ = ("_buckets", "_burst", "_rate")

    _PRUNE_AT = 10_000

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = max(burst, 1.0)
        self._buckets: dict[str, list[float]] = {}

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def allow(self, address: str, now: float) -> bool:
        """Take one token from `address`'s bucket; False when it is empty."""
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= self._PRUNE_AT:
                self._prune(now)
            self._buckets[address] = [self._burst - 1.0, now]
            return True
        tokens = bucket[0] + (now - bucket[1]) * self._rate
        if tokens > self._burst:
            tokens = self._burst
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True

    def _prune(self, now: float) -> None:
        full = [
            a
            for a, (t, last) in self._buckets.items()
            if t + (now - last) * self._rate >= self._burst
        ]
        for address in full:
            del self._buckets[address]
