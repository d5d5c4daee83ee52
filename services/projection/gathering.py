"""Group commit for the pipelined consumer: while a batch's write is in flight, the
records that arrive gather into the next batch instead of each becoming a batch of its
own (docs/decisions.md, "Issue 14, session 21: a paced import's batches").

Without it the consumer handed the pipeline whatever the merge released first: during
a paced import a visitor's boot fetched a moment before the importer's next slice was a
batch of one record, with a whole transaction (fences, offsets, window, outbox, commit)
and a pipeline step of its own, and the slice waited for it.

The rule (`Gathering.due`):
- nothing is writing: what is gathered goes at once (an idle service applies a lone
  record without waiting for company);
- a write is in flight: what is gathered waits for it to finish, unless it already
  weighs `LEAST`, then it goes at once, so that its preparation overlaps the write
  (pipeline.py: the point of pipelining is that PostgreSQL and Python work together).

While a write is in flight the loop keeps fetching, and waits on the write's end only
when something is held (consumer.py): it no longer blocks on a write it has nothing to
prepare behind, when what arrived meanwhile was then applied a first record alone.

No time bound is needed beside it: writes are sequential, so a record held while a
write is in flight could not have committed before that write anyway; what holding it
adds is only its preparation after the write instead of during it, and what is held is
below `LEAST`, a few milliseconds of preparation. Larger batches follow from the same
rule (more arrives during a longer write); `limit` (UNIFIER_BATCH_MAX) caps them.

Held records are ours only while the partition is: a revocation or a new assignment
clears them (consumer.py), and they are read again from the offsets stored with the
state, as everything not committed is at a stop.
"""

from __future__ import annotations

from collections.abc import Iterable

from .merge import weight
from .records import Partition, Record

# What a batch must weigh (records; an import chunk by its size, merge.ROW_BYTES) to be
# prepared while another batch writes: about the pipeline's unit of preparation between
# two turns of the write (pipeline._SLICE), ~5 ms of Python. Below it, preparing the
# batch after the write costs a few ms, less than a transaction of its own would.
LEAST = 200


class Gathering:
    """Records released by the merge (in the canonical order) and not yet handed to the
    pipeline. Batches are concatenated in release order: applying the gathered records
    as one batch is applying the releases one after another (a batch applies what its
    records would one by one), so grouping changes no outcome, only how many
    transactions carry it."""

    def __init__(self, heavy_topic: str | None, limit: int, least: int = LEAST) -> None:
        self.heavy = heavy_topic
        self.limit = limit
        self.least = min(least, limit)
        self.records: list[Record] = []
        self.weight = 0

    @property
    def room(self) -> int:
        """How much more the next batch may take (the merge's `limit` for its release)."""
        return self.limit - self.weight

    def add(self, records: Iterable[Record]) -> None:
        heavy = self.heavy
        for r in records:
            self.records.append(r)
            self.weight += weight(r, heavy)

    def due(self, writing: bool) -> bool:
        """Whether what is gathered is to be handed to the pipeline now, given whether a
        batch's write is in flight (the rule is in the module's docstring)."""
        if not self.records:
            return False
        return not writing or self.weight >= self.least

    def take(self) -> list[Record]:
        records, self.records, self.weight = self.records, [], 0
        return records

    def clear(self) -> None:
        """A revocation or a new assignment: what is held may not be ours any more. It
        is not lost: nothing of it is stored, so its partition's owner reads it again."""
        self.records, self.weight = [], 0

    def drop_below(self, partition: Partition, offset: int) -> None:
        """Another instance applied `partition` up to `offset` (consumer._follow_store):
        those records are not ours to apply (the batch's fence would refuse them too, at
        the price of a redone batch)."""
        if any(r.offset < offset and (r.topic, r.partition) == partition for r in self.records):
            kept = [r for r in self.records if r.offset >= offset or (r.topic, r.partition) != partition]
            self.clear()
            self.add(kept)
