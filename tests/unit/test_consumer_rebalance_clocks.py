"""A rebalance must not let the live consumer bound a record with another offset's
clock (B4 via records.PartitionClocks; replay = live, docs/design.md "Determinism").

aiokafka makes a new assignment fetchable before it calls `on_partitions_assigned`:
its fetcher positions the partitions at Kafka's committed offsets (the service's lag
hint) and `getmany` returns their records while our listener still awaits the stored
offsets and clocks (aiokafka group_coordinator._on_join_complete). The consumer's
in-memory clock is then the one after everything fetched before the rebalance, not the
one at the hint. A record more than 24 h past its partition's clock (the first record of
a workload round in the replay and kill -9 tests) was kept at its producer time live and
lowered to clock + 24 h by a rebuild: users differing in createdAt/lastSeenAt/sessionsCount.

A fake consumer plays that order of events deterministically; the store and the batch
are fakes too (the real ones only add PostgreSQL, not the race)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest
from aiokafka import TopicPartition

from contracts.topics import Topics
from services.projection import consumer as consumer_module
from services.projection.batch import BatchResult
from services.projection.consumer import Projection
from services.projection.records import MAX_AHEAD_MS, PartitionClocks, Record, clocks_after
from services.store import repository as repo
from tests.support.infra import wait_for

T = 1_746_316_800_000
H = 60 * 60 * 1000
TOPICS = Topics("t_clock.")
SDK = TopicPartition(TOPICS.sdk_events, 0)
CMD = TopicPartition(TOPICS.commands, 0)
# Round 0, then round 1 starting 26 h later (services/replay/workload.py mixed_rounds).
LOG = {
    SDK: [T, T + 1, T + 2, T + 26 * H, T + 26 * H + 1, T + 26 * H + 2],
    CMD: [T + 26 * H + 3],
}


class _Msg:
    def __init__(self, offset: int, timestamp: int) -> None:
        self.offset, self.timestamp, self.timestamp_type, self.key, self.value = offset, timestamp, 0, b"k", b"{}"


class _Store:
    """inbox_offsets: next offset and clock per partition; reads can be held."""

    def __init__(self) -> None:
        self.offsets: dict[tuple[str, int], int] = {}
        self.clocks: dict[tuple[str, int], int] = {}
        self.gate = asyncio.Event()
        self.gate.set()
        self.asked = 0  # reads of the stored positions begun
        self.applied: dict[tuple[str, int, int], int] = {}  # (topic, partition, offset) -> timestamp applied with

    async def stored_positions(self, _conn: object, _topics: Iterable[str]) -> dict[tuple[str, int], tuple[int, int | None]]:
        self.asked += 1
        await self.gate.wait()
        return {p: (o, self.clocks.get(p)) for p, o in self.offsets.items()}

    async def apply_batch(self, _pool: object, _topics: Topics, records: list[Record], **_: object) -> BatchResult:
        ends: dict[tuple[str, int], int] = {}
        for r in records:
            p = (r.topic, r.partition)
            if r.offset >= self.offsets.get(p, 0):  # the inbox: applied once
                self.applied[(r.topic, r.partition, r.offset)] = r.timestamp
            ends[p] = max(ends.get(p, 0), r.offset + 1)
        nxt = {p: max(o, self.offsets.get(p, 0)) for p, o in ends.items()}
        self.offsets.update(nxt)
        for p, c in clocks_after(records).items():
            self.clocks[p] = max(c, self.clocks.get(p, c))
        return BatchResult(applied=len(records), next_offsets=nxt)


class _Consumer:
    """What Projection.run uses of AIOKafkaConsumer, with aiokafka's order of events at
    an assignment: positions from the committed offsets first, the listener after, in
    the coordinator's task, while getmany goes on."""

    def __init__(self, script: list[str], store: _Store, stop: asyncio.Event) -> None:
        self.script, self.store, self.stop_event = script, store, stop
        self.position: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.listener = None
        self.listening: asyncio.Task[None] | None = None

    async def start(self) -> None: ...
    async def stop(self) -> None: ...

    def subscribe(self, _topics: list[str], listener: object) -> None:
        self.listener = listener

    def assignment(self) -> set[TopicPartition]:
        return set(self.position)

    def highwater(self, tp: TopicPartition) -> int:
        assert tp in self.position, "Partition is not assigned"  # as aiokafka asserts
        return len(LOG[tp])

    def paused(self) -> set[TopicPartition]:
        return set()

    def pause(self, tp: TopicPartition) -> None: ...
    def resume(self, tp: TopicPartition) -> None: ...

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position[tp] = offset

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed.update(offsets)

    async def _assign(self) -> None:
        assert self.listener is not None
        await self.listener.on_partitions_revoked(list(self.position))
        self.position = {tp: self.committed.get(tp, 0) for tp in (SDK, CMD)}  # fetchable before the listener
        asked = self.store.asked
        self.listening = asyncio.ensure_future(self.listener.on_partitions_assigned(list(self.position)))
        await wait_for(lambda: self.store.asked > asked, timeout=5, interval=0)  # the listener reached the store

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[_Msg]]:
        step = self.script.pop(0) if self.script else "stop"
        if step == "assign":
            await self._assign()
            assert self.listening is not None
            await self.listening
            return {}
        if step == "rebalance, store slow":
            self.store.gate.clear()
            await self._assign()
        if step == "store answers":
            self.store.gate.set()
            assert self.listening is not None
            await self.listening
            return {}
        if step == "stop":
            self.stop_event.set()
            return {}
        want = step.split(" only")[0]  # "sdk only": the commands partition's fetch comes later
        out = {}
        for tp in (SDK, CMD):
            if (want == "sdk" and tp != SDK) or tp not in self.position:
                continue
            start = self.position[tp]
            msgs = [_Msg(o, ts) for o, ts in enumerate(LOG[tp]) if o >= start][:max_records]
            if msgs:
                out[tp] = msgs
                self.position[tp] = msgs[-1].offset + 1
        return out


def _rebuild() -> dict[tuple[str, int, int], int]:
    """The timestamps a rebuild gives the records (each partition bounded from its start)."""
    clocks = PartitionClocks()
    return {
        (tp.topic, tp.partition, o): clocks.bound((tp.topic, tp.partition), ts)
        for tp in (SDK, CMD) for o, ts in enumerate(LOG[tp])
    }


@pytest.mark.parametrize(("stored", "script"), [
    # Fetched past the round's first record (held back by the commands partition), then
    # a rebalance whose listener waits for the store while getmany returns records from
    # the committed hint: they met the clock after everything fetched before.
    ({}, ["assign", "sdk only", "sdk only", "rebalance, store slow", "records", "store answers", "records", "records"]),
    # A restart (after kill -9, or the service started again after a rebuild) with the
    # stored offset and the hint at the round's first record: it met an empty clock.
    ({SDK: 3}, ["rebalance, store slow", "records", "store answers", "records", "records"]),
    # The same without the race: the baselines.
    ({}, ["assign", "sdk only", "sdk only", "records", "records"]),
    ({SDK: 3}, ["assign", "records", "records"]),
])
async def test_d_b4_records_fetched_during_a_rebalance_are_bounded_with_the_clock_of_their_offset(
    monkeypatch: pytest.MonkeyPatch, stored: dict[TopicPartition, int], script: list[str],
) -> None:
    store = _Store()
    rebuilt = _rebuild()
    for tp, offset in stored.items():  # what an earlier run stored: offset, clock, and the Kafka hint
        store.offsets[(tp.topic, tp.partition)] = offset
        store.clocks[(tp.topic, tp.partition)] = max(rebuilt[(tp.topic, tp.partition, o)] for o in range(offset))
    monkeypatch.setattr(repo, "stored_positions", store.stored_positions)
    monkeypatch.setattr(consumer_module, "apply_batch", store.apply_batch)
    stop = asyncio.Event()
    projection = Projection(None, "127.0.0.1:1", TOPICS, "g", batch_max=3)  # type: ignore[arg-type]
    await projection.consumer.stop()  # never started: replaced by the fake
    projection.consumer = fake = _Consumer(script, store, stop)  # type: ignore[assignment]
    fake.committed = dict(stored)

    await asyncio.wait_for(projection.run(stop), 10)

    assert rebuilt[(SDK.topic, 0, 3)] == T + 2 + MAX_AHEAD_MS  # the round's first record is lowered
    assert store.applied == {k: ts for k, ts in rebuilt.items() if k[2] >= stored.get(TopicPartition(k[0], k[1]), 0)}
    assert store.clocks == {(SDK.topic, 0): T + 26 * H + 2, (CMD.topic, 0): T + 26 * H + 3}



class _LateListener(_Consumer):
    """aiokafka's order at a join (group_coordinator._on_join_complete): the new
    assignment is set, then the coordinator awaits (its commit refresh task) before it
    calls on_partitions_assigned, and getmany goes on meanwhile."""

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[_Msg]]:
        if self.script and self.script[0] == "rebalance, listener late":
            self.script.pop(0)
            assert self.listener is not None
            await self.listener.on_partitions_revoked(list(self.position))
            self.position = {SDK: self.committed.get(SDK, 0)}  # the commands partition went to the other member
            return {}
        if self.script and self.script[0] == "listener":
            self.script.pop(0)
            assert self.listener is not None
            await self.listener.on_partitions_assigned(list(self.position))
            return {}
        return await super().getmany(timeout_ms, max_records)


async def test_a_partition_moved_to_another_member_never_stops_the_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The merge held the sdk records back (nothing fetched from the commands partition
    yet); a second member joined and took the commands partition. aiokafka narrowed the
    assignment before calling our listener, the loop asked the high watermark of the
    partition no longer assigned, aiokafka's assertion raised and the projection stopped
    for good (seen in CI: test_two_members_split_a_skewed_backlog_evenly_where_range_blocks_do_not).
    A revocation now empties the merge; what stays ours is read again from the store."""
    store = _Store()
    monkeypatch.setattr(repo, "stored_positions", store.stored_positions)
    monkeypatch.setattr(consumer_module, "apply_batch", store.apply_batch)
    stop = asyncio.Event()
    projection = Projection(None, "127.0.0.1:1", TOPICS, "g", batch_max=3)  # type: ignore[arg-type]
    await projection.consumer.stop()  # never started: replaced by the fake
    script = ["assign", "sdk only", "rebalance, listener late", "records", "listener", "records", "records", "records"]
    projection.consumer = _LateListener(script, store, stop)  # type: ignore[assignment]

    await asyncio.wait_for(projection.run(stop), 10)

    assert sorted(o for (t, _, o) in store.applied if t == SDK.topic) == list(range(len(LOG[SDK])))
    assert not [k for k in store.applied if k[0] == CMD.topic]  # the other member's now
