"""The outbox relay: publish outbox rows in id order, then delete them.

At least once: a crash between publishing and deleting re-sends rows; consumers dedupe
user-changed by (userId, version), and every message carries a stable eventId. One
relay at a time holds a PostgreSQL advisory lock, so per-user order (= outbox id order)
holds with several instances running. A NOTIFY from the projection's commit wakes it
at once; a short poll covers a missed notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from services.platform import metrics
from services.platform.kafka import client_options
from services.store.pool import DATABASE_UNAVAILABLE

log = logging.getLogger("unifier.relay")

_BATCH = 5000
_POLL_S = 0.25
_BACKOFF_MAX_S = 5.0
_DRAIN_ATTEMPTS = 3  # after a stop: how many failed drains before leaving rows for the next start


class Relay:
    def __init__(self, pool: asyncpg.Pool, bootstrap: str, lock_name: str, *, idempotence: bool = False) -> None:
        self.pool = pool
        self.lock_name = lock_name
        # tansu rejects idempotent producers (docs/design.md), so they are opt-in
        # (UNIFIER_KAFKA_IDEMPOTENCE=true on Apache Kafka); without them ordering per key
        # still holds with one in-flight request per connection, and a retried send may
        # repeat a message, which consumers dedupe by (userId, version).
        self.producer = AIOKafkaProducer(
            **client_options(bootstrap), acks="all", enable_idempotence=idempotence, linger_ms=2,
            max_batch_size=256 * 1024,
        )
        self._partitioner = DefaultPartitioner()  # AIOKafkaProducer's default, as send() uses it
        self._wake = asyncio.Event()
        self.healthy = False

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop`, then drain once more. A lost database connection or an
        unreachable broker is waited out with backoff: the unsent rows stay in the
        outbox, so nothing is lost, and /healthz says degraded meanwhile."""
        await self.producer.start()
        failures = 0
        try:
            while True:
                try:
                    await self._relay(stop)
                    return
                except (*DATABASE_UNAVAILABLE, KafkaError) as err:
                    self.healthy = False
                    failures += 1
                    delay = min(0.2 * 2 ** min(failures, 5), _BACKOFF_MAX_S)
                    log.warning("relay interrupted (%s: %s); resuming in %.1f s", type(err).__name__, err, delay)
                    if stop.is_set() and failures > _DRAIN_ATTEMPTS:
                        log.warning("stopping with rows still in the outbox: the next start sends them")
                        return
                    if stop.is_set():
                        await asyncio.sleep(delay)  # draining after the stop: no event to wait for
                    else:
                        await _wait(stop, stop, delay)
        finally:
            await self.producer.stop()

    async def _relay(self, stop: asyncio.Event) -> None:
        conn: asyncpg.Connection = await self.pool.acquire()
        listening = False
        try:
            await conn.add_listener("unifier_outbox", self._on_notify)
            listening = True
            while not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", self.lock_name):
                if stop.is_set():
                    return  # another instance relays, and drains
                await _wait(self._wake, stop, 1.0)  # another instance relays; stand by
            while not stop.is_set():
                sent = await self.publish_once(conn)
                self.healthy = True
                if sent < _BATCH:
                    await _wait(self._wake, stop, _POLL_S)
            while await self.publish_once(conn) == _BATCH:  # drain what the last batches wrote
                pass
        finally:
            # The connection may be dead: cleaning up must not hide the original error.
            with contextlib.suppress(*DATABASE_UNAVAILABLE):
                if listening:
                    await conn.remove_listener("unifier_outbox", self._on_notify)
                await conn.execute("SELECT pg_advisory_unlock_all()")
            with contextlib.suppress(*DATABASE_UNAVAILABLE):
                await self.pool.release(conn)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def publish_once(self, conn: asyncpg.Connection) -> int:
        self._wake.clear()
        rows = await conn.fetch("SELECT id, topic, key, value FROM outbox ORDER BY id LIMIT $1", _BATCH)
        metrics.OUTBOX_BACKLOG.set(len(rows) if len(rows) < _BATCH else await conn.fetchval("SELECT count(*) FROM outbox"))
        if not rows:
            return 0
        await asyncio.gather(*await self._send(rows))
        await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows])
        for topic, n in Counter(r["topic"] for r in rows).items():
            metrics.PUBLISHED.labels(topic=topic).inc(n)
        return len(rows)

    async def _send(self, rows: list[asyncpg.Record]) -> list[asyncio.Future[Any]]:
        """Queue the rows as one record batch per partition: a send() per message cost
        ~30 µs of the service's CPU. The partition is the one send() would choose (the
        default partitioner over the sorted partitions), so a key keeps its partition
        and, the rows being in id order, its order."""
        futures = []
        batches: dict[tuple[str, int], BatchBuilder] = {}
        partitions_of: dict[str, list[int]] = {}  # the producer's metadata, as of this call
        for r in rows:
            topic, value = r["topic"], r["value"]
            if r["key"] is None:  # no key, no order to keep: the partitioner picks
                futures.append(await self.producer.send(topic, value=value))
                continue
            key = r["key"].encode()
            partitions = partitions_of.get(topic)
            if partitions is None:
                partitions = partitions_of[topic] = sorted(await self.producer.partitions_for(topic))
            partition = self._partitioner(key, partitions, partitions)
            batch = batches.get((topic, partition))
            if batch is None:
                batch = batches[(topic, partition)] = self.producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
                futures.append(await self.producer.send_batch(batch, topic, partition=partition))
                batch = batches[(topic, partition)] = self.producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        for (topic, partition), batch in batches.items():
            futures.append(await self.producer.send_batch(batch, topic, partition=partition))
        return futures


async def _wait(event: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
