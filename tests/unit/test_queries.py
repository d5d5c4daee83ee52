"""`unifier user show` (services/store/queries.py) against a stand-in connection."""

from __future__ import annotations

from typing import Any

import orjson

from services.domain.user import User
from services.store.queries import find_user

CH = "ch_q"


class FakeConn:
    """Answers find_user's two queries: the user's state, then which ids are live users."""

    def __init__(self, *users: User) -> None:
        self.users = {u.id: u for u in users}

    async def fetchrow(self, sql: str, user_id: str, channel_id: str) -> dict[str, Any] | None:
        user = self.users.get(user_id)
        return None if user is None or user.channel_id != channel_id else {"state": orjson.loads(orjson.dumps(user.to_json()))}

    async def fetch(self, sql: str, channel_id: str, ids: list[str]) -> list[dict[str, Any]]:
        return [{"id": i} for i in ids if (u := self.users.get(i)) is not None and u.channel_id == channel_id and not u.deleted]


def member(uid: str, *, deleted: bool = False) -> User:
    return User(id=uid, channel_id=CH, type="member", member_id=uid, created_at=1, updated_at=1, deleted=deleted)


async def test_b3_u5_a_deleted_member_is_no_longer_offered_as_a_candidate() -> None:
    """A lead listed two members (U7 order); one was deleted since (B3): `user show`
    offers only the other, in the recorded order."""
    lead = User(id="u_lead", channel_id=CH, type="lead", created_at=1, updated_at=1)
    lead.candidates = ["u_gone", "u_kept", "u_later"]
    conn = FakeConn(lead, member("u_gone", deleted=True), member("u_kept"), member("u_later"))
    shown = await find_user(conn, CH, "id", "u_lead")  # type: ignore[arg-type]
    assert shown is not None and shown["unification"] == {"candidates": ["u_kept", "u_later"], "pendingInto": None}


async def test_no_candidates_asks_nothing_more() -> None:
    lead = User(id="u_lead", channel_id=CH, type="lead", created_at=1, updated_at=1)
    shown = await find_user(FakeConn(lead), CH, "id", "u_lead")  # type: ignore[arg-type]
    assert shown is not None and shown["unification"] == {"candidates": [], "pendingInto": None}
