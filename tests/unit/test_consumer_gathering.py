"""Group commit in the pipelined consumer (services/projection/gathering.py, the loop in
consumer.py): while a batch's write is in flight, what arrives gathers into the next
batch; an idle service applies a lone record at once; a gathering worth preparing ahead
goes at once; held records are dropped at a revocation and read again from the store.

The rule is pinned on `Gathering` alone, then through `Projection.run` with a fake
consumer (records arrive when the test publishes them, a rebalance follows aiokafka's
order: reassignment flagged, revocation listener, new positions, assignment listener)
and a fake pipeline whose write stays open until the test ends it. The real pipeline
and PostgreSQL: tests/integration/test_pipeline_gathering.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition

from contracts.topics import Topics
from services.projection import gathering
from services.projection.consumer import Projection
from services.projection.gathering import Gathering
from services.projection.merge import ROW_BYTES
from services.projection.records import Record
from services.store import repository as repo
from tests.support.infra import wait_for

TOPICS = Topics("t_gather.")
SDK = TopicPartition(TOPICS.sdk_events, 0)
CO = [TopicPartition(TOPICS.commands, 0), TopicPartition(TOPICS.import_rows, 0)]  # idle co-partitions
T = 1_746_316_800_000


def _rec(offset: int, topic: str = TOPICS.sdk_events, size: int = 2) -> Record:
    return Record(topic, 0, offset, T + offset, b"ch", b"x" * size)


# -- the rule, on Gathering alone ------------------------------------------------------------


def test_group_commit_an_idle_service_applies_a_lone_record_at_once() -> None:
    g = Gathering(TOPICS.import_rows, limit=5000)
    assert not g.due(writing=False)  # nothing gathered: nothing to do
    g.add([_rec(0)])
    assert g.due(writing=False)


def test_group_commit_while_a_write_is_in_flight_a_small_gathering_waits_for_it() -> None:
    g = Gathering(TOPICS.import_rows, limit=5000, least=200)
    g.add([_rec(i) for i in range(199)])
    assert not g.due(writing=True)
    assert g.due(writing=False)  # the write ended: it goes, whatever its size


def test_group_commit_a_gathering_worth_preparing_ahead_goes_while_a_write_is_in_flight() -> None:
    g = Gathering(TOPICS.import_rows, limit=5000, least=200)
    g.add([_rec(i) for i in range(200)])
    assert g.due(writing=True)
    # An import chunk weighs by its size (merge.ROW_BYTES a record), as in the batch limit.
    g = Gathering(TOPICS.import_rows, limit=5000, least=200)
    g.add([_rec(0, TOPICS.import_rows, size=199 * ROW_BYTES)])
    assert g.weight == 199 and not g.due(writing=True)
    g.add([_rec(1)])
    assert g.due(writing=True)


def test_group_commit_the_batch_limit_bounds_what_is_gathered() -> None:
    g = Gathering(TOPICS.import_rows, limit=50)  # UNIFIER_BATCH_MAX below LEAST
    assert g.least == 50
    g.add([_rec(i) for i in range(30)])
    assert g.room == 20 and not g.due(writing=True)
    g.add([_rec(i) for i in range(30, 50)])
    assert g.room == 0 and g.due(writing=True)
    assert [r.offset for r in g.take()] == list(range(50))
    assert g.records == [] and g.weight == 0 and g.room == 50


def test_group_commit_held_records_another_instance_applied_are_dropped() -> None:
    g = Gathering(TOPICS.import_rows, limit=5000)
    other = Record(TOPICS.commands, 0, 1, T, b"ch", b"{}")
    g.add([_rec(3), other, _rec(4), _rec(5)])
    g.drop_below((TOPICS.sdk_events, 0), 5)
    assert g.records == [other, _rec(5)] and g.weight == 2
    g.clear()
    assert g.records == [] and g.weight == 0


# -- the rule in the consumer's loop ---------------------------------------------------------


class _Msg:
    def __init__(self, offset: int, size: int) -> None:
        self.offset, self.timestamp, self.timestamp_type, self.key, self.value = offset, T + offset, 0, b"ch", b"x" * size


class _Consumer:
    """What Projection.run uses of AIOKafkaConsumer. `publish` appends to the sdk-events
    partition's log; getmany returns what is past the position (waiting up to its
    timeout for an arrival); `rebalance` runs aiokafka's order of events at a join."""

    def __init__(self, stored: dict[tuple[str, int], int]) -> None:
        self.log: list[int] = []  # the sdk-events partition: each record's size
        self.position: dict[TopicPartition, int] = {}
        self.stored = stored
        self.listener: Any = None
        self.arrived = asyncio.Event()
        self.reassigning: asyncio.Event | None = None
        self.fetches = 0

    async def start(self) -> None: ...
    async def stop(self) -> None: ...

    def subscribe(self, _topics: list[str], listener: Any) -> None:
        self.listener = listener

    def assignment(self) -> set[TopicPartition]:
        return set(self.position)

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.log) if tp == SDK else 0

    def paused(self) -> set[TopicPartition]:
        return set()

    def pause(self, tp: TopicPartition) -> None: ...
    def resume(self, tp: TopicPartition) -> None: ...

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position[tp] = offset

    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...

    def publish(self, *sizes: int) -> None:
        self.log.extend(sizes)
        self.arrived.set()

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[_Msg]]:
        if self.reassigning is not None:  # as aiokafka: nothing is returned during a reassignment
            await self.reassigning.wait()
        start = self.position.get(SDK)
        if (start is None or start >= len(self.log)) and timeout_ms:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), timeout_ms / 1000)
            except TimeoutError:
                pass
        self.fetches += 1
        start = self.position.get(SDK)
        if start is None or start >= len(self.log):
            return {}
        msgs = [_Msg(o, self.log[o]) for o in range(start, len(self.log))][:max_records]
        self.position[SDK] = msgs[-1].offset + 1
        return {SDK: msgs}

    async def rebalance(self) -> None:
        """aiokafka's join: reassignment flagged, revocation listener (it waits for the
        write in flight: Pipeline.settle), positions from the committed hint, assignment
        listener (seek_to_stored), reassignment over."""
        self.reassigning = asyncio.Event()
        await self.listener.on_partitions_revoked(list(self.position))
        self.position = {tp: 0 for tp in (SDK, *CO)}
        await self.listener.on_partitions_assigned(list(self.position))
        self.reassigning.set()
        self.reassigning = None


class _Pipeline:
    """What the loop uses of Pipeline: `feed` prepares (records it), waits for the write in
    flight, then starts its own, which stays open until the test calls `end_write`; each
    write that ends stores its records' offsets, as the batch's transaction does."""

    def __init__(self, stored: dict[tuple[str, int], int]) -> None:
        self.fed: list[list[int]] = []
        self.stored = stored
        self._write: asyncio.Future[None] | None = None
        self._records: list[Record] = []

    @property
    def busy(self) -> bool:
        return self._write is not None

    @property
    def writing(self) -> bool:
        return self._write is not None and not self._write.done()

    async def written(self, within: float) -> None:
        if self._write is not None:
            await asyncio.wait([self._write], timeout=within)

    async def settle(self) -> None:
        if self._write is not None:
            await asyncio.wait([self._write])

    async def feed(self, records: list[Record]) -> None:
        self.fed.append([r.offset for r in records])
        await self.drain()
        self._write, self._records = asyncio.get_running_loop().create_future(), records

    async def drain(self) -> bool:
        if self._write is not None:
            await self._write
            self._write = None
        return True

    def end_write(self) -> None:
        assert self._write is not None and not self._write.done()
        for r in self._records:
            key = (r.topic, r.partition)
            self.stored[key] = max(self.stored.get(key, 0), r.offset + 1)
        self._write.set_result(None)


class _Running:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, batch_max: int = 5000) -> None:
        self.stored: dict[tuple[str, int], int] = {}
        monkeypatch.setattr(repo, "stored_positions", self._positions)
        self.projection = Projection(  # type: ignore[arg-type]
            None, "127.0.0.1:1", TOPICS, "g", batch_max=batch_max, resident_users=10, assignor="range",
        )
        self.consumer = _Consumer(self.stored)
        self.pipeline = _Pipeline(self.stored)
        self.stop = asyncio.Event()

    async def _positions(self, _conn: object, _topics: object) -> dict[tuple[str, int], tuple[int, int | None]]:
        return {p: (o, None) for p, o in self.stored.items()}

    async def __aenter__(self) -> _Running:
        await self.projection.consumer.stop()  # never started: replaced by the fake
        self.projection.consumer = self.consumer  # type: ignore[assignment]
        self.projection.pipeline = self.pipeline  # type: ignore[assignment]
        self.task = asyncio.create_task(self.projection.run(self.stop))
        await wait_for(lambda: self.consumer.listener is not None, timeout=5, interval=0)
        self.consumer.position = {tp: 0 for tp in (SDK, *CO)}
        await self.consumer.listener.on_partitions_assigned(list(self.consumer.position))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        self.consumer.arrived.set()

        def stopped() -> bool:  # every write still open is let end: a stop finishes the batch in flight
            if self.pipeline.writing:
                self.pipeline.end_write()
            return self.task.done()

        await wait_for(stopped, timeout=5, interval=0.001)
        await self.task

    async def fed(self, n: int) -> list[list[int]]:
        await wait_for(lambda: len(self.pipeline.fed) >= n, timeout=5, interval=0.001,
                       message=f"{n} batches fed; so far {self.pipeline.fed}")
        return self.pipeline.fed

    async def looked(self, turns: int = 3) -> None:
        """The loop fetched `turns` more times: what arrived before has been released and
        gathered (or fed)."""
        seen = self.consumer.fetches
        await wait_for(lambda: self.consumer.fetches >= seen + turns, timeout=5, interval=0.001)


async def test_group_commit_a_lone_record_is_a_batch_at_once_when_nothing_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    async with _Running(monkeypatch) as run:
        run.consumer.publish(2)
        assert await run.fed(1) == [[0]]


async def test_group_commit_records_arriving_during_a_write_make_one_batch_when_it_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three arrivals while batch 0 writes: before, each was a batch (and a transaction)
    of its own; now one batch, handed to the pipeline as soon as the write ended."""
    async with _Running(monkeypatch) as run:
        run.consumer.publish(2)
        await run.fed(1)
        for _ in range(3):
            run.consumer.publish(2)
            await run.looked()
        assert run.pipeline.fed == [[0]]  # held: batch 0 still writes
        run.pipeline.end_write()
        assert await run.fed(2) == [[0], [1, 2, 3]]


async def test_group_commit_a_gathering_worth_preparing_ahead_is_fed_while_the_write_is_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What reaches gathering.LEAST goes at once, so its preparation overlaps the write
    (the pipeline's point); a boot held before it goes with it."""
    async with _Running(monkeypatch) as run:
        run.consumer.publish(2)
        await run.fed(1)
        run.consumer.publish(2)
        await run.looked()
        run.consumer.publish(*[2] * (gathering.LEAST - 1))
        fed = await run.fed(2)
        assert run.pipeline.writing  # batch 0 has not ended
        assert fed == [[0], list(range(1, gathering.LEAST + 1))]


async def test_group_commit_held_records_are_dropped_at_a_revocation_and_read_once_from_the_stored_offset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rebalance while records are held for the write in flight: the partition may go to
    another member, so they are not applied from memory after it; nothing of them was
    stored, so whoever owns the partition reads them again, here us, once."""
    async with _Running(monkeypatch) as run:
        run.consumer.publish(2)
        await run.fed(1)
        run.consumer.publish(2, 2)
        await run.looked()
        assert run.projection.gathered.records  # held
        rebalance = asyncio.create_task(run.consumer.rebalance())
        await wait_for(lambda: run.consumer.reassigning is not None, timeout=5, interval=0)
        run.pipeline.end_write()  # the revocation listener waited for it (settle)
        await rebalance
        assert await run.fed(2) == [[0], [1, 2]]  # from the stored offset 1: once, not twice
        run.pipeline.end_write()
        await run.looked()
        assert run.pipeline.fed == [[0], [1, 2]]
