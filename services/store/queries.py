"""Read-side queries of the command line (`unifier user show`) and the HTTP API."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.domain.user import EMAIL, MOBILE, User
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
    candidates = await member_candidates(conn, user)
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


async def member_candidates(conn: asyncpg.Connection | asyncpg.Pool, user: User) -> list[str]:
    """U5/U7/U9, current as read: live, unblocked members holding one of the user's
    qualified contacts, most recently updated first (then by id). Only a live, unblocked
    anonymous user or lead has candidates. The same rule as the core's
    `saga.member_candidates`: a member that changed its contact, was blocked or deleted
    since is no longer offered, so staff never approve a stale match."""
    if user.type == "member" or not user.alive or user.blocked:
        return []
    keys = [
        (kind, val.v)
        for key, kind in ((EMAIL, "email"), (MOBILE, "mobile"))
        if (val := user.fields.get(key)) is not None and val.v is not None and val.q
    ]
    if not keys:
        return []
    rows = await conn.fetch(
        """SELECT u.id FROM users u
            WHERE u.id IN (SELECT i.user_id FROM identities i
                             JOIN unnest($2::text[], $3::text[]) AS k(kind, value)
                               ON i.channel_id = $1 AND i.kind = k.kind AND i.value = k.value AND i.qualified)
              AND u.type = 'member' AND NOT u.blocked AND NOT u.deleted AND u.merged_into IS NULL
              AND u.id <> $4
            ORDER BY u.updated_at DESC, u.id""",
        user.channel_id, [k for k, _ in keys], [v for _, v in keys], user.id,
    )
    return [r["id"] for r in rows]


async def review_candidates(
    conn: asyncpg.Connection | asyncpg.Pool, channel_id: str, *, after: str | None = None, limit: int = 100,
) -> list[tuple[str, list[str]]]:
    """The review queue of U5 as read now: (source user id, its current candidates) for
    every live, unblocked anonymous user or lead that has one, in id order after `after`
    (keyset pagination), at most `limit`."""
    rows = await conn.fetch(
        """SELECT u.state FROM users u
            WHERE u.id IN (SELECT si.user_id FROM identities si
                             JOIN identities mi ON mi.channel_id = si.channel_id AND mi.kind = si.kind
                                               AND mi.value = si.value AND mi.qualified AND mi.user_id <> si.user_id
                             JOIN users m ON m.id = mi.user_id AND m.type = 'member' AND NOT m.blocked
                            WHERE si.channel_id = $1 AND si.kind IN ('email', 'mobile') AND si.qualified)
              AND u.type <> 'member' AND NOT u.blocked AND u.id > $2
            ORDER BY u.id LIMIT $3""",
        channel_id, after or "", limit,
    )
    out = []
    for row in rows:
        source = User.from_json(row["state"])
        out.append((source.id, await member_candidates(conn, source)))
    return out
