"""`unifier user show` (services/store/queries.py) against a stand-in connection."""

from __future__ import annotations

from typing import Any

from services.domain.user import EMAIL, User, Value
from services.store.queries import find_user

CH = "ch_q"


class FakeConn:
    """Answers find_user's query for the user's state and grades (one statement, none
    held here); any other query is a failure."""

    def __init__(self, *users: User) -> None:
        self.users = {u.id: u for u in users}

    async def fetchrow(self, sql: str, user_id: str, channel_id: str) -> dict[str, Any] | None:
        user = self.users.get(user_id)
        return None if user is None or user.channel_id != channel_id else {"state": user.state_json().decode(), "grades": None}

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        raise AssertionError("a user without a qualified contact has no candidates to look up")


async def test_u9_no_qualified_contact_asks_nothing_more() -> None:
    """U5/U9: candidates are computed when read (tests/integration/test_unification.py);
    a lead holding only a typed contact has none, and no query is run for it."""
    lead = User(id="u_lead", channel_id=CH, type="lead", created_at=1, updated_at=1)
    lead.fields[EMAIL] = Value("typed@example.jp", False, False, 1)
    shown = await find_user(FakeConn(lead), CH, "id", "u_lead")  # type: ignore[arg-type]
    assert shown is not None and shown["unification"] == {"candidates": [], "pendingInto": None}
