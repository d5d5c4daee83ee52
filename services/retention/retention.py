"""Retention (B4): leads and members with no contact for two years are deleted.

The sweep decides with a time it is given and publishes its decisions as `user.delete`
commands (actor `system`) on the commands topic, so a replay of the log repeats them
exactly instead of re-deciding with a later clock. The handler re-checks the contact
time, so a user who came back between sweep and apply is kept.
"""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from contracts.topics import Topics
from services.domain.commands import RETENTION_MS
from services.platform.kafka import producer_options


async def expired_users(pool: asyncpg.Pool, now_ms: int) -> list[tuple[str, str]]:
    """(channel_id, user_id) of live leads/members last contacted before now - 2 years."""
    rows = await pool.fetch(
        """SELECT channel_id, id FROM users
            WHERE type IN ('lead', 'member') AND NOT deleted AND merged_into IS NULL
              AND coalesce((state::json->>'last_contact_at')::bigint, (state::json->>'created_at')::bigint) < $1
            ORDER BY channel_id, id""",
        now_ms - RETENTION_MS,
    )
    return [(r[0], r[1]) for r in rows]


async def sweep(pool: asyncpg.Pool, bootstrap: str, topics: Topics, now_ms: int, *, idempotence: bool = False) -> int:
    """Publish one `user.delete` per expired user; returns how many."""
    expired = await expired_users(pool, now_ms)
    if not expired:
        return 0
    producer = AIOKafkaProducer(**producer_options(bootstrap), acks="all", enable_idempotence=idempotence, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for channel_id, user_id in expired:
            command = {
                # One decision per user and day: re-running the sweep the same day is a no-op.
                "eventId": f"retention:{user_id}:{now_ms // 86_400_000}",
                "type": "user.delete",
                "channelId": channel_id,
                "occurredAt": now_ms,
                "actor": "system",
                "userId": user_id,
            }
            futures.append(await producer.send(topics.commands, orjson.dumps(command), key=channel_id.encode()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(expired)
