"""Read-side queries of the command line (`unifier user show`) and the HTTP API."""

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
    view["grades"] = await grades_of(conn, channel_id, view)
    candidates = await _still_users(conn, channel_id, user.candidates)
    view["unification"] = {"candidates": candidates, "pendingInto": user.pending_into}
    return view


def grade_keys(user_json: dict[str, Any]) -> list[tuple[str, str]]:
    """The keys that give a user grades (D2): its memberId and its *qualified* contacts,
    from the contract's `user` object (`memberId`, `profile`, `qualified`). A masked user
    (I17) shows none: its personal keys are hidden, and grades derive from them."""
    keys: list[tuple[str, str]] = []
    if user_json.get("memberId"):
        keys.append(("memberId", user_json["memberId"]))
    profile = user_json.get("profile") or {}
    for kind in ("email", "mobileNumber"):
        value = profile.get(kind)
        if isinstance(value, str) and kind in (user_json.get("qualified") or ()):
            keys.append((kind, value))
    return keys


async def grades_of(conn: asyncpg.Connection | asyncpg.Pool, channel_id: str, user_json: dict[str, Any]) -> list[dict[str, str]]:
    """`[{"name", "colour"}]` of every grade assigned to a key the user holds, by name.
    Computed when read, so it holds after merges and imports (the survivor holds the keys)."""
    keys = grade_keys(user_json)
    if not keys:
        return []
    rows = await conn.fetch(
        """SELECT DISTINCT g.name, g.colour FROM grade_holders h
             JOIN grades g ON g.channel_id = h.channel_id AND g.name = h.name
             JOIN unnest($2::text[], $3::text[]) AS k(kind, value) ON h.kind = k.kind AND h.value = k.value
            WHERE h.channel_id = $1
            ORDER BY g.name""",
        channel_id, [k for k, _ in keys], [v for _, v in keys],
    )
    return [{"name": r["name"], "colour": r["colour"]} for r in rows]


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
