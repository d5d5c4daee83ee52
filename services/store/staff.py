"""Reads the staff console needs beyond the HTTP API's (issue 13): the MU count, the
channels there are, a user's stored state with provenance (for the U3 preview and the
profile's "where it came from"), and the grades with their holders.

Plain functions on a pool or connection, like services/store/queries.py; they only
read. Every change the console makes is a command (services/api/commands.py).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg

from services.domain.user import User
from services.store.rows import stored_user

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool


async def mu_count(conn: Conn, channel_id: str) -> int:
    """C5: leads and members, blocked users excluded (masked ones are MU beyond the
    limit, still counted: I17 masks what the limit does not allow, it does not free it).
    An index-only count over the channel's live users; fine on a million rows
    (about 100 ms), so the list shows it on every full page load, not on each keystroke."""
    value = await conn.fetchval(
        """SELECT count(*) FROM users
            WHERE channel_id = $1 AND NOT deleted AND merged_into IS NULL AND NOT blocked
              AND type IN ('lead', 'member')""",
        channel_id,
    )
    return int(value or 0)


async def channel_ids(conn: Conn, limit: int = 200) -> list[str]:
    """Channels with settings (`unifier channel configure`), for the channel picker."""
    rows = await conn.fetch("SELECT channel_id FROM channels ORDER BY channel_id LIMIT $1", limit)
    return [r["channel_id"] for r in rows]


async def user_state(conn: Conn, channel_id: str, user_id: str) -> User | None:
    """The domain's User as stored (values with their provenance), merged and deleted
    users included: the caller decides what a gone user means."""
    row = await conn.fetchrow("SELECT state FROM users WHERE id = $1 AND channel_id = $2", user_id, channel_id)
    return None if row is None else stored_user(row["state"])


async def grade_list(conn: Conn, channel_id: str) -> list[dict[str, Any]]:
    """D2: the channel's grades, each with the keys it is assigned to."""
    grades = await conn.fetch("SELECT name, colour FROM grades WHERE channel_id = $1 ORDER BY name", channel_id)
    holders = await conn.fetch(
        "SELECT name, kind, value FROM grade_holders WHERE channel_id = $1 ORDER BY name, kind, value", channel_id,
    )
    by_name: dict[str, list[dict[str, str]]] = {}
    for h in holders:
        by_name.setdefault(h["name"], []).append({"kind": h["kind"], "value": h["value"]})
    return [{"name": g["name"], "colour": g["colour"], "holders": by_name.get(g["name"], [])} for g in grades]


async def session_secret(conn: Conn) -> str:
    """The console's cookie-signing secret, shared by every API process of this database
    (made once, at random). Kept in `meta`, so a replay's fresh schema makes a new one:
    staff then sign in again."""
    import secrets

    await conn.execute(
        "INSERT INTO meta (key, value) VALUES ('console.session_secret', $1) ON CONFLICT (key) DO NOTHING",
        secrets.token_urlsafe(48),
    )
    value = await conn.fetchval("SELECT value FROM meta WHERE key = 'console.session_secret'")
    return str(value)
