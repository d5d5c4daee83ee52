"""A rebuild's reading of the log (services/replay/log.py, rebuild.apply_all) without a
broker: the merge hands out the canonical order whatever the fetch sizes (docs/design.md,
Flow 5; issue 14 item 6 rewrote its per-record loop), and the resident build's pause of
the cyclic collector never outlives it."""

from __future__ import annotations

import gc
import random
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.topics import Topics
from services.projection.records import LogPart, PartitionClocks, Record, canonical_order
from services.replay.log import LogReader
from services.replay.rebuild import Tally, apply_all

T0 = 1_746_316_800_000


class _Consumer:
    """Hands out each partition's messages in pieces of random size, as fetches do."""

    def __init__(self, logs: dict[TopicPartition, list[Any]], seed: int) -> None:
        self.logs, self.rng = logs, random.Random(seed)
        self.at = dict.fromkeys(logs, 0)

    async def getmany(self, *tps: TopicPartition, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        out = {}
        for tp in tps:
            if self.rng.random() < 0.3:
                continue  # nothing for this partition in this round
            n = self.rng.randint(1, 7)
            out[tp] = self.logs[tp][self.at[tp]:self.at[tp] + n]
            self.at[tp] = min(self.at[tp] + n, len(self.logs[tp]))
        return out

    async def position(self, tp: TopicPartition) -> int:
        return self.at[tp]

    def pause(self, *tps: TopicPartition) -> None:
        pass


def _reader(logs: dict[TopicPartition, list[Any]], seed: int) -> LogReader:
    reader = LogReader.__new__(LogReader)
    reader._clocks = PartitionClocks()
    reader.consumer = _Consumer(logs, seed)  # type: ignore[assignment]
    reader.fetch_records = 5000
    reader.short_timeout_s = 30.0
    reader.records_read = 0
    reader._parts = {tp: LogPart(tp, stop=len(msgs), position=0) for tp, msgs in logs.items()}
    for part in reader._parts.values():
        if part.stop == 0:
            reader._finish(part)
    return reader


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(min_value=-1, max_value=50), max_size=25), min_size=1, max_size=5),
    st.integers(min_value=1, max_value=9),
    st.integers(min_value=0, max_value=1000),
)
async def test_merged_hands_out_the_canonical_order_in_chunks_whatever_the_fetches(
    stamps: list[list[int]], chunk: int, seed: int,
) -> None:
    """Flow 5: each partition in offset order, partitions merged by (timestamp, topic,
    partition, offset); chunks of at most `chunk`; the offsets and clocks reached are
    those after the last record of every partition."""
    logs = {
        TopicPartition(f"t{i % 2}", i): [
            SimpleNamespace(offset=o, timestamp=T0 + 1000 * t if t >= 0 else -1, timestamp_type=0, key=None, value=b"v")
            for o, t in enumerate(times)
        ]
        for i, times in enumerate(stamps)
    }
    reader = _reader(logs, seed)
    chunks = [c async for c in reader.merged(chunk)]
    assert all(0 < len(c) <= chunk for c in chunks)
    got = [r for c in chunks for r in c]
    runs = [[Record(tp.topic, tp.partition, m.offset, m.timestamp, None, b"v") for m in msgs] for tp, msgs in logs.items()]
    assert got == canonical_order(runs)
    assert reader.records_read == len(got)
    assert reader.next_offsets == {(tp.topic, tp.partition): len(msgs) for tp, msgs in logs.items()}
    assert reader.next_clocks == {
        (tp.topic, tp.partition): max(m.timestamp for m in msgs)
        for tp, msgs in logs.items() if any(m.timestamp > 0 for m in msgs)
    }


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.integers(min_value=1, max_value=300), max_size=25), min_size=1, max_size=4),
    st.integers(min_value=1, max_value=900),
    st.integers(min_value=0, max_value=1000),
)
async def test_merged_lists_end_once_their_values_reach_max_bytes(sizes: list[list[int]], max_bytes: int, seed: int) -> None:
    """Memory of a rebuild (contract 1.3.0: an import record carries up to 256 KiB): a
    list ends at the record whose value reaches `max_bytes`, so it holds less than
    `max_bytes` plus one record; the order and every record are kept (Flow 5)."""
    logs = {
        TopicPartition("t", i): [
            SimpleNamespace(offset=o, timestamp=T0 + o, timestamp_type=0, key=None, value=b"x" * n)
            for o, n in enumerate(ns)
        ]
        for i, ns in enumerate(sizes)
    }
    reader = _reader(logs, seed)
    lists = [c async for c in reader.merged(10_000, max_bytes=max_bytes)]
    for c in lists:
        assert sum(len(r.value) for r in c[:-1]) < max_bytes
    got = [r for c in lists for r in c]
    runs = [[Record(tp.topic, tp.partition, m.offset, m.timestamp, None, m.value) for m in msgs] for tp, msgs in logs.items()]
    assert got == canonical_order(runs)
    total = sum(map(sum, sizes))
    assert len(lists) >= total // (max_bytes + 300)  # the bound cut them, not only the count


class _Keeper:
    def __init__(self, fail: bool) -> None:
        self.fail, self.collecting = fail, []

    async def apply(self, records: list[Record]) -> Any:
        self.collecting.append(gc.isenabled())
        if self.fail:
            raise RuntimeError("over budget")
        return SimpleNamespace(applied=len(records), skipped=0, dead_letters={})

    async def finish(self) -> None:
        self.collecting.append(gc.isenabled())

    async def abandon(self) -> None:  # Resident's: waits for a write beside the build (none here)
        self.abandoned = True


@pytest.mark.parametrize("fail", [False, True])
async def test_a_resident_build_pauses_the_cyclic_collector_only_while_it_runs(fail: bool) -> None:
    """Issue 14 item 6: the collector is off while the users are built (it found nothing
    to free and cost ~8 % of the build), and on again afterwards, also after a failure
    (OverBudget: the batch-by-batch fallback and the live service need it)."""

    async def chunks() -> Any:
        yield [Record("t", 0, 0, T0, None, b"{}")]
        yield [Record("t", 0, 1, T0, None, b"{}")]

    keeper = _Keeper(fail)
    assert gc.isenabled()
    try:
        await apply_all(None, Topics(""), chunks(), Tally(out=None), keeper=keeper)  # type: ignore[arg-type]
    except RuntimeError:
        assert fail
    assert keeper.collecting and not any(keeper.collecting)
    assert gc.isenabled()


async def test_a_workers_share_of_the_log_comes_in_lists_bounded_by_bytes_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory of a sharded rebuild (contract 1.3.0 import chunks): a worker's lists end at
    `batch` records or LIST_BYTES of values, whichever first, and keep its records in
    order (Flow 5)."""
    from services.replay import shards

    monkeypatch.setattr(shards, "LIST_BYTES", 1000)
    records = [
        Record("t", 0, i, T0 + i, None, orjson.dumps({"channelId": f"ch_{i % 3}", "pad": "x" * 300}))
        for i in range(60)
    ]

    async def lists() -> Any:
        for i in range(0, len(records), 7):
            yield records[i : i + 7]

    got = [c async for c in shards._mine(lists(), 0, 2, 10_000)]
    mine = [r for r in records if shards.shard_of(r, 2) == 0]
    assert [r for c in got for r in c] == mine
    assert len(got) > 1
    for c in got[:-1]:
        assert sum(len(r.value or b"") for r in c) >= 1000  # cut by bytes, not by the 10,000 records
    assert all(sum(len(r.value or b"") for r in c) < 1000 + 7 * 400 for c in got)  # at most one list more


# -- the fetched records a LogReader's consumer hands out --------------------------------


def _batches(spans: list[list[tuple[int | None, bytes | None, bytes | None]]], codec: int) -> bytes:
    """Record batches (message format v2) of consecutive offsets from 0, as a fetch
    response holds them."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    out, offset = b"", 0
    for span in spans:
        builder = DefaultRecordBatchBuilder(2, codec, 0, -1, -1, -1, 1 << 20)
        for i, (ts, key, value) in enumerate(span):
            builder.append(i, ts, key, value, [("h", b"x")] if i % 2 else [])
        data = bytearray(builder.build())
        data[0:8] = offset.to_bytes(8, "big")  # the batch's base offset
        out += bytes(data)
        offset += len(span)
    return out


_SPAN = st.lists(
    st.tuples(st.none() | st.integers(1, 2**41), st.none() | st.binary(max_size=8), st.none() | st.binary(max_size=40)),
    min_size=1, max_size=6,
)


@settings(max_examples=200)
@given(st.lists(_SPAN, min_size=1, max_size=4), st.sampled_from([0, 1]), st.integers(0, 8), st.integers(1, 7), st.integers(0, 30))
def test_a_log_readers_consumer_hands_out_what_consumer_records_hold(
    spans: list[list[tuple[int | None, bytes | None, bytes | None]]], codec: int, fetch_offset: int, max_records: int,
    stop: int,
) -> None:
    """Flow 5: a rebuild reads the very records the live consumer would — offsets (those
    below the fetch offset skipped), timestamps, keys, values, the position after — from
    the record batches' own records (`log._RawRecords`) instead of aiokafka's
    ConsumerRecords, taken `max_records` at a time as `getmany` takes them. Other
    consumers still get aiokafka's class."""
    from aiokafka.consumer import fetcher
    from aiokafka.record.memory_records import MemoryRecords
    from aiokafka.structs import ConsumerRecord

    from services.replay import log

    data = _batches(spans, codec)
    tp = TopicPartition("t", 3)
    fetch_offset %= len(spans[0])  # within the first batch, as a broker answers a fetch

    def taken(deserializer: Any) -> tuple[list[Any], int]:
        records = fetcher.PartitionRecords(tp, MemoryRecords(data), [], fetch_offset, deserializer, deserializer, True, 0)
        out: list[Any] = []
        while True:  # FetchResult.getall's loop, a piece at a time
            piece = []
            for msg in records:
                piece.append(msg)
                if len(piece) >= max_records:
                    break
            out.extend(piece)
            if len(piece) < max_records:
                return out, records.next_fetch_offset

    raw, raw_next = taken(log._RAW)
    plain, plain_next = taken(None)
    assert all(type(m) is ConsumerRecord for m in plain)
    assert not any(type(m) is ConsumerRecord for m in raw)
    assert raw_next == plain_next
    fields = ("offset", "timestamp", "timestamp_type", "key", "value")
    assert [tuple(getattr(m, f) for f in fields) for m in raw] == [tuple(getattr(m, f) for f in fields) for m in plain]
    assert [m.offset for m in raw] == list(range(fetch_offset, sum(len(s) for s in spans)))
    clocks_raw, clocks_plain = PartitionClocks(), PartitionClocks()
    got_raw: list[Record] = []
    got_plain: list[Record] = []
    clocks_raw.extend(got_raw.append, "t", 3, raw, stop)
    clocks_plain.extend(got_plain.append, "t", 3, plain, stop)
    assert got_raw == got_plain and clocks_raw.at == clocks_plain.at
