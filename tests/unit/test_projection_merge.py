"""The live hold-back merge (services/projection/merge.py) releases records in the
canonical order replay uses (docs/design.md "Order-tolerant", Flow 5), whatever the pace at
which the co-partitions are fetched."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from services.projection.merge import CoPartitionMerge
from services.projection.records import Record, canonical_order

SDK, CMD = "p.sdk-events", "p.commands"


def rec(topic: str, partition: int, offset: int, ts: int) -> Record:
    return Record(topic, partition, offset, ts, None, None)


def test_a_record_waits_while_a_co_partition_may_hold_an_earlier_one() -> None:
    merge = CoPartitionMerge()
    merge.assign([(SDK, 0), (CMD, 0)])
    merge.add((SDK, 0), [rec(SDK, 0, 0, 200)])  # a login; the upsert at 100 is unread
    assert merge.release(lambda p: False, 10) == []
    merge.add((CMD, 0), [rec(CMD, 0, 0, 100)])
    released = merge.release(lambda p: False, 10)
    assert [(r.topic, r.timestamp) for r in released] == [(CMD, 100)]  # the login still waits for CMD's next
    assert [r.timestamp for r in merge.release(lambda p: p == (CMD, 0), 10)] == [200]


def test_a_co_partition_at_its_end_holds_nothing_back() -> None:
    merge = CoPartitionMerge()
    merge.assign([(SDK, 0), (CMD, 0)])
    merge.add((SDK, 0), [rec(SDK, 0, 0, 200), rec(SDK, 0, 1, 300)])
    assert [r.offset for r in merge.release(lambda p: p == (CMD, 0), 10)] == [0, 1]


def test_other_partition_numbers_are_independent_channels() -> None:
    merge = CoPartitionMerge()
    merge.assign([(SDK, 0), (CMD, 0), (SDK, 1), (CMD, 1)])
    merge.add((SDK, 1), [rec(SDK, 1, 0, 50)])
    merge.add((SDK, 0), [rec(SDK, 0, 0, 10)])
    # partition 0's commands are not at their end: only partition 1 moves on.
    assert [(r.partition, r.timestamp) for r in merge.release(lambda p: p == (CMD, 1), 10)] == [(1, 50)]


def test_release_stops_at_the_limit_and_drop_below_forgets_what_another_instance_applied() -> None:
    merge = CoPartitionMerge()
    merge.assign([(SDK, 0)])
    merge.add((SDK, 0), [rec(SDK, 0, i, i) for i in range(5)])
    assert [r.offset for r in merge.release(lambda p: True, 2)] == [0, 1]
    merge.drop_below((SDK, 0), 4)
    assert [r.offset for r in merge.release(lambda p: True, 10)] == [4]


def test_a_new_assignment_starts_empty_and_revoked_partitions_take_no_records() -> None:
    merge = CoPartitionMerge()
    merge.assign([(SDK, 0)])
    merge.add((SDK, 0), [rec(SDK, 0, 0, 1)])
    merge.assign([(SDK, 1)])
    merge.add((SDK, 0), [rec(SDK, 0, 1, 2)])
    assert merge.buffered((SDK, 0)) == 0
    assert merge.release(lambda p: True, 10) == []


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10_000))
def test_any_fetch_pace_releases_the_canonical_order(seed: int) -> None:
    """Flow 5: per partition number (one set of channels, T1) the live order equals
    replay's `canonical_order` of the whole log, however the fetches interleave."""
    rng = random.Random(seed)
    log: dict[tuple[str, int], list[Record]] = {}
    for topic in (SDK, CMD, "p.import-rows"):
        for partition in range(2):
            ts = 0
            run = []
            for offset in range(rng.randint(0, 8)):
                ts += rng.randint(0, 3)  # ties across topics happen
                run.append(rec(topic, partition, offset, ts))
            log[(topic, partition)] = run
    merge = CoPartitionMerge()
    merge.assign(log)
    fetched = dict.fromkeys(log, 0)
    out: list[Record] = []
    while any(fetched[p] < len(run) for p, run in log.items()) or merge.release(lambda p: True, 0):
        p = rng.choice([p for p in log if fetched[p] < len(log[p])])
        n = rng.randint(1, 3)
        merge.add(p, log[p][fetched[p]:fetched[p] + n])
        fetched[p] = min(fetched[p] + n, len(log[p]))
        out += merge.release(lambda q: fetched[q] >= len(log[q]), rng.randint(1, 5))
    out += merge.release(lambda q: True, 1000)
    for number in (0, 1):
        assert [r for r in out if r.partition == number] == canonical_order(
            run for (_, partition), run in log.items() if partition == number
        )
    assert len(out) == sum(len(run) for run in log.values())


IMP = "p.import-rows"


def test_import_chunks_weigh_by_size_in_a_batch_and_in_the_buffers() -> None:
    """An `import.rows` record (a chunk of up to 1,000 rows) weighs a record per ROW_BYTES
    of it (docs/decisions.md, "Issue 14, session 9"): a batch of chunks holds about as
    many rows as a batch of one-row records, the buffers' flow control counts their size,
    and a release stopped by the weight says so (`full`: the consumer does not wait)."""
    from services.projection.merge import ROW_BYTES

    merge = CoPartitionMerge(heavy_topic=IMP)
    merge.assign([(SDK, 0), (IMP, 0)])
    chunk = b"x" * (100 * ROW_BYTES)  # weighs 100
    merge.add((IMP, 0), [Record(IMP, 0, i, 100 + i, None, chunk) for i in range(5)])
    merge.add((SDK, 0), [rec(SDK, 0, i, 1_000 + i) for i in range(3)])
    assert merge.buffered((IMP, 0)) == 500 and merge.buffered((SDK, 0)) == 3
    first = merge.release(lambda p: True, 250)
    assert [r.offset for r in first] == [0, 1] and merge.full  # a third chunk would pass 250
    assert merge.buffered((IMP, 0)) == 300
    assert [r.offset for r in merge.release(lambda p: True, 50)] == [2]  # the first record goes whatever its weight
    rest = merge.release(lambda p: True, 1_000)
    assert [(r.topic, r.offset) for r in rest] == [(IMP, 3), (IMP, 4), (SDK, 0), (SDK, 1), (SDK, 2)] and not merge.full
    assert merge.buffered((IMP, 0)) == 0
    # Without a heavy topic (the replay's reader, a test) every record weighs one, as before.
    plain = CoPartitionMerge()
    plain.assign([(IMP, 0)])
    plain.add((IMP, 0), [Record(IMP, 0, i, 100 + i, None, chunk) for i in range(5)])
    assert len(plain.release(lambda p: True, 250)) == 5


def test_a_rebuilds_batch_of_import_chunks_is_cut_by_their_weight_in_order() -> None:
    """merge.by_weight: a replay batch of chunks is cut into consecutive parts of at most
    the limit's weight (a chunk alone when it weighs more), in order; a batch without
    chunks, or light enough, is left whole."""
    from services.projection.merge import ROW_BYTES, by_weight

    chunk = b"x" * (100 * ROW_BYTES)
    records = [Record(IMP if i % 2 else SDK, 0, i, 100 + i, None, chunk if i % 2 else b"{}") for i in range(7)]
    parts = list(by_weight(records, IMP, 150))
    assert [[r.offset for r in p] for p in parts] == [[0, 1, 2], [3, 4], [5, 6]]
    assert list(by_weight(records, IMP, 10_000)) == [records]
    assert [[r.offset for r in p] for p in by_weight(records, IMP, 50)] == [[0], [1], [2], [3], [4], [5], [6]]
