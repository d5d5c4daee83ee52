"""How fast the importer publishes: at the pace the service applies the rows, a bounded
time ahead of it (issue 14, item 5).

Every inbound fact of a partition is applied in the canonical order (docs/design.md,
"Flow" 5; services/projection/merge.py): a later fact of *another* channel that shares
the import's partition is applied only after every import row published before it. An
importer that put a whole file on the topic at once (~10,000–100,000 rows/s) made such
a fact wait for the rest of the import: minutes for a large file.

So the importer controls how long its rows wait to be applied: each time the service
gets further in them, it measures how long ago the newest passed row was published, and
widens the window of rows published-not-applied while that is well under `lead_s`,
narrows it when over. Another channel's fact published meanwhile waits behind the same
rows, so about as long. The order stays the canonical one (a rebuild applies the same
log the same way): this is flow control only; which rows are applied, and how, does not
depend on it.

Within the window it publishes in small slices at a bit more than the service's
measured pace rather than a window at a time: rows arriving while the service applies a
batch make its next batch, so the service does not wait for the importer to notice a
commit. How far the service got is the offset it stored for the partition, mapped to
rows through the offsets the broker acknowledged (run.py, producer.py): applied rows,
rows skipped as applied before (a resumed import) and dead-lettered ones all count.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

LEAD_S = 0.4
MIN_ROWS = 500  # rows in flight however slow the service: a batch must pay for its transaction
MAX_ROWS = 50_000
SLICE_S = 0.05  # a slice every 50 ms at most (a produce request and a database poll each)
_AHEAD = 1.25  # slices at this much more than the measured pace: it finds the service's limit
_SMOOTHING = 0.3  # weight of the newest pace measurement
_WIDEN, _NARROW = 1.25, 0.8


@dataclass(slots=True)
class Window:
    lead_s: float = LEAD_S
    min_rows: int = MIN_ROWS
    max_rows: int = MAX_ROWS
    rows: int = MIN_ROWS  # rows that may be published and not yet applied
    rate: float = 0.0  # rows/s the service applies, smoothed; 0 until measured
    _changed: tuple[float, int] | None = field(default=None, repr=False)  # (time, applied) when the count last moved
    _granted: float | None = field(default=None, repr=False)  # when the last slice was allowed
    _applied: int = field(default=0, repr=False)  # the count at the last sample
    _fullest: int = field(default=0, repr=False)  # most rows outstanding since the last change of the count
    _slices: deque[tuple[int, float]] = field(default_factory=deque, repr=False)  # (rows allowed in all, when)

    def allowed(self, now: float, applied: int, published: int) -> int:
        """How many rows may be published in all by `now`, `applied` of them applied:
        a slice at a bit more than the service's pace, within the window."""
        ceiling = applied + self.rows
        since = self._granted
        if self.rate == 0 or since is None:
            grant = ceiling  # the pace is not known yet: the window at once
        elif now - since < SLICE_S:
            return min(ceiling, published)  # slices are at least SLICE_S apart
        else:
            grant = min(ceiling, published + max(1, int(self.rate * _AHEAD * min(now - since, 10 * SLICE_S))))
        if grant > published:
            self._granted = now
            self._slices.append((grant, now))
        return grant

    def observe(self, now: float, applied: int, published: int) -> None:
        """A sample of how many rows the service got past (`applied`; it moves once a
        batch) and how many are published."""
        outstanding = published - applied
        self._fullest = max(self._fullest, published - self._applied)  # before this sample's commit
        self._applied = applied
        # How long the newest applied row waited: the window follows it.
        published_at = None
        while self._slices and self._slices[0][0] <= applied:
            published_at = self._slices.popleft()[1]
        if published_at is not None:
            waited = now - published_at
            if waited < 0.75 * self.lead_s and self._fullest >= self.rows * 3 // 4:  # the window held it back
                self.rows = min(self.max_rows, int(self.rows * _WIDEN) + 1)
            elif waited > self.lead_s:
                self.rows = max(self.min_rows, int(self.rows * _NARROW))
            self._fullest = 0
        # The pace, between two changes of the count over spans with rows outstanding:
        # the service's, not the importer's.
        last = self._changed
        if last is None or (outstanding <= 0 and applied == last[1]):
            self._changed = (now, applied)
            return
        if applied <= last[1] or now - last[0] < SLICE_S:
            return
        self._changed = (now, applied)
        pace = (applied - last[1]) / (now - last[0])
        self.rate = pace if self.rate == 0 else (1 - _SMOOTHING) * self.rate + _SMOOTHING * pace
