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
