"""A rate limit per channel (token bucket): one channel's staff or inquiries cannot make
Unifier flood a company's system, nor use up the lookups of the other channels."""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimit:
    def __init__(self, per_s: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s = per_s
        self.burst = burst if burst is not None else max(1.0, 2 * per_s)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # channel -> (tokens, at)

    def take(self, channel_id: str) -> float:
        """0 when a call may go now (a token is taken), else the seconds until one may."""
        now = self.clock()
        tokens, at = self._buckets.get(channel_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.per_s)
        if tokens >= 1:
            self._buckets[channel_id] = (tokens - 1, now)
            return 0.0
        self._buckets[channel_id] = (tokens, now)
        return (1 - tokens) / self.per_s
