"""The outbox relay: publish outbox rows in id order, then delete them.

At least once: a crash between publishing and deleting re-sends rows; consumers dedupe
user-changed by (userId, version), and every message carries a stable eventId. One
relay at a time holds a PostgreSQL advisory lock, so per-user order (= outbox id order)
holds with several instances running. A NOTIFY from the projection's commit wakes it
at once; a short poll covers a missed notification.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from aiokafka import AIOKafkaProducer

from services.runtime import metrics

log = logging.getLogger("unifier.relay")

_BATCH = 5000
_POLL_S = 0.25


class Relay:
    def __init__(self, pool: asyncpg.Pool, bootstrap: str, lock_name: str) -> None:
        self.pool = pool
        self.lock_name = lock_name
        # tansu rejects idempotent producers (DESIGN.md); ordering per key still holds
        # with one in-flight request per connection.
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=2,
            max_batch_size=256 * 1024,
        )
        self._wake = asyncio.Event()
        self.healthy = False

    async def run(self, stop: asyncio.Event) -> None:
        await self.producer.start()
        conn: asyncpg.Connection = await self.pool.acquire()
        wake = None
        try:
            wake = self._on_notify
            await conn.add_listener("unifier_outbox", wake)
            while not stop.is_set():
                if await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", self.lock_name):
                    break
                await _wait(self._wake, stop, 1.0)  # another instance relays; stand by
            while not stop.is_set():
                sent = await self.publish_once(conn)
                self.healthy = True
                if sent < _BATCH:
                    await _wait(self._wake, stop, _POLL_S)
            await self.publish_once(conn)  # drain what the last batch wrote
        finally:
            if wake is not None:
                await conn.remove_listener("unifier_outbox", wake)
            await conn.execute("SELECT pg_advisory_unlock_all()")
            await self.pool.release(conn)
            await self.producer.stop()

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def publish_once(self, conn: asyncpg.Connection) -> int:
        self._wake.clear()
        rows = await conn.fetch("SELECT id, topic, key, value FROM outbox ORDER BY id LIMIT $1", _BATCH)
        metrics.OUTBOX_BACKLOG.set(len(rows) if len(rows) < _BATCH else await conn.fetchval("SELECT count(*) FROM outbox"))
        if not rows:
            return 0
        futures = [
            await self.producer.send(r["topic"], value=r["value"], key=r["key"].encode() if r["key"] is not None else None)
            for r in rows
        ]
        await asyncio.gather(*futures)
        await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows])
        for r in rows:
            metrics.PUBLISHED.labels(topic=r["topic"]).inc()
        return len(rows)


async def _wait(event: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
