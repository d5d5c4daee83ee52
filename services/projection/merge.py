"""The live consumer's side of the canonical order: a hold-back merge of co-partitions.

A channel's facts live on three topics (sdk-events, commands, import-rows), each keyed
by `channelId`, so they land on the same partition number p of each topic. Replay
applies them merged by record timestamp (records.canonical_order). The live consumer
reads the three partitions at different paces; applying whatever one fetch returned
would put a login before the earlier member.upsert that sits unread on the commands
partition, and end in another state than a rebuild (docs/design.md, "Order-tolerant").

So records wait in per-partition buffers and leave in the canonical order, a record
only once every co-partition (same number, other inbound topics) either has a buffered
record to compare with or is known to be at its end. The consumer's group assignor
(RangePartitionAssignor) gives one instance all co-partitions of a number, which is
what makes the merge complete. A record appended later with an earlier timestamp than
what was already applied (a lagging producer) still goes after it: the log cannot
show a record before it exists.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator

from .records import Record

Partition = tuple[str, int]

# An `import.rows` record holds up to 1,000 rows (a chunk, ~50 KB of a typical file): it
# weighs as a record per this many bytes, about a row's, in a batch's limit and in the
# buffers' flow control, so a batch of chunks holds about as many rows as a batch of
# one-row records did, and the buffers as little (docs/decisions.md, "Issue 14, session 9").
ROW_BYTES = 128


def weight(r: Record, heavy_topic: str | None) -> int:
    """What a record counts for in a batch's limit: one, an import chunk a record per ROW_BYTES."""
    return 1 if r.topic != heavy_topic else max(1, len(r.value or b"") // ROW_BYTES)


def by_weight(records: list[Record], heavy_topic: str, limit: int) -> Iterator[list[Record]]:
    """`records` (canonically ordered) cut into consecutive batches of at most `limit`
    by the weight `CoPartitionMerge.release` gives them (an import chunk a record per
    ROW_BYTES): a rebuild's batches of chunks stay the size of the live ones. Applying
    the parts one after another is applying the whole (a batch applies what its records
    would one by one)."""
    if all(r.topic != heavy_topic for r in records) or sum(weight(r, heavy_topic) for r in records) <= limit:
        yield records
        return
    part: list[Record] = []
    spent = 0
    for r in records:
        w = weight(r, heavy_topic)
        if part and spent + w > limit:
            yield part
            part, spent = [], 0
        part.append(r)
        spent += w
    if part:
        yield part


def _order(r: Record) -> tuple[int, str, int, int]:
    return (r.timestamp, r.topic, r.partition, r.offset)


class CoPartitionMerge:
    def __init__(self, heavy_topic: str | None = None) -> None:
        self._buffers: dict[Partition, deque[Record]] = {}
        self._groups: dict[int, list[Partition]] = {}
        self._heavy = heavy_topic  # the import-rows topic: its records weigh by size
        self._weights: dict[Partition, int] = {}  # the heavy partitions' buffered weight
        self.full = False  # the last release stopped at its limit: more may be releasable now

    def assign(self, partitions: Iterable[Partition]) -> None:
        """A new assignment: buffers start empty (the consumer re-seeks every partition
        to the offset stored with the state, so nothing buffered is lost)."""
        self._buffers = {p: deque() for p in sorted(partitions)}
        self._weights = {p: 0 for p in self._buffers if p[0] == self._heavy}
        self._groups = {}
        for p in self._buffers:
            self._groups.setdefault(p[1], []).append(p)

    def add(self, partition: Partition, records: Iterable[Record]) -> None:
        buffer = self._buffers.get(partition)
        if buffer is not None:  # a fetch for a partition revoked meanwhile is dropped
            if partition[0] == self._heavy:
                records = list(records)
                self._weights[partition] += sum(weight(r, self._heavy) for r in records)
            buffer.extend(records)

    def drop_below(self, partition: Partition, offset: int) -> None:
        """Another instance applied up to `offset`: those records are not ours to apply."""
        buffer = self._buffers.get(partition)
        while buffer and buffer[0].offset < offset:
            r = buffer.popleft()
            if partition[0] == self._heavy:
                self._weights[partition] -= weight(r, self._heavy)

    def buffered(self, partition: Partition) -> int:
        """How much is buffered: records, an import chunk weighing by its size."""
        if partition[0] == self._heavy:
            return self._weights.get(partition, 0)
        buffer = self._buffers.get(partition)
        return len(buffer) if buffer is not None else 0

    def release(self, at_end: Callable[[Partition], bool], limit: int) -> list[Record]:
        """Up to `limit` records in the canonical order, each one that no unread record
        of a co-partition can precede (an import chunk weighs by its size, see ROW_BYTES;
        the first record of a batch goes whatever its weight)."""
        out: list[Record] = []
        spent = 0  # len(out), but for the weight of import chunks
        for group in self._groups.values():
            buffers = [(p, self._buffers[p]) for p in group]
            while spent < limit:
                if any(not b and not at_end(p) for p, b in buffers):
                    break  # a co-partition may still hold an earlier record
                heads = [(p, b) for p, b in buffers if b]
                if not heads:
                    break
                if len(heads) == 1 and heads[0][0][0] != self._heavy:  # the others are at their end: the whole run goes (the usual case)
                    run = heads[0][1]
                    n = min(limit - spent, len(run))
                    out.extend(run.popleft() for _ in range(n))
                    spent += n
                    continue
                p, b = min(heads, key=lambda pb: _order(pb[1][0]))
                if p[0] == self._heavy:
                    w = weight(b[0], self._heavy)
                    if out and spent + w > limit:
                        spent = limit
                        break
                    self._weights[p] -= w
                    spent += w
                else:
                    spent += 1
                out.append(b.popleft())
        self.full = spent >= limit
        out.sort(key=_order)  # groups are independent channels; one order for the batch
        return out
