"""The projection's Kafka side: consume inbound topics in batches, hand each batch to
`apply_batch`, and keep the consumer positioned at the offsets stored in PostgreSQL.

Offsets that count are the ones committed with the state (aiokafka's
local_state_consumer pattern); Kafka commits are sent afterwards only as a hint for
lag tools. Records are applied in the canonical order replay uses (merge.py), so a
drained live service and a rebuild of the same logs hold the same state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from contracts.topics import Topics
from services.platform import gc_tuning, metrics
from services.platform.kafka import client_options
from services.store import repository as repo
from services.store.pool import DATABASE_UNAVAILABLE

from .assignor import Load, LoadBalancingAssignor, strategies
from .batch import BatchResult, apply_batch, dead_letter_record
from .gathering import Gathering
from .isolation import NOT_THE_RECORD, RETRIED, ConflictPersisted, apply_isolating
from .merge import CoPartitionMerge
from .pipeline import Pipeline
from .records import PartitionClocks, Record
from .resident import ResidentUsers

log = logging.getLogger("unifier.projection")

_CONFLICT_RETRIES = 20
_RETRIED: tuple[type[BaseException], ...] = (repo.Conflict, *RETRIED)
_OUTAGE_BACKOFF_MAX_S = 5.0
_MEASURE_S = 3.0  # the partitions' load, before a join: the group waits for it
_HINT_WAIT_S = 2.0  # at a stop, for the last offset hint (Kafka's offsets are a hint: the store decides)
# While records are held for the write in flight (gathering.py), how often the loop looks
# at what arrived meanwhile: the write's end wakes it at once; an arrival that makes the
# next batch worth preparing ahead is seen this late at most.
_LOOK_S = 0.01


class Stopped(Exception):
    """The service was told to stop while the database was away: the batch in hand was
    not applied (its offsets were not stored either), so the next start re-reads it."""


class _SeekToStored(ConsumerRebalanceListener):
    """Before every join, measure the partitions' load (the assignor sends it); on
    assignment, start each partition where PostgreSQL says we stopped."""

    def __init__(self, projection: Projection) -> None:
        self.projection = projection

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # aiokafka calls this before each join, the first one included (revoked empty).
        if self.projection.pipeline is not None:
            await self.projection.pipeline.settle()  # the batch in flight commits (or fails) first
        if self.projection.resident is not None and revoked:
            self.projection.resident.drop()  # another instance may write them next
        self.projection.forget_assignment()
        await self.projection.measure_load()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.projection.seek_to_stored(assigned)


class Projection:
    def __init__(
        self, pool: asyncpg.Pool, bootstrap: str, topics: Topics, group: str, batch_max: int, resident_users: int = 0,
        session_timeout_ms: int = 10_000, assignor: str = "load", pipelined: bool = True,
    ) -> None:
        self.pool = pool
        # Users kept between batches for the partitions we own (resident.py); 0: none.
        self.resident = ResidentUsers(resident_users) if resident_users > 0 else None
        # Batch N+1 prepared while N commits (pipeline.py): needs the resident users.
        self.pipeline = (
            Pipeline(pool, topics, self.resident, self.apply, self.batch_applied, stopping=lambda: self._stop.is_set())
            if pipelined and self.resident is not None else None
        )
        self._resident_seen = (0, 0, 0)  # hits, misses, drops already counted in metrics
        self.topics = topics
        self.batch_max = batch_max
        self.bootstrap = bootstrap
        self.balancing = LoadBalancingAssignor()
        self.measures = assignor == "load"  # only that assignor sends the partitions' load
        self.consumer = AIOKafkaConsumer(
            **client_options(bootstrap),
            group_id=f"{group}-projection",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            # A fetch that finds nothing new is answered after this long (default 500):
            # the embedded broker does not always answer early when records arrive, so
            # a fact published to an idle partition waited up to ~120 ms (50 ms: ~30).
            fetch_max_wait_ms=50,
            # Both give partition p of every inbound topic to the same instance: a
            # channel's facts on all three topics meet in one merge (merge.py). "load"
            # (UNIFIER_PARTITION_ASSIGNOR, the default) also balances the partitions'
            # traffic (assignor.py); "range" deals contiguous blocks.
            partition_assignment_strategy=strategies(assignor, self.balancing),
            # UNIFIER_KAFKA_SESSION_TIMEOUT_MS; heartbeats three times per session, as
            # aiokafka's defaults (10 s / 3 s) do. A rebalance still waits up to 10 s for
            # every member to rejoin: a batch in flight finishes first (seek_to_stored).
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(100, session_timeout_ms // 3),
            rebalance_timeout_ms=max(10_000, session_timeout_ms),
        )
        self.merge = CoPartitionMerge(heavy_topic=self.topics.import_rows)
        # Released records held for the next batch while one writes (group commit).
        self.gathered = Gathering(self.topics.import_rows, batch_max)
        self.healthy = False
        self._stop = asyncio.Event()
        self._fetched: dict[TopicPartition, int] = {}  # next offset after what we fetched
        self.clocks = PartitionClocks()  # bounds record timestamps as they are fetched
        self._clocks_stale: set[TopicPartition] = set()  # sought ahead: reload their clocks
        self._hints: set[asyncio.Future[None]] = set()  # offset hints on their way to Kafka

    async def measure_load(self) -> None:
        """Each inbound partition number's (backlog, applied) for the assignor to send at
        the next join (assignor.py). Best effort, bounded: a member that cannot measure
        sends nothing, and the leader goes by the others' figures or round-robin."""
        if not self.measures:
            return
        loads: dict[int, Load] = {}
        try:
            ends = await asyncio.wait_for(_end_offsets(self.bootstrap, self.topics.inbound), _MEASURE_S)
            stored = await asyncio.wait_for(repo.stored_positions(self.pool, self.topics.inbound), _MEASURE_S)
            for tp, end in ends.items():
                applied = stored.get((tp.topic, tp.partition), (0, None))[0]
                backlog, before = loads.get(tp.partition, (0, 0))
                loads[tp.partition] = (backlog + max(end - applied, 0), before + applied)
        except Exception as err:  # a hint for the assignor: the join must go on
            log.warning("partition load not measured (%s: %s); joining without it", type(err).__name__, err)
            loads = {}
        self.balancing.loads = loads

    def forget_assignment(self) -> None:
        """Revoked (aiokafka revokes every partition before a join): nothing buffered or
        fetched is ours until seek_to_stored positions the new assignment. aiokafka sets
        that assignment before it calls on_partitions_assigned and the loop runs in
        between: a merge still holding a partition that went to another member would ask
        its high watermark, which aiokafka refuses for a partition not assigned."""
        self.merge.assign(())
        self.gathered.clear()
        self._fetched = {}

    async def seek_to_stored(self, partitions: list[TopicPartition]) -> None:
        if self.resident is not None:
            self.resident.drop()  # a new assignment: start from the store
        self.merge.assign((tp.topic, tp.partition) for tp in partitions)
        self.gathered.clear()
        self._fetched = {}  # until sought, fetched records are dropped (run)
        # Without the stored offsets no position is right: wait the database out here
        # (the rebalance waits with us) rather than consume from a guessed offset.
        outages = 0
        while True:
            try:
                stored = await repo.stored_positions(self.pool, self.topics.inbound)
                break
            except DATABASE_UNAVAILABLE as err:
                outages += 1
                delay = min(0.2 * 2 ** min(outages, 5), _OUTAGE_BACKOFF_MAX_S)
                log.warning("database unavailable at assignment (%s); retrying in %.1f s", err, delay)
                if await _stopped_within(self._stop, delay):
                    return  # stopping: nothing will be consumed
        # A batch in flight may have finished meanwhile (_follow_store): start clean.
        self.merge.assign((tp.topic, tp.partition) for tp in partitions)
        self.gathered.clear()
        self._fetched = {}
        for tp in partitions:
            self._position(tp, *stored.get((tp.topic, tp.partition), (0, None)))

    def _position(self, tp: TopicPartition, offset: int, clock: int | None) -> None:
        """Read `tp` from `offset` on, bounding its records from `clock`, the one stored
        with that offset: the pair is set together so that no record is bounded with
        another offset's clock (replay = live)."""
        # Offset 0 when nothing is stored; auto_offset_reset=earliest covers a log whose start moved.
        self.consumer.seek(tp, offset)
        self._fetched[tp] = offset
        self.clocks.reset((tp.topic, tp.partition), clock if offset else None)
        self.merge.drop_below((tp.topic, tp.partition), offset)
        self.gathered.drop_below((tp.topic, tp.partition), offset)

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        await self.consumer.start()
        self.consumer.subscribe(list(self.topics.inbound), listener=_SeekToStored(self))
        try:
            more = False  # records left releasable after the last batch: do not wait
            gathered, pipeline = self.gathered, self.pipeline
            while not stop.is_set():
                if self._clocks_stale:
                    await self._reload_clocks()
                if gathered.records and pipeline is not None and pipeline.writing:
                    # Held for the write in flight (group commit, gathering.py): go on
                    # when it ends, or look at what arrived meanwhile every _LOOK_S.
                    await pipeline.written(_LOOK_S)
                wait_ms = 0 if more or gathered.records else 200
                fetched = await self.consumer.getmany(timeout_ms=wait_ms, max_records=self.batch_max)
                self.healthy = True
                for tp, msgs in fetched.items():
                    # Only records from where we positioned the partition: aiokafka makes
                    # a new assignment fetchable (from Kafka's committed hint) before
                    # seek_to_stored has read the store, and the clock would not be the
                    # one at their offset (replay = live; docs/decisions.md, "Partition
                    # clocks across a rebalance"). The seek fetches them again.
                    start = self._fetched.get(tp)
                    if start is None:
                        continue
                    msgs = [m for m in msgs if m.offset >= start]
                    if msgs:
                        # `record` for each message, in one compiled call (the bound
                        # below the last offset keeps them all: a fetch is in offset order).
                        bounded: list[Record] = []
                        self.clocks.extend(bounded.append, tp.topic, tp.partition, msgs, msgs[-1].offset + 1)
                        self.merge.add((tp.topic, tp.partition), bounded)
                        self._fetched[tp] = msgs[-1].offset + 1
                self._flow_control()
                released: list[Record] = []
                if gathered.room > 0:
                    # Into what is held (below gathering.LEAST, or it would have gone): an
                    # import chunk heavier than the room still comes, as the first record
                    # of a batch does, so a batch may pass the limit by that little.
                    released = self.merge.release(self._at_end, gathered.room)
                    gathered.add(released)
                more = self.merge.full
                if gathered.due(pipeline is not None and pipeline.writing):
                    records = gathered.take()
                else:
                    records = []
                    if released:
                        log.debug("%d records held for the next batch while one writes", len(gathered.records))
                if not records and (pipeline is None or not pipeline.busy or pipeline.writing or gathered.records):
                    # Nothing to apply, or held for the write in flight, or nothing yet
                    # but a write in flight: the loop goes on fetching (and gathering)
                    # while it writes; once it ended, its outcome is taken (drain) below.
                    continue
                # The batch in flight is finished even when a stop arrives meanwhile.
                try:
                    if pipeline is None:
                        await asyncio.shield(self.apply(records))
                    elif records:
                        await asyncio.shield(pipeline.feed(records))
                    else:  # nothing more to prepare: the batch that wrote is seen through
                        await asyncio.shield(pipeline.drain())
                except Stopped:
                    log.warning("stopped while the database was unavailable; the batch in hand is re-read at the next start")
                    break
                self._observe_lag()
            if self.pipeline is not None:
                try:
                    await asyncio.shield(self.pipeline.drain())
                except Stopped:
                    log.warning("stopped while the database was unavailable; the batch in hand is re-read at the next start")
        finally:
            # The last batch's hint is let through first: stopping the client under it
            # makes aiokafka log the commit's closed connection as an error.
            if self._hints:
                await asyncio.wait(self._hints, timeout=_HINT_WAIT_S)
            await self.consumer.stop()

    async def apply(self, records: list[Record]) -> BatchResult:
        """Apply the batch; a record that cannot be applied is found and dead-lettered
        and the rest applied (isolation.py); only an outage or a stop holds it up."""
        started = time.perf_counter()
        result = await apply_isolating(self._attempt, records, self._dead_letter, passthrough=(Stopped, *NOT_THE_RECORD))
        self.batch_applied(records, result, time.perf_counter() - started)
        return result

    def batch_applied(self, records: list[Record], result: BatchResult, elapsed: float) -> None:
        """A batch committed (by `apply` or the pipeline): metrics, offsets, the log line."""
        self.healthy = True
        gc_tuning.settle()
        metrics.BATCH_SECONDS.observe(elapsed)
        metrics.EVENTS_APPLIED.inc(result.applied)
        for code, n in result.dead_letters.items():
            metrics.DEAD_LETTERS.labels(code=code).inc(n)
        self._follow_store(result.next_offsets)
        if self.resident is not None:
            self._observe_resident(self.resident)
        log.info(
            "batch: %d records, %d applied, %d skipped, %d dead-lettered, %d published in %.1f ms",
            len(records), result.applied, result.skipped, sum(result.dead_letters.values()),
            result.published, elapsed * 1000,
        )

    async def _attempt(self, records: list[Record]) -> BatchResult:
        """One batch with retries: a conflict with another instance is retried with fresh
        state (G3), up to a bound (then ConflictPersisted: isolation dead-letters the
        record that keeps conflicting, code `conflict`); an outage is waited out."""
        return await self._outages_waited(self._conflicts_retried, records)

    async def _conflicts_retried(self, records: list[Record]) -> BatchResult:
        conflicts = 0
        while True:
            try:
                return await apply_batch(self.pool, self.topics, records, resident=self.resident)
            except _RETRIED as err:
                conflicts += 1
                metrics.CONFLICTS.inc()
                if conflicts >= _CONFLICT_RETRIES:
                    raise ConflictPersisted(f"still conflicting after {conflicts} attempts: {err}") from err
                log.warning("batch conflict (attempt %d): %s; retrying", conflicts, err)
                await asyncio.sleep(min(0.05 * conflicts, 1.0))

    async def _dead_letter(self, record: Record, code: str, reason: str) -> BatchResult:
        return await self._outages_waited(
            lambda rs: dead_letter_record(self.pool, self.topics, rs[0], code, reason), [record],
        )

    async def _outages_waited(
        self, work: Callable[[list[Record]], Awaitable[BatchResult]], records: list[Record],
    ) -> BatchResult:
        outages = 0
        while True:
            try:
                return await work(records)
            except NOT_THE_RECORD as err:
                # An outage is waited out however long it lasts (the transaction rolled
                # back; nothing of the batch is stored): crashing would only restart us
                # into the same outage. /healthz says degraded meanwhile. So is a server
                # refusing all work (disk full, read-only after a failover).
                outages += 1
                self.healthy = False
                delay = min(0.2 * 2 ** min(outages, 5), _OUTAGE_BACKOFF_MAX_S)
                log.warning("database unavailable (%s: %s); retrying the batch in %.1f s", type(err).__name__, err, delay)
                if await _stopped_within(self._stop, delay):
                    raise Stopped from err

    def _follow_store(self, next_offsets: dict[tuple[str, int], int]) -> None:
        """If another instance applied past what we fetched, jump ahead to its offsets;
        then hint Kafka with what is applied."""
        assigned = self.consumer.assignment()
        hint = {}
        for (topic, partition), offset in next_offsets.items():
            tp = TopicPartition(topic, partition)
            if tp not in assigned:
                continue
            if self._fetched.get(tp, 0) < offset:
                self.consumer.seek(tp, offset)
                self._fetched[tp] = offset
                self._clocks_stale.add(tp)  # the clock at that offset is the one stored with it
            self.merge.drop_below((topic, partition), offset)
            self.gathered.drop_below((topic, partition), offset)
            hint[tp] = offset
        if hint:
            sent = asyncio.ensure_future(self._commit_hint(hint))
            self._hints.add(sent)
            sent.add_done_callback(self._hints.discard)

    async def _reload_clocks(self) -> None:
        """Partitions sought ahead by _follow_store: read on from the stored offset with
        its clock (a rebalance meanwhile may have sought them again: the store decides)."""
        stale, self._clocks_stale = self._clocks_stale, set()
        while True:
            try:
                stored = await repo.stored_positions(self.pool, self.topics.inbound)
                break
            except DATABASE_UNAVAILABLE as err:
                log.warning("database unavailable while reading partition clocks (%s); retrying", err)
                if await _stopped_within(self._stop, _OUTAGE_BACKOFF_MAX_S):
                    return
        assigned = self.consumer.assignment()
        for tp in stale:
            if tp in self._fetched and tp in assigned:  # else a new assignment is being sought (seek_to_stored)
                self._position(tp, *stored.get((tp.topic, tp.partition), (0, None)))

    def _at_end(self, partition: tuple[str, int]) -> bool:
        """Everything the partition held at the last fetch response has been fetched.
        The high watermark comes with every fetch response, empty or not (exact on tansu
        and Kafka), so an idle co-partition holds the others back for one fetch at most."""
        tp = TopicPartition(*partition)
        if tp not in self.consumer.assignment():  # moved by a rebalance under way: wait for it
            return False
        high = self.consumer.highwater(tp)
        return high is not None and self._fetched.get(tp, 0) >= high

    def _flow_control(self) -> None:
        """Bound the memory of the merge: a partition far ahead of its co-partitions
        stops being fetched until the merge has caught up with it."""
        paused = self.consumer.paused()
        for tp in self.consumer.assignment():
            held = self.merge.buffered((tp.topic, tp.partition))
            if tp not in paused and held > 4 * self.batch_max:
                self.consumer.pause(tp)
            elif tp in paused and held <= self.batch_max:
                self.consumer.resume(tp)

    async def _commit_hint(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self.consumer.commit(offsets)
        except Exception as err:  # a hint only: a rebalance may have moved the partition
            log.debug("offset hint not committed: %s", err)

    def _observe_resident(self, resident: ResidentUsers) -> None:
        metrics.RESIDENT_USERS.set(len(resident))
        hits, misses, drops = resident.hits, resident.misses, resident.drops
        seen = self._resident_seen
        metrics.RESIDENT_LOOKUPS.labels(found="memory").inc(hits - seen[0])
        metrics.RESIDENT_LOOKUPS.labels(found="store").inc(misses - seen[1])
        metrics.RESIDENT_DROPS.inc(drops - seen[2])
        self._resident_seen = (hits, misses, drops)

    def _observe_lag(self) -> None:
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            position = self._fetched.get(tp)
            if position is None:
                continue
            metrics.CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(max(high - position, 0))


async def _end_offsets(bootstrap: str, topics: Iterable[str]) -> dict[TopicPartition, int]:
    """The end offset of every partition of `topics`, from a fetch response's high
    watermark, by a short-lived consumer outside the group (its start reads the cluster's
    metadata, which the group's consumer may not have yet at its first join). Not
    ListOffsets alone: tansu answers it with the last record batch's base offset + 1 (20
    records sent as one batch: 1), so it is only where the fetch starts (exact on Kafka,
    whose fetch there is then empty)."""
    peek = AIOKafkaConsumer(
        **client_options(bootstrap), group_id=None, enable_auto_commit=False, fetch_max_wait_ms=10,
        max_partition_fetch_bytes=64 * 1024,
    )
    await peek.start()
    try:
        tps = [TopicPartition(t, p) for t in sorted(topics) for p in sorted(peek.partitions_for_topic(t) or ())]
        if not tps:
            return {}
        peek.assign(tps)
        for tp, offset in (await peek.end_offsets(tps)).items():
            peek.seek(tp, offset)
        while any(peek.highwater(tp) is None for tp in tps):
            await peek.getmany(timeout_ms=50)
        return {tp: peek.highwater(tp) or 0 for tp in tps}
    finally:
        await peek.stop()


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True
