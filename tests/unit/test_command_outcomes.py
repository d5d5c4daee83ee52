"""Command outcomes (services/store/outcomes.py): which outcome is stored, and the
NOTIFY payloads the HTTP API's waiters read (docs/decisions.md, "HTTP API: commands
measured")."""

from __future__ import annotations

import orjson

from services.store import outcomes


def test_applied_wins_over_a_rejection_of_the_same_event_id_in_either_order() -> None:
    rows = [
        ("ch", "a", 1, "unknown_user", "no such user"), ("ch", "a", 2, None, None),  # rejected, then applied
        ("ch", "b", 1, None, None), ("ch", "b", 2, "unknown_user", "no such user"),  # applied, then rejected
        ("ch", "c", 1, "x", "first"), ("ch", "c", 2, "y", "second"),  # the later reason
        ("other", "a", 1, "x", "another channel"),
    ]
    assert outcomes.decisive(rows) == [
        ("ch", "a", 2, None, None), ("ch", "b", 1, None, None), ("ch", "c", 2, "y", "second"),
        ("other", "a", 1, "x", "another channel"),
    ]


def test_payloads_fit_notify_and_are_read_back_only_for_their_own_schema() -> None:
    decided = [(f"ch_{i % 3}", "e" * 120 + str(i), i % 5 != 0) for i in range(200)]
    payloads = outcomes.payloads(decided)
    assert len(payloads) > 1  # 200 long eventIds do not fit one notification
    assert all(len(("s_long_schema_name\n" + p).encode()) < 8000 for p in payloads)  # PostgreSQL's limit
    heard = [d for p in payloads for d in outcomes.parse("s1\n" + p, "s1")]
    assert heard == decided
    assert outcomes.parse("s2\n" + payloads[0], "s1") == []  # a test or bench beside us in the same database
    assert outcomes.parse("s1\nnot json", "s1") == []
    assert orjson.loads(outcomes.payloads([("ch", "e", False)])[0]) == [["ch", "e", "r"]]
