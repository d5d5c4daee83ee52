"""The eventId deduplication window (docs/contract.md, "Inbound envelope").

A fact whose (channelId, eventId) was applied before is skipped — for as long as that
earlier fact is within `WINDOW_MS` of event time of the channel's clock, the latest
event time applied in the channel so far. Older eventIds are forgotten, so
`applied_events` holds about a week of each channel's facts instead of growing for
ever. Defined on event times and the canonical order only, so the live projection
(which keeps each channel's clock in `applied_clocks` and sweeps a channel's expired
rows once every half window: until then `seen` ignores them) and a rebuild
(which keeps the window in memory) skip exactly the same facts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from services.domain.core import Fact

WINDOW_MS: Final = 7 * 24 * 60 * 60 * 1000

Applied = tuple[str, str, int]  # (channel_id, event_id, event time)


def event_pairs(facts: Iterable[Fact]) -> list[tuple[str, str]]:
    """The (channelId, eventId) pairs a batch reads its window for: each once, in the
    facts' order. Not sorted: the store answers the set whatever the order asked, and
    sorting a batch of 5,000 pairs (tuples of text, compared element by element) cost
    ~5,100 instructions a fact against ~660 for this (issue 14, session 18)."""
    return list(dict.fromkeys([(f.channel_id, f.event_id) for f in facts]))


class AppliedWindow:
    """The remembered eventIds of some channels, with each channel's clock."""

    def __init__(self, rows: Iterable[Applied] = (), clocks: dict[str, int] | None = None) -> None:
        self.at: dict[tuple[str, str], int] = {(c, e): t for c, e, t in rows}
        self.clocks: dict[str, int] = dict(clocks or {})
        # No event time in `at` is older than this (None: `at` is empty): what
        # `forget_expired` checks before it walks every eventId.
        self.oldest: int | None = min(self.at.values()) if self.at else None
        # The pairs the store held when the window was read: an eventId applied again
        # after it was forgotten still has its row there until the sweep (repo.save_applied).
        self.stored: frozenset[tuple[str, str]] = frozenset(self.at)

    def seen(self, channel_id: str, event_id: str) -> bool:
        """Applied before, and not yet forgotten."""
        at = self.at.get((channel_id, event_id))
        return at is not None and at >= self.clocks.get(channel_id, at) - WINDOW_MS

    def add(self, channel_id: str, event_id: str, at: int) -> None:
        self.at[(channel_id, event_id)] = at
        clock = self.clocks.get(channel_id)  # no default `at - 1` boxed for the lookup (compiled)
        if clock is None or at > clock:
            self.clocks[channel_id] = at
        oldest = self.oldest
        if oldest is None or at < oldest:
            self.oldest = at

    def horizon(self, channel_id: str) -> int | None:
        """Event times before this are forgotten in the channel (None: nothing applied)."""
        clock = self.clocks.get(channel_id)
        return None if clock is None else clock - WINDOW_MS

    def forget_expired(self) -> None:
        """Drop what can never be seen again (the clocks only move forward). Nothing is
        when the oldest event time is within the window of the latest clock: then the
        eventIds are not walked (a rebuild calls this every flush; on a log shorter than
        the window the walk found nothing, ~1 µs an event of a build, issue 14 session 13)."""
        oldest = self.oldest
        if oldest is None or not self.clocks or oldest >= max(self.clocks.values()) - WINDOW_MS:
            return
        self.at = {k: t for k, t in self.at.items() if t >= self.clocks[k[0]] - WINDOW_MS}
        self.oldest = min(self.at.values()) if self.at else None
