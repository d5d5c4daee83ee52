"""Future record times are bounded by the partition's clock (docs/decisions.md, "Event
time"), deterministically: the same records in the same order give the same times."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.projection.records import (
    LOG_APPEND_TIME,
    MAX_AHEAD_MS,
    PartitionClocks,
    Record,
    clocks_after,
    ends_after,
)

P = ("identity.sdk-events", 0)
T = 1_746_316_800_000
FAR = 4_102_444_800_000  # 2100-01-01


def test_b4_a_far_future_producer_time_is_lowered_to_the_clock_plus_the_allowance():
    clocks = PartitionClocks()
    assert clocks.bound(P, T) == T  # the first record of a partition sets its clock
    assert clocks.bound(P, FAR) == T + MAX_AHEAD_MS
    assert clocks.bound(P, T + 60_000) == T + 60_000  # later records are their own time again
    assert clocks.at[P] == T + MAX_AHEAD_MS


def test_a_partition_idle_for_less_than_the_allowance_is_untouched():
    clocks = PartitionClocks({P: T})
    assert clocks.bound(P, T + MAX_AHEAD_MS) == T + MAX_AHEAD_MS
    assert clocks.bound(P, T - 5_000) == T - 5_000  # earlier times are never raised


def test_broker_stamped_times_are_kept():
    clocks = PartitionClocks({P: T})
    assert clocks.bound(P, FAR, LOG_APPEND_TIME) == FAR


def test_partitions_have_clocks_of_their_own_and_records_without_time_are_left_alone():
    clocks = PartitionClocks({P: T})
    assert clocks.bound(("identity.commands", 0), FAR) == FAR
    assert clocks.bound(P, -1) == -1 and clocks.at[P] == T


@given(st.lists(st.integers(min_value=1, max_value=FAR), max_size=30), st.integers(min_value=0, max_value=29))
def test_resuming_at_any_offset_with_the_stored_clock_bounds_as_reading_from_the_start(times: list[int], cut: int):
    """What the live service does after a restart (clock stored with the offset) gives
    the times a rebuild reading from the log's start gives."""
    whole = PartitionClocks()
    expected = [whole.record(P[0], P[1], i, t, 0, None, None) for i, t in enumerate(times)]
    cut = min(cut, len(times))
    first = PartitionClocks()
    head = [first.record(P[0], P[1], i, t, 0, None, None) for i, t in enumerate(times[:cut])]
    rest = PartitionClocks(clocks_after(head))
    tail = [rest.record(P[0], P[1], i + cut, t, 0, None, None) for i, t in enumerate(times[cut:])]
    assert head + tail == expected


@given(
    st.lists(st.tuples(st.integers(min_value=-1, max_value=FAR), st.sampled_from([0, LOG_APPEND_TIME])), max_size=30),
    st.one_of(st.none(), st.integers(min_value=1, max_value=FAR)),
    st.integers(min_value=0, max_value=31),
)
def test_extend_bounds_a_fetched_run_as_record_does_one_by_one(stamps: list[tuple[int, int]], start: int | None, stop: int):
    """Issue 14 item 6: a rebuild turns each fetched run into Records with `extend`
    (the clock in a local, no per-record call), the live consumer with `record`; both
    must give the same Records and leave the same clock (replay = live), and `extend`
    must stop before offset `stop`."""
    from types import SimpleNamespace

    messages = [SimpleNamespace(offset=i, timestamp=t, timestamp_type=kind, key=b"k", value=b"v%d" % i)
                for i, (t, kind) in enumerate(stamps)]
    one = PartitionClocks({P: start})
    expected = [one.record(P[0], P[1], m.offset, m.timestamp, m.timestamp_type, m.key, m.value)
                for m in messages if m.offset < stop]
    run = PartitionClocks({P: start})
    got: list[object] = []
    run.extend(got.append, P[0], P[1], messages, stop)
    assert got == expected
    assert run.at == one.at


@given(st.lists(st.tuples(st.sampled_from([P, ("identity.commands", 0), ("identity.sdk-events", 3)]),
                          st.integers(0, 10**12)), max_size=40))
def test_a_batchs_next_offsets_are_one_past_each_partitions_highest_offset(rows: list[tuple[tuple[str, int], int]]):
    """`ends_after` (a batch's next offsets to store, compiled; issue 14 session 11), in
    whatever order the records come (the merge interleaves partitions)."""
    records = [Record(p[0], p[1], offset, T, None, None) for p, offset in rows]
    want: dict[tuple[str, int], int] = {}
    for p, offset in rows:
        want[p] = max(want.get(p, 0), offset + 1)
    assert ends_after(records) == want
