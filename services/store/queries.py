"""Read-side queries of the command line (`unifier user show`)."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.domain.user import User
from services.domain.view import user_view


async def find_user(conn: asyncpg.Connection | asyncpg.Pool, channel_id: str, by: str, value: str) -> dict[str, Any] | None:
    """The user's JSON for `unifier user show`, or None (deleted users included).

    `by` is id | member | veil | email | mobile. A contact several users share picks
    members first, then the latest lastSeenAt (docs/contract.md)."""
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
    candidates = await _still_users(conn, channel_id, user.candidates)
    view["unification"] = {"candidates": candidates, "pendingInto": user.pending_into}
    return view


async def _still_users(conn: asyncpg.Connection | asyncpg.Pool, channel_id: str, ids: list[str]) -> list[str]:
    """The recorded candidates (U5, most recently updated first, U7) minus those deleted
    since (B2, B3): a deleted member is no user any more, so staff must not be offered it.
    The leads that listed it are not touched by the deletion, hence pruned as read."""
    if not ids:
        return []
    rows = await conn.fetch(
        "SELECT id FROM users WHERE channel_id = $1 AND id = ANY($2::text[]) AND NOT deleted", channel_id, ids
    )
    live = {r["id"] for r in rows}
    return [i for i in ids if i in live]
