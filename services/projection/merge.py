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
from collections.abc import Callable, Iterable

from .records import Record

Partition = tuple[str, int]


def _order(r: Record) -> tuple[int, str, int, int]:
    return (r.timestamp, r.topic, r.partition, r.offset)


class CoPartitionMerge:
    def __init__(self) -> None:
        self._buffers: dict[Partition, deque[Record]] = {}
        self._groups: dict[int, list[Partition]] = {}

    def assign(self, partitions: Iterable[Partition]) -> None:
        """A new assignment: buffers start empty (the consumer re-seeks every partition
        to the offset stored with the state, so nothing buffered is lost)."""
        self._buffers = {p: deque() for p in sorted(partitions)}
        self._groups = {}
        for p in self._buffers:
            self._groups.setdefault(p[1], []).append(p)

    def add(self, partition: Partition, records: Iterable[Record]) -> None:
        buffer = self._buffers.get(partition)
        if buffer is not None:  # a fetch for a partition revoked meanwhile is dropped
            buffer.extend(records)

    def drop_below(self, partition: Partition, offset: int) -> None:
        """Another instance applied up to `offset`: those records are not ours to apply."""
        buffer = self._buffers.get(partition)
        while buffer and buffer[0].offset < offset:
            buffer.popleft()

    def buffered(self, partition: Partition) -> int:
        buffer = self._buffers.get(partition)
        return len(buffer) if buffer is not None else 0

    def release(self, at_end: Callable[[Partition], bool], limit: int) -> list[Record]:
        """Up to `limit` records in the canonical order, each one that no unread record
        of a co-partition can precede."""
        out: list[Record] = []
        for group in self._groups.values():
            buffers = [(p, self._buffers[p]) for p in group]
            while len(out) < limit:
                if any(not b and not at_end(p) for p, b in buffers):
                    break  # a co-partition may still hold an earlier record
                heads = [b for _, b in buffers if b]
                if not heads:
                    break
                if len(heads) == 1:  # the others are at their end: the whole run goes (the usual case)
                    run = heads[0]
                    out.extend(run.popleft() for _ in range(min(limit - len(out), len(run))))
                    continue
                out.append(min(heads, key=lambda b: _order(b[0])).popleft())
        out.sort(key=_order)  # groups are independent channels; one order for the batch
        return out
