"""Channel settings (H1 member-hash secret, I17 MU limit, P2 field types): configuration,
not facts, written by `unifier channel configure` and `PATCH …/settings` alike."""

from __future__ import annotations

from typing import Any

import asyncpg

KEEP: Any = object()
"""A setting left as it is (absent from the request); None removes it."""


async def configure_channel(
    conn: asyncpg.Connection | asyncpg.Pool, channel_id: str, *, member_hash_secret: str | None = KEEP,
    mu_limit: int | None = KEEP, fields: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Set what is given (an empty secret removes it, as None does); `fields` are added
    to the declared types. The settings after the change, the secret only as set/unset."""
    secret = None if member_hash_secret is KEEP else (member_hash_secret or None)
    limit = None if mu_limit is KEEP else mu_limit
    row = await conn.fetchrow(
        """INSERT INTO channels AS c (channel_id, member_hash_secret, mu_limit, field_types)
           VALUES ($1, $2, $3, $4::jsonb)
           ON CONFLICT (channel_id) DO UPDATE SET
             member_hash_secret = CASE WHEN $5 THEN $2 ELSE c.member_hash_secret END,
             mu_limit = CASE WHEN $6 THEN $3 ELSE c.mu_limit END,
             field_types = c.field_types || $4::jsonb
           RETURNING channel_id, member_hash_secret IS NOT NULL AS member_hash, mu_limit,
                     imported_types || field_types AS field_types""",
        channel_id, secret, limit, fields or {}, member_hash_secret is not KEEP, mu_limit is not KEEP,
    )
    return {"channelId": row["channel_id"], "memberHashRequired": row["member_hash"], "muLimit": row["mu_limit"],
            "fields": dict(row["field_types"])}
