"""Read-side queries of the command line (`unifier user show`)."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.domain.user import User
from services.domain.view import user_view


async def find_user(conn: asyncpg.Connection | asyncpg.Pool, channel_id: str, by: str, value: str) -> dict[str, Any] | None:
    """The user's JSON for `unifier user show`, or None (deleted users included).

    `by` is id | member | veil | email | mobile. A contact several users share picks
    members first, then the latest lastSeenAt (CONTRACT.md)."""
    if by == "id":
        row = await conn.fetchrow("SELECT state FROM users WHERE id = $1 AND channel_id = $2", value, channel_id)
    else:
        row = await conn.fetchrow(
            """SELECT u.state FROM identities i JOIN users u ON u.id = i.user_id
                WHERE i.channel_id = $1 AND i.kind = $2 AND i.value = $3
                ORDER BY (u.type = 'member') DESC, u.last_seen_at DESC NULLS LAST, u.id
                LIMIT 1""",
            channel_id, by, value,
        )
    if row is None:
        return None
    user = User.from_json(row["state"])
    if user.deleted:
        return None
    if user.merged_into is not None:
        return {"id": user.id, "mergedInto": user.merged_into}
    view = user_view(user)
    view["unification"] = {"candidates": list(user.candidates), "pendingInto": user.pending_into}
    return view
