"""Inbound records and their canonical order.

Live consumption and replay both apply records in the same order: each partition in
offset order (never reordered: it is one channel's history), partitions and topics
merged by record timestamp, ties broken by topic, partition, offset (docs/design.md).

A record's timestamp is bounded as it is read (`PartitionClocks`), the same way live
and in a rebuild, so no producer clock can date a record far ahead of its partition.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple, Protocol

Partition = tuple[str, int]

# How far a record's timestamp may run ahead of its partition's clock (docs/decisions.md,
# "Event time"). Large enough that a partition idle for a night or a weekend is not
# touched; small enough that one record cannot pin a value or dodge B4 for long.
MAX_AHEAD_MS: Final = 24 * 60 * 60 * 1000
LOG_APPEND_TIME = 1  # Kafka timestamp type: set by the broker at append, not by the producer


class Record(NamedTuple):
    """One inbound record as read. A named tuple rather than a frozen dataclass: every
    record of the log is made once, and a frozen dataclass' `__init__` (one
    `object.__setattr__` per field) cost ~0.45 µs more per record than a tuple
    (docs/decisions.md, "Replay: reading the log for less")."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # broker/producer record time, epoch ms
    key: bytes | None
    value: bytes | None


class Message(Protocol):
    """What is read of a fetched message (aiokafka's ConsumerRecord)."""

    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def timestamp_type(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


_new_record: Callable[[type[Record], tuple[str, int, int, int, bytes | None, bytes | None]], Record] = tuple.__new__  # type: ignore[assignment]


def canonical_order(partitions: Iterable[Sequence[Record]]) -> list[Record]:
    """Merge per-partition runs (each already in offset order) by timestamp."""
    runs = [list(run) for run in partitions if run]
    return list(heapq.merge(*runs, key=lambda r: (r.timestamp, r.topic, r.partition, r.offset)))


class PartitionClocks:
    """Bound record timestamps by what the partition's log already showed.

    A partition's clock is the highest (bounded) timestamp of its records so far, in
    offset order. A producer-set timestamp (CreateTime) more than MAX_AHEAD_MS ahead
    of the clock is lowered to clock + MAX_AHEAD_MS; a broker-set one (LogAppendTime,
    what the service asks for when it creates the inbound topics) is kept. Derived only
    from the log, so the live consumer and a rebuild bound every record alike, as long
    as each starts a partition with the clock stored for its start offset
    (`inbox_offsets.clock`; none at the log's start)."""

    def __init__(self, start: Mapping[Partition, int | None] | None = None) -> None:
        self.at: dict[Partition, int] = {k: v for k, v in (start or {}).items() if v is not None}

    def reset(self, partition: Partition, clock: int | None) -> None:
        """The partition is read again from an offset whose stored clock is `clock`."""
        if clock is None:
            self.at.pop(partition, None)
        else:
            self.at[partition] = clock

    def record(
        self, topic: str, partition: int, offset: int, timestamp: int, timestamp_type: int,
        key: bytes | None, value: bytes | None,
    ) -> Record:
        return _new_record(Record, (topic, partition, offset, self.bound((topic, partition), timestamp, timestamp_type), key, value))

    def extend(
        self, out: Callable[[Record], object], topic: str, partition: int, messages: Iterable[Message], stop: int,
    ) -> None:
        """`record` for each of one partition's `messages` (in offset order) below offset
        `stop`, each handed to `out` (a list's or deque's `append`). The same bounds as `record`, with the
        partition's clock kept in a local and each Record made without `__new__`'s
        Python frame: a replay reads every record of the log through here."""
        key = (topic, partition)
        clock = self.at.get(key)
        new, append_time, ahead = _new_record, LOG_APPEND_TIME, MAX_AHEAD_MS
        for m in messages:
            offset = m.offset
            if offset >= stop:
                break
            timestamp = m.timestamp
            if timestamp > 0:  # no timestamp: nothing to bound, nothing learnt
                if clock is None:
                    clock = timestamp
                else:
                    if timestamp > clock + ahead and m.timestamp_type != append_time:
                        timestamp = clock + ahead
                    if timestamp > clock:
                        clock = timestamp
            out(new(Record, (topic, partition, offset, timestamp, m.key, m.value)))
        if clock is not None:
            self.at[key] = clock

    def bound(self, partition: Partition, timestamp: int, timestamp_type: int = 0) -> int:
        if timestamp <= 0:  # no timestamp: nothing to bound, nothing learnt
            return timestamp
        clock = self.at.get(partition)
        if clock is not None and timestamp_type != LOG_APPEND_TIME and timestamp > clock + MAX_AHEAD_MS:
            timestamp = clock + MAX_AHEAD_MS
        if clock is None or timestamp > clock:
            self.at[partition] = timestamp
        return timestamp


class LogPart:
    """One partition a replay reads (replay/log.py `LogReader`): the offset it stops
    before, the next offset to hand out, its records fetched and not handed out yet, and
    its clock after those handed out. Here, compiled, for `take_merged`."""

    def __init__(self, tp: Any, stop: int, position: int, clock: int | None = None) -> None:
        self.tp = tp  # aiokafka's TopicPartition
        self.stop = stop  # never read past it
        self.position = position
        self.buf: deque[Record] = deque()
        self.clock = clock
        self.idle_since: float | None = None
        self.done = False


MergeHeap = list[tuple[int, str, int, int, LogPart]]


def take_merged(heap: MergeHeap, out: list[Record], room: int, size: int, max_bytes: int) -> tuple[int, LogPart | None]:
    """`LogReader.merged`'s loop, run once per record of the log: up to `room` records
    appended to `out` in the canonical order, each taken from the head of the partition
    on top of `heap` (its next record keyed by (timestamp, topic, partition, offset)),
    while every partition still to read has its head in `heap`. Returns the bytes of
    values so far (`size` plus those taken) and the partition whose buffer it emptied,
    if it stopped for that: the caller fetches its next records, or finishes it, before
    anything else is taken. Also stops once `size` reaches `max_bytes`. Compiled with the
    core (issue 14, session 13): interpreted it was ~1 µs of every record a rebuild reads."""
    replace, pop = heapq.heapreplace, heapq.heappop
    for _ in range(room):
        part = heap[0][4]
        buf = part.buf
        record = buf.popleft()
        out.append(record)
        part.position = record.offset + 1
        timestamp = record.timestamp
        if timestamp > 0:
            clock = part.clock
            if clock is None or timestamp > clock:
                part.clock = timestamp
        value = record.value
        if value is not None:
            size += len(value)
        if buf:
            h = buf[0]
            replace(heap, (h.timestamp, h.topic, h.partition, h.offset, part))
        else:
            pop(heap)
            return size, part
        if size >= max_bytes:
            break
    return size, None


def clocks_after(records: Iterable[Record]) -> dict[Partition, int]:
    """Each partition's clock after `records` (already bounded): the highest timestamp."""
    out: dict[Partition, int] = {}
    for r in records:
        if r.timestamp > 0 and r.timestamp > out.get((r.topic, r.partition), 0):
            out[(r.topic, r.partition)] = r.timestamp
    return out


def ends_after(records: Iterable[Record]) -> dict[Partition, int]:
    """Each partition's next offset after `records`: one past the highest offset read."""
    out: dict[Partition, int] = {}
    for r in records:
        out[(r.topic, r.partition)] = max(out.get((r.topic, r.partition), 0), r.offset + 1)
    return out
