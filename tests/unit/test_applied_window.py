"""The eventId deduplication window (docs/contract.md, "Inbound envelope")."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from services.domain.core import Fact
from services.projection.window import WINDOW_MS, AppliedWindow, event_pairs

T = 1_746_316_800_000
DAY = 24 * 60 * 60 * 1000


def test_an_event_id_is_remembered_for_the_window_of_its_channels_event_time():
    w = AppliedWindow()
    w.add("ch", "e1", T)
    assert w.seen("ch", "e1")
    w.add("ch", "e2", T + WINDOW_MS)
    assert w.seen("ch", "e1")  # exactly the window: still remembered
    w.add("ch", "e3", T + WINDOW_MS + 1)
    assert not w.seen("ch", "e1")
    assert w.horizon("ch") == T + 1


def test_channels_have_clocks_of_their_own_and_late_facts_do_not_move_them_back():
    w = AppliedWindow()
    w.add("a", "e1", T)
    w.add("b", "e9", T + 30 * DAY)
    assert w.seen("a", "e1") and not w.seen("b", "e1")
    w.add("a", "late", T - 3 * DAY)
    assert w.clocks["a"] == T


def test_a_batch_reads_its_window_for_each_pair_once_in_the_facts_order():
    # Issue 14, session 18: the pairs are no longer sorted (the store answers a set);
    # a repeated eventId is asked for once, in the order of its first fact.
    facts = [Fact(SimpleNamespace(type="boot", channelId=c, eventId=e), T) for c, e in
             [("b", "e2"), ("a", "e9"), ("b", "e2"), ("a", "e1"), ("b", "e1")]]
    assert event_pairs(facts) == [("b", "e2"), ("a", "e9"), ("a", "e1"), ("b", "e1")]


def test_forgetting_drops_only_what_can_never_be_seen_again():
    w = AppliedWindow([("ch", "old", T), ("ch", "new", T + 7 * DAY)], {"ch": T + 8 * DAY})
    assert not w.seen("ch", "old") and w.seen("ch", "new")
    w.forget_expired()
    assert w.at == {("ch", "new"): T + 7 * DAY}


def test_a_channels_clock_comes_from_its_history_not_from_the_first_fact_of_a_batch():
    """Two copies of an old eventId in one batch: with the channel's real clock both are
    outside the window (applied twice, as a rebuild does); a clock taken from the batch's
    first fact would have skipped the second."""
    w = AppliedWindow([], {"ch": T + 30 * DAY})
    w.add("ch", "old", T)
    assert not w.seen("ch", "old")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 40), st.integers(0, 20 * DAY)), max_size=60),
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 40), st.integers(0, 20 * DAY)), max_size=60),
    st.integers(0, 3),
)
def test_forgetting_keeps_exactly_the_ids_within_their_channels_window(
    stored: list[tuple[str, int, int]], added: list[tuple[str, int, int]], forgets: int,
) -> None:
    """The window's rule (docs/contract.md, "Inbound envelope") whenever a rebuild
    forgets: an eventId stays while its event time is within WINDOW_MS of its channel's
    clock. Session 13 lets `forget_expired` return without walking the ids when the
    oldest one is within the window of the latest clock: the ids kept are still those."""
    clocks: dict[str, int] = {}
    for c, _e, t in stored:  # as the store holds them: each channel's clock at least its latest id's time
        clocks[c] = max(clocks.get(c, 0), T + t)
    w = AppliedWindow([(c, f"e{e}", T + t) for c, e, t in stored], clocks)
    for i, (c, e, t) in enumerate(added):
        w.add(c, f"e{e}", T + t)
        if forgets and i % (forgets + 1) == 0:
            before = dict(w.at)
            w.forget_expired()
            assert w.at == {k: v for k, v in before.items() if v >= w.clocks[k[0]] - WINDOW_MS}
    before = dict(w.at)
    w.forget_expired()
    assert w.at == {k: v for k, v in before.items() if v >= w.clocks[k[0]] - WINDOW_MS}
