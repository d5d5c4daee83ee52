"""Lookup definitions, answers and the queue of automatic lookups (services/store/lookups.sql)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from services.domain.core import Activity
from services.domain.lookups import LookupChange

from .pool import borrow


async def save_changes(conn: asyncpg.Connection, changes: Sequence[LookupChange]) -> None:
    """Write definitions and answers in the order the facts made them (staff and
    system commands: few, so one statement each)."""
    for c in changes:
        if c.op == "define":
            await conn.execute(
                """INSERT INTO lookups (channel_id, name, definition) VALUES ($1, $2, $3)
                   ON CONFLICT (channel_id, name) DO UPDATE SET definition = excluded.definition""",
                c.channel_id, c.name, c.definition,  # the pool's jsonb codec encodes it
            )
        elif c.op == "remove":
            await conn.execute("DELETE FROM lookups WHERE channel_id = $1 AND name = $2", c.channel_id, c.name)
        else:
            await conn.execute(
                """INSERT INTO lookup_results (channel_id, event_id, user_id, name, occurred_at, record)
                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
                c.channel_id, c.event_id, c.user_id, c.name, c.at, c.record,
            )


async def erase(conn: asyncpg.Connection, user_ids: Sequence[str]) -> None:
    """B2: what lookups brought back about a deleted user is personal data: it goes too."""
    if user_ids:
        await conn.execute("DELETE FROM lookup_results WHERE user_id = ANY($1::text[])", list(user_ids))


async def enqueue_chats(conn: asyncpg.Connection, activities: Sequence[Activity]) -> None:
    """Queue an automatic lookup for every chat from a medium a definition links (the
    live projection, in its transaction: the queue commits with the chat or not at all)."""
    chats = [a for a in activities if a.kind == "chat" and isinstance(a.body.get("medium"), str)]
    if not chats:
        return
    await conn.execute(
        """INSERT INTO lookup_queue (channel_id, event_id, name, user_id)
           SELECT c.channel_id, c.event_id, l.name, c.user_id
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS c(channel_id, event_id, user_id, medium)
           JOIN lookups l ON l.channel_id = c.channel_id AND l.definition->'media' ? c.medium
           ON CONFLICT DO NOTHING""",
        [a.channel_id for a in chats], [a.event_id for a in chats], [a.user_id for a in chats],
        [a.body["medium"] for a in chats],
    )


async def definitions(conn: asyncpg.Connection | asyncpg.Pool, channel_id: str) -> dict[str, dict[str, Any]]:
    """name → definition (as `lookup.define` carried it, the key still wrapped)."""
    async with borrow(conn) as c:
        rows = await c.fetch("SELECT name, definition FROM lookups WHERE channel_id = $1 ORDER BY name", channel_id)
    return {r["name"]: _json(r["definition"]) for r in rows}


async def definition(conn: asyncpg.Connection | asyncpg.Pool, channel_id: str, name: str) -> dict[str, Any] | None:
    async with borrow(conn) as c:
        raw = await c.fetchval("SELECT definition FROM lookups WHERE channel_id = $1 AND name = $2", channel_id, name)
    return None if raw is None else _json(raw)


async def results_of(conn: asyncpg.Connection | asyncpg.Pool, channel_id: str, user_id: str, *, limit: int = 20) -> list[dict[str, Any]]:
    """The answers recorded on a user and on the users merged into it (U4), newest first."""
    async with borrow(conn) as c:
        rows = await c.fetch(
            """SELECT event_id, occurred_at, record FROM lookup_results
               WHERE channel_id = $2 AND (user_id = $1 OR user_id IN
                     (SELECT source_id FROM merges WHERE channel_id = $2 AND target_id = $1))
               ORDER BY occurred_at DESC, event_id DESC LIMIT $3""",
            user_id, channel_id, limit,
        )
    return [{"eventId": r["event_id"], "occurredAt": r["occurred_at"], **_json(r["record"])} for r in rows]


# -- the queue of automatic lookups (services/lookup/worker.py) ----------------------


async def take_due(pool: asyncpg.Pool, *, limit: int, lease_s: float) -> list[asyncpg.Record]:
    """Lease up to `limit` due rows: they are due again after `lease_s` unless `done`
    removes them first (a worker killed mid-call loses nothing; the command it then
    publishes again carries the same eventId, so it is applied once)."""
    async with pool.acquire() as conn:
        return await conn.fetch(
            """UPDATE lookup_queue q SET due_at = now() + make_interval(secs => $2), attempts = q.attempts + 1
               FROM (SELECT channel_id, event_id, name FROM lookup_queue WHERE due_at <= now()
                     ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED) d
               WHERE q.channel_id = d.channel_id AND q.event_id = d.event_id AND q.name = d.name
               RETURNING q.channel_id, q.event_id, q.name, q.user_id, q.attempts""",
            limit, lease_s,
        )


async def postpone(pool: asyncpg.Pool, channel_id: str, event_id: str, name: str, delay_s: float) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            """UPDATE lookup_queue SET due_at = now() + make_interval(secs => $4), attempts = attempts - 1
               WHERE channel_id = $1 AND event_id = $2 AND name = $3""",
            channel_id, event_id, name, delay_s,
        )


async def done(pool: asyncpg.Pool, channel_id: str, event_id: str, name: str) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "DELETE FROM lookup_queue WHERE channel_id = $1 AND event_id = $2 AND name = $3", channel_id, event_id, name
        )


async def queued(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM lookup_queue"))


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str) else value
