"""The eventId deduplication window (docs/contract.md, "Inbound envelope")."""

from __future__ import annotations

from services.projection.window import WINDOW_MS, AppliedWindow

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


def test_forgetting_drops_only_what_can_never_be_seen_again():
    w = AppliedWindow([("ch", "old", T), ("ch", "new", T + 7 * DAY)], {"ch": T + 8 * DAY})
    assert not w.seen("ch", "old") and w.seen("ch", "new")
    w.forget_expired()
    assert w.at == {("ch", "new"): T + 7 * DAY}
