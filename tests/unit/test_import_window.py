"""Issue 14 item 5: the importer publishes at the service's pace, a bounded lead ahead of
it (services/importer/window.py), so that another channel's fact on the import's
partition waits behind a fraction of a second of import, not the rest of the file."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from services.importer.producer import ImportProducer
from services.importer.window import MAX_ROWS, MIN_ROWS, SLICE_S, Window


def _simulate(service_rows_s: float, seconds: float, overhead_s: float = 0.03) -> tuple[Window, int, int]:
    """An importer against a service that applies, in one batch, whatever has arrived
    (up to 5,000 rows), a batch taking `overhead_s` + its rows at `service_rows_s`:
    (window, most rows ever outstanding, rows applied)."""
    w = Window()
    published = applied = in_batch = 0
    batch_ends = 0.0
    worst = 0
    now = 0.0
    while now < seconds:
        now += SLICE_S / 2
        if now >= batch_ends:  # the batch commits; the next takes what has arrived
            applied += in_batch
            in_batch = min(published - applied, 5_000)
            batch_ends = now + (overhead_s + in_batch / service_rows_s if in_batch else 0.0)
        w.observe(now, applied, published)
        published = max(published, w.allowed(now, applied, published))
        worst = max(worst, published - applied)
    return w, worst, applied


def test_issue14_5_rows_outstanding_stay_within_the_lead_of_the_service_pace() -> None:
    """Without pacing the whole file is outstanding at once; with it, about `lead_s` of
    the service's pace (the first window before the pace is known: MIN_ROWS)."""
    w, worst, applied = _simulate(service_rows_s=2_000, seconds=30)
    assert 1_400 < w.rate <= 2_000  # it measured the service
    assert worst <= int(2_000 * w.lead_s * 2)  # overshooting a little while the pace is found
    assert applied > 0.65 * 2_000 * 30  # and kept it busy (a batch's fixed cost is paid more often)


def test_issue14_5_a_fast_service_gets_a_larger_window_and_stays_busy() -> None:
    w, worst, applied = _simulate(service_rows_s=30_000, seconds=20)
    assert w.rows > 5_000
    assert applied > 0.6 * 30_000 * 20
    assert worst <= int(30_000 * w.lead_s * 2)


def test_issue14_5_before_the_pace_is_known_the_first_window_goes_at_once() -> None:
    w = Window()
    assert w.allowed(0.0, 0, 0) == MIN_ROWS
    assert w.allowed(0.001, 0, MIN_ROWS) == MIN_ROWS  # nothing applied, nothing more


@given(st.lists(st.tuples(st.floats(0.001, 2.0), st.integers(0, 5_000)), max_size=60))
def test_issue14_5_the_window_is_bounded_whatever_the_counts_do(steps: list[tuple[float, int]]) -> None:
    """Never more than MAX_ROWS outstanding, never fewer than MIN_ROWS allowed ahead of
    an idle service, whatever the samples (flow control only; rows are never lost)."""
    w = Window()
    now, applied, published = 0.0, 0, 0
    for dt, more in steps:
        now += dt
        applied = min(published, applied + more)
        w.observe(now, applied, published)
        allowed = w.allowed(now, applied, published)
        assert allowed - applied <= MAX_ROWS
        assert MIN_ROWS <= w.rows <= MAX_ROWS
        published = max(published, allowed)


async def test_issue14_5_rows_passed_maps_the_stored_offset_to_the_rows_acknowledged_before_it() -> None:
    """The importer's measure of the service's progress: a shipped batch counts once the
    partition's stored offset is past its last record (applied, skipped or
    dead-lettered alike), never before."""
    producer = ImportProducer("127.0.0.1:9", "t.import-rows", "ch")  # never started: no connection

    class Landed:
        def __init__(self, offset: int) -> None:
            self.offset = offset

    def ack(base: int, count: int, through: int) -> None:
        fut: asyncio.Future[Landed] = asyncio.get_running_loop().create_future()
        fut.set_result(Landed(base))
        producer._acked(fut, count, through)

    ack(5, 100, 100)  # offsets 5..104 hold rows 1..100 (offset 4: import.started)
    ack(105, 50, 150)
    assert producer.rows_passed(0) == 0
    assert producer.rows_passed(104) == 0  # the batch's last record is not passed yet
    assert producer.rows_passed(105) == 100
    assert producer.rows_passed(140) == 100
    assert producer.rows_passed(155) == 150
    assert producer.rows_passed(10) == 150  # never goes back
