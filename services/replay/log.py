"""Read retained partitions with a manual-assignment consumer (no group, no commits).

`LogReader` reads every partition of some topics from a start offset (default: the
beginning) up to a stop offset, and yields the records either merged in the canonical
order (docs/design.md, Flow 5: each partition in offset order, partitions and topics merged
by record timestamp, ties broken by topic, partition, offset — a streaming k-way merge
equal to `records.canonical_order` over the whole log) or partition by partition.

Where the log ends: tansu answers ListOffsets with end offsets that lag the real ones
by a few hundred records per partition, so the reported end is only a floor. When no
stop offsets are given, `LogReader` probes before reading: it fetches every partition
from its reported end until its position has reached the high watermark carried by
the fetch responses (exact on tansu and on Kafka), then pauses it; the positions
reached are the stop offsets. A busy log is snapshotted, not chased: records appended
later are left for the next reader (a replay catches up to the live service's offsets
separately). Where a broker sends no high watermark, a partition counts as ended after
`quiet_s` without a record. With stop offsets known up front the merge never waits on
a partition that might be finished, and a partition that does not deliver records up
to its stop within `short_timeout_s` fails with `LogShort` (e.g. a broker that lost
its memory storage).
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer import fetcher as _fetcher

from services.platform.kafka import client_options
from services.projection.records import LogPart, PartitionClocks, Record, take_merged

log = logging.getLogger("unifier.replay")

# Values per list `merged` hands out, about: bounds a rebuild's memory for records read
# ahead whatever their size (1,000 boots are ~200 KB, one import chunk up to 256 KiB).
LIST_BYTES = 32 * 1024 * 1024

Partition = tuple[str, int]


# aiokafka's class, kept on its module so that a second import of this one (a reload)
# subclasses it and not the function below.
_PartitionRecords = _fetcher.__dict__.setdefault("_unifier_partition_records", _fetcher.PartitionRecords)


class _RawRecords(_PartitionRecords):  # type: ignore[misc,valid-type]
    """A fetched partition's records as the record batch's own (aiokafka's compiled
    `DefaultRecord`: offset, timestamp, timestamp_type, key, value — all that
    `PartitionClocks.extend` reads), not a `ConsumerRecord` each: that dataclass, built
    in Python with eleven fields, its sizes and its headers' tuple, was ~1 µs of every
    record a rebuild reads (issue 14, session 14). aiokafka's own unpacking still runs
    (control batches, transactions, compacted offsets, `next_fetch_offset` for the
    consumer's position). Iterated directly (`__iter__` hands out the generator), not
    through `__next__`'s extra frame. Only `LogReader`'s consumer gets these
    (`_partition_records` keys on its `_RAW` deserializer)."""

    def _consumer_record(self, tp: TopicPartition, record: object) -> object:
        return record

    def __iter__(self) -> object:
        it = self._records_iterator
        return it if it is not None else iter(())


def _RAW(raw: bytes | None) -> bytes | None:
    """LogReader's consumer's deserializer: never called (`_RawRecords` hands out the
    batch's records); its identity selects `_RawRecords`."""
    return raw


def _partition_records(
    tp: TopicPartition, records: object, aborted_transactions: object, fetch_offset: int,
    key_deserializer: object, value_deserializer: object, check_crcs: bool, isolation_level: int,
) -> object:
    """What aiokafka's fetcher builds for each fetched partition: `_RawRecords` for a
    `LogReader`'s consumer, aiokafka's own class for every other consumer."""
    cls = _RawRecords if value_deserializer is _RAW else _PartitionRecords
    return cls(
        tp, records, aborted_transactions, fetch_offset, key_deserializer, value_deserializer, check_crcs,
        isolation_level,
    )


# aiokafka (pinned, pyproject.toml) names the class at the one place it builds one
# (Fetcher._proc_fetch_request); tests/unit/test_replay_log.py checks both kinds.
_fetcher.PartitionRecords = _partition_records


class LogShort(RuntimeError):
    """The log does not hold records up to the offsets asked for (lost broker storage?)."""


class LogReader:
    """`async with LogReader(bootstrap, topics) as log: async for chunk in log.merged():`

    `start` / `stop` map (topic, partition) to offsets. Partitions missing from `start`
    are read from the beginning; with `stop` given, partitions missing from it are not
    read at all. `next_offsets` is the offset after the last record handed out, per
    partition: what a consumer resuming from here reads next.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        *,
        start: Mapping[Partition, int] | None = None,
        stop: Mapping[Partition, int] | None = None,
        clocks: Mapping[Partition, int] | None = None,
        quiet_s: float = 1.0,
        probe_cap_s: float = 30.0,
        short_timeout_s: float = 30.0,
        fetch_records: int = 5000,
    ) -> None:
        self.topics = list(topics)
        self._start = dict(start or {})
        self._stop = dict(stop) if stop is not None else None
        # Records' timestamps are bounded as the live consumer bounds them; `clocks` are
        # the stored clocks of the `start` offsets (none: from the log's start).
        self._clocks = PartitionClocks(clocks)
        self.quiet_s = quiet_s
        self.probe_cap_s = probe_cap_s
        self.short_timeout_s = short_timeout_s
        self.fetch_records = fetch_records
        self.consumer = AIOKafkaConsumer(
            **client_options(bootstrap),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            fetch_max_wait_ms=50,
            key_deserializer=_RAW,
            value_deserializer=_RAW,  # selects _RawRecords
        )
        self._parts: dict[TopicPartition, LogPart] = {}
        self.reported_ends: dict[Partition, int] = {}
        self.records_read = 0

    async def __aenter__(self) -> LogReader:
        await self.consumer.start()
        try:
            await self._assign()
        except BaseException:
            await self.consumer.stop()
            raise
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.consumer.stop()

    @property
    def stops(self) -> dict[Partition, int]:
        """The stop offset of every partition: where this reader's log ends."""
        return {(tp.topic, tp.partition): p.stop for tp, p in self._parts.items()}

    @property
    def next_offsets(self) -> dict[Partition, int]:
        return {(tp.topic, tp.partition): p.position for tp, p in self._parts.items()}

    @property
    def next_clocks(self) -> dict[Partition, int]:
        """Each partition's clock at `next_offsets` (what the live service stores with them)."""
        return {(tp.topic, tp.partition): p.clock for tp, p in self._parts.items() if p.clock is not None}

    @property
    def total(self) -> int:
        """Offsets between start and stop over all partitions (≥ the records to read)."""
        return sum(max(p.stop - p.position, 0) for p in self._parts.values())

    async def _assign(self) -> None:
        await self.consumer.topics()  # metadata of every topic
        tps = [
            TopicPartition(topic, p)
            for topic in self.topics
            for p in sorted(self.consumer.partitions_for_topic(topic) or ())
        ]
        if not tps:
            return
        self.consumer.assign(tps)
        ends = await self.consumer.end_offsets(tps)
        begins = await self.consumer.beginning_offsets(tps)
        self.reported_ends = {(tp.topic, tp.partition): ends[tp] for tp in tps}
        starts = {tp: max(self._start.get((tp.topic, tp.partition), 0), begins[tp]) for tp in tps}
        if self._stop is not None:
            stops = {tp: self._stop.get((tp.topic, tp.partition), starts[tp]) for tp in tps}
        else:
            stops = await self._probe_ends({tp: max(ends[tp], starts[tp]) for tp in tps})
        for tp in tps:
            part = LogPart(tp, stop=stops[tp], position=starts[tp], clock=self._clocks.at.get((tp.topic, tp.partition)))
            self._parts[tp] = part
            self.consumer.seek(tp, part.position)
            if part.position >= part.stop:
                self._finish(part)

    async def _probe_ends(self, floors: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Read on from each reported end to the high watermark of the fetch responses
        (exact on tansu, unlike its ListOffsets answer); the positions reached.

        A partition is at its end once its position has reached both its reported end
        and the high watermark of a fetch response; it is then paused, so traffic that
        arrives later does not move its end (a snapshot: the catch-up takes the rest).
        A partition whose responses carry no high watermark ends after `quiet_s`
        without a record. Either way the probe gives up after `probe_cap_s` and takes
        the positions reached: a reader must end even on a log that never rests.
        """
        for tp, floor in floors.items():
            self.consumer.seek(tp, floor)
        open_ = set(floors)
        started = time.monotonic()
        last_record = dict.fromkeys(floors, started)
        tail = 0
        while open_:
            fetched = await self.consumer.getmany(*open_, timeout_ms=50, max_records=self.fetch_records)
            now = time.monotonic()
            for tp, msgs in fetched.items():
                if msgs:
                    last_record[tp] = now
                    tail += len(msgs)
            for tp in list(open_):
                position = await self.consumer.position(tp)
                high = self.consumer.highwater(tp)
                if position < floors[tp]:
                    continue
                if (high is not None and position >= high) or (high is None and now - last_record[tp] >= self.quiet_s):
                    open_.discard(tp)
                    self.consumer.pause(tp)
            if now - started > self.probe_cap_s:
                log.warning("log end probe gave up after %.0fs on %d partitions", self.probe_cap_s, len(open_))
                break
        ends = {tp: await self.consumer.position(tp) for tp in floors}
        self.consumer.resume(*floors)
        log.debug("log end probed in %.2fs: %d records past the reported ends", time.monotonic() - started, tail)
        return ends

    # -- reading ---------------------------------------------------------------------

    async def _fill(self) -> None:
        """One fetch round for the partitions with nothing buffered. aiokafka holds at most
        one fetch response per partition, so asking only for the empty ones bounds memory
        whatever the timestamps' skew between partitions."""
        needy = [tp for tp, p in self._parts.items() if not p.done and not p.buf]
        if not needy:
            return
        fetched = await self.consumer.getmany(*needy, timeout_ms=100, max_records=self.fetch_records)
        now = time.monotonic()
        for tp, msgs in fetched.items():
            part = self._parts[tp]
            self._clocks.extend(part.buf.append, tp.topic, tp.partition, msgs, part.stop)
            part.idle_since = None
        for tp in needy:
            part = self._parts[tp]
            if part.buf:
                continue
            # The consumer's position is past everything getmany returned, including
            # offsets without a record for us (control records, compacted gaps).
            if max(part.position, await self.consumer.position(tp)) >= part.stop:
                self._finish(part)
            elif part.idle_since is None:
                part.idle_since = now
            elif now - part.idle_since > self.short_timeout_s:
                raise LogShort(
                    f"{tp.topic}[{tp.partition}]: no record at offset {part.position} although "
                    f"records up to {part.stop} were expected"
                )

    def _finish(self, part: LogPart) -> None:
        part.done = True
        part.position = max(part.position, part.stop)
        self.consumer.pause(part.tp)  # stop prefetching what we will not read

    def _take(self, part: LogPart) -> Record:
        record = part.buf.popleft()
        part.position = record.offset + 1
        if record.timestamp > 0 and (part.clock is None or record.timestamp > part.clock):
            part.clock = record.timestamp
        return record

    async def merged(self, chunk: int = 10_000, max_bytes: int = LIST_BYTES) -> AsyncIterator[list[Record]]:
        """Every record in the canonical order, in lists of up to `chunk` records and about
        `max_bytes` of values (a list ends after the record that reaches it): since 1.3.0
        an import record carries up to 256 KiB of rows, and a rebuild holds a few lists at
        once (read ahead, applying), so a count alone would let 10,000 chunks (~2 GB)
        into one list."""
        # The heap holds each unfinished partition's head, keyed by the canonical order
        # (never a tie: offsets are unique in a partition, so `LogPart` is never compared).
        heap: list[tuple[int, str, int, int, LogPart]] = []
        waiting = [p for p in self._parts.values() if not p.done]
        push = heapq.heappush
        out: list[Record] = []
        size = 0
        while True:
            while waiting:
                await self._fill()
                still = []
                for part in waiting:
                    if part.buf:
                        h = part.buf[0]
                        push(heap, (h.timestamp, h.topic, h.partition, h.offset, part))
                    elif not part.done:
                        still.append(part)
                waiting = still
            if not heap:
                break
            # Emit while every unfinished partition has its head in the heap: the loop
            # that runs once per record of the log is `take_merged`, compiled; it stops
            # at a partition whose buffer it emptied, which is fetched again before
            # anything else is emitted, or finished.
            while True:
                size, emptied = take_merged(heap, out, chunk - len(out), size, max_bytes)
                if emptied is None:
                    break
                if emptied.position < emptied.stop:
                    waiting.append(emptied)  # its next records are fetched before anything else is emitted
                    break
                self._finish(emptied)
                if not heap or size >= max_bytes or len(out) >= chunk:
                    break
            if len(out) >= chunk or size >= max_bytes:
                self.records_read += len(out)
                yield out
                out, size = [], 0
        if out:
            self.records_read += len(out)
            yield out

    async def per_partition(self, chunk: int = 10_000) -> AsyncIterator[list[Record]]:
        """Every record, partition by partition in offset order (no merge)."""
        for tp in sorted(self._parts, key=lambda t: (t.topic, t.partition)):
            part = self._parts[tp]
            while True:
                while not part.buf and not part.done:
                    await self._fill()
                if not part.buf:
                    break
                out = [self._take(part) for _ in range(min(chunk, len(part.buf)))]
                if part.position >= part.stop:
                    self._finish(part)
                self.records_read += len(out)
                yield out
