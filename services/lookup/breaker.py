"""A circuit breaker per lookup definition: a company's system that keeps failing is
left alone for a while instead of making every consultation wait for its timeout.

Closed → after `failures` failures in a row: open (calls refused at once, `circuit_open`)
→ after `reset_s`: half-open (one trial call; success closes, failure opens again).
In-process state: each process learns on its own, which is what it needs (it is about
not waiting, not about exact counts).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(slots=True)
class _State:
    failures: int = 0
    opened_at: float | None = None
    trial: bool = False  # a half-open trial call is out


class Breaker:
    def __init__(self, failures: int = 5, reset_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures, self.reset_s, self.clock = failures, reset_s, clock
        self._states: dict[Hashable, _State] = {}

    def allow(self, key: Hashable) -> bool:
        state = self._states.get(key)
        if state is None or state.opened_at is None:
            return True
        if state.trial or self.clock() - state.opened_at < self.reset_s:
            return False
        state.trial = True
        return True

    def retry_after(self, key: Hashable) -> float:
        state = self._states.get(key)
        if state is None or state.opened_at is None:
            return 0.0
        return max(0.0, self.reset_s - (self.clock() - state.opened_at))

    def success(self, key: Hashable) -> None:
        self._states.pop(key, None)

    def failure(self, key: Hashable) -> None:
        state = self._states.setdefault(key, _State())
        state.failures += 1
        if state.trial or state.failures >= self.failures:
            state.opened_at, state.trial = self.clock(), False

    def forget(self, key: Hashable) -> None:
        """A redefined lookup starts closed (its URL may have been fixed)."""
        self._states.pop(key, None)
