"""The outbox relay: publish outbox rows in id order, then delete them.

At least once: a crash between publishing and deleting re-sends rows; consumers dedupe
user-changed by (userId, version), and every message carries a stable eventId. One
relay at a time holds a PostgreSQL advisory lock, so per-user order (= outbox id order)
holds with several instances running. A NOTIFY from the projection's commit wakes it
at once; a short poll covers a missed notification.

A message the broker refuses for good — larger than `max_message_bytes` (checked before
sending: match the broker's `message.max.bytes`), or answered with an error about the
record itself (`REFUSED`) — is *parked*: moved to `outbox_parked` in the transaction
that deletes the sent rows, counted, logged, and listed/retried from the CLI (`unifier
outbox parked`). The rest goes on; one bad message never stops the relay. Any other
error (broker unreachable, timeouts, authorization) is an outage: nothing is parked,
the rows stay, and the relay retries with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidMessageError,
    InvalidTimestampError,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    PolicyViolationError,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnsupportedForMessageFormatError,
)
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from services.platform import metrics
from services.platform.kafka import client_options
from services.relay.partitioner import partition_of
from services.store.pool import DATABASE_UNAVAILABLE

log = logging.getLogger("unifier.relay")

_BATCH = 5000
_POLL_S = 0.25
_BACKOFF_MAX_S = 5.0
_DRAIN_ATTEMPTS = 3  # after a stop: how many failed drains before leaving rows for the next start
_PARKED_REFRESH_S = 10.0  # how often the parked-messages gauge is re-counted
_BACKLOG_REFRESH_S = 1.0  # how often a backlog of more than _BATCH rows is re-counted
_KEYS_REMEMBERED = 100_000  # key → partition choices kept (~20 MB at most)
MAX_MESSAGE_BYTES = 1024 * 1024  # Kafka's default message.max.bytes (1048588), rounded down

REFUSED: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError, CorruptRecordException,
    InvalidMessageError, InvalidTimestampError, InvalidTopicError, PolicyViolationError,
    UnsupportedForMessageFormatError,
)
"""Errors about the record itself: sending it again cannot succeed, so it is parked."""



class Relay:
    def __init__(
        self, pool: asyncpg.Pool, bootstrap: str, lock_name: str, *, idempotence: bool = False,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.pool = pool
        self.lock_name = lock_name
        self.max_message_bytes = max_message_bytes
        # tansu rejects idempotent producers (docs/design.md), so they are opt-in
        # (UNIFIER_KAFKA_IDEMPOTENCE=true on Apache Kafka); without them ordering per key
        # still holds with one in-flight request per connection, and a retried send may
        # repeat a message, which consumers dedupe by (userId, version).
        self.producer = AIOKafkaProducer(
            **client_options(bootstrap), acks="all", enable_idempotence=idempotence, linger_ms=2,
            max_batch_size=256 * 1024, max_request_size=max_message_bytes,
        )
        self._partitions_of_key: dict[tuple[bytes, int], int] = {}  # see _partition
        self._wake = asyncio.Event()
        self._parked_counted_at = -_PARKED_REFRESH_S
        self._backlog_counted_at = -_BACKLOG_REFRESH_S
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
        """Publish the next rows; delete them, parking those the broker refused. How
        many rows were handled (sent or parked)."""
        self._wake.clear()
        rows = await conn.fetch("SELECT id, topic, key, value FROM outbox ORDER BY id LIMIT $1", _BATCH)
        await self._count_backlog(conn, len(rows))
        await self._count_parked(conn)
        if not rows:
            return 0
        refused: dict[int, tuple[str, str]] = {}  # outbox id -> (code, reason)
        limit = self.max_message_bytes
        # `_surely_fits` written out: most rows are far under the limit, no estimate needed.
        short = limit - _SIZE_SLACK
        sendable = [r for r in rows if len(r[3] or b"") + 4 * len(r[2] or "") <= short]
        if len(sendable) < len(rows):
            sendable = []
            for r in rows:
                size = _size(r) if not _surely_fits(r["key"], r["value"], limit) else 0
                if size > limit:
                    refused[r["id"]] = ("message_too_large", f"{size} bytes; the limit is {limit} (UNIFIER_MAX_MESSAGE_BYTES)")
                else:
                    sendable.append(r)
        sent = await self._send(sendable)
        outcomes = await asyncio.gather(*(future for future, _ in sent), return_exceptions=True)
        suspects: list[asyncpg.Record] = []  # rows of a batch the broker refused: which one was it?
        for (_, group), outcome in zip(sent, outcomes, strict=True):
            if isinstance(outcome, REFUSED):
                suspects.extend(group)
            elif isinstance(outcome, BaseException):
                raise outcome  # an outage: the rows stay in the outbox
        if suspects:
            refused.update(await self._send_alone(suspects))
        ids = [r[0] for r in rows]
        if refused:
            await self._park(conn, ids, refused, rows)
            published = Counter(r["topic"] for r in rows if r["id"] not in refused)
        else:
            await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", ids)
            published = Counter([r[1] for r in rows])
        for topic, n in published.items():
            metrics.PUBLISHED.labels(topic=topic).inc(n)
        return len(rows)

    async def _send_alone(self, rows: list[asyncpg.Record]) -> dict[int, tuple[str, str]]:
        """Send each row in a batch of its own; those still refused (id -> code, reason)."""
        alone: list[tuple[asyncio.Future[Any], list[asyncpg.Record]]] = []
        for r in rows:
            batch = self.producer.create_batch()
            batch.append(key=r["key"].encode() if r["key"] is not None else None, value=r["value"], timestamp=None)
            alone.append((await self.producer.send_batch(batch, r["topic"], partition=await self._partition_of(r)), [r]))
        outcomes = await asyncio.gather(*(future for future, _ in alone), return_exceptions=True)
        refused = {}
        for (_, (r,)), outcome in zip(alone, outcomes, strict=True):
            if isinstance(outcome, REFUSED):
                refused[r["id"]] = (_code(outcome), f"the broker refused it: {type(outcome).__name__}")
            elif isinstance(outcome, BaseException):
                raise outcome
        return refused

    async def _park(self, conn: asyncpg.Connection, ids: list[int], refused: dict[int, tuple[str, str]], rows: list[asyncpg.Record]) -> None:
        """In one transaction: the refused rows move to outbox_parked, the rest is deleted."""
        parked = list(refused)
        async with conn.transaction():
            await conn.execute(
                """WITH moved AS (DELETE FROM outbox WHERE id = ANY($1::bigint[]) RETURNING id, topic, key, value)
                   INSERT INTO outbox_parked (id, topic, key, value, code, reason)
                   SELECT m.id, m.topic, m.key, m.value, e.code, e.reason
                   FROM moved m JOIN unnest($1::bigint[], $2::text[], $3::text[]) AS e(id, code, reason) USING (id)
                   ON CONFLICT (id) DO NOTHING""",
                parked, [refused[i][0] for i in parked], [refused[i][1] for i in parked],
            )
            await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", ids)
        by_id = {r["id"]: r for r in rows}
        for i in parked:
            r, (code, reason) = by_id[i], refused[i]
            metrics.PARKED.labels(topic=r["topic"], code=code).inc()
            log.error("parked outbox message %d for %s (%s): %s; `unifier outbox parked list` shows it",
                      i, r["topic"], code, reason, extra=_ids(r))
        self._parked_counted_at = -_PARKED_REFRESH_S  # re-count at the next round

    async def _count_backlog(self, conn: asyncpg.Connection, fetched: int) -> None:
        """The backlog gauge: the rows fetched when they are all there is; else counted,
        at most every _BACKLOG_REFRESH_S (the gauge keeps the last count meanwhile). A
        count reads the whole backlog: counted every round, a relay behind an import
        read it once per 5,000 rows published, ~4 µs of PostgreSQL a row at a 100k
        backlog, more the further behind it was (issue 14, session 10)."""
        if fetched < _BATCH:
            metrics.OUTBOX_BACKLOG.set(fetched)
            return
        now = asyncio.get_running_loop().time()
        if now - self._backlog_counted_at >= _BACKLOG_REFRESH_S:
            self._backlog_counted_at = now
            metrics.OUTBOX_BACKLOG.set(await conn.fetchval("SELECT count(*) FROM outbox"))

    async def _count_parked(self, conn: asyncpg.Connection) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._parked_counted_at >= _PARKED_REFRESH_S:
            self._parked_counted_at = now
            metrics.OUTBOX_PARKED.set(await conn.fetchval("SELECT count(*) FROM outbox_parked"))

    async def _partition_of(self, r: asyncpg.Record) -> int:
        """The partition `_send` gives the row (any for a row without a key)."""
        partitions = sorted(await self.producer.partitions_for(r["topic"]))
        if r["key"] is None:
            return partitions[0]
        return self._partition(r["key"].encode(), partitions)

    def _partition(self, key: bytes, partitions: list[int]) -> int:
        """The default partitioner's choice (aiokafka's DefaultPartitioner, which send()
        uses: murmur2 of the key over the sorted partitions), remembered: the same users
        are published again and again. Bounded: cleared when it grows past
        _KEYS_REMEMBERED. A key seen for the first time — every `created` of an import —
        is hashed by the compiled `partitioner.murmur2` (~6× fewer instructions than
        the struct-based Python one it replaces, ~8 k a key)."""
        memo = self._partitions_of_key
        partition = memo.get((key, len(partitions)))
        if partition is None:
            if len(memo) >= _KEYS_REMEMBERED:
                memo.clear()
            partition = memo[(key, len(partitions))] = partition_of(key, partitions)
        return partition

    async def _send(self, rows: list[asyncpg.Record]) -> list[tuple[asyncio.Future[Any], list[asyncpg.Record]]]:
        """Queue the rows as one record batch per partition: a send() per message cost
        ~30 µs of the service's CPU. The partition is the one send() would choose (the
        default partitioner over the sorted partitions), so a key keeps its partition
        and, the rows being in id order, its order."""
        futures: list[tuple[asyncio.Future[Any], list[asyncpg.Record]]] = []
        batches: dict[tuple[str, int], tuple[BatchBuilder, list[asyncpg.Record]]] = {}
        partitions_of: dict[str, list[int]] = {}  # the producer's metadata, as of this call
        memo = self._partitions_of_key  # `_partition`'s, looked up here first: a message or two µs of a relay's ~10
        for r in rows:
            _id, topic, text_key, value = r  # the SELECT's columns, by position
            if text_key is None:  # no key, no order to keep: the partitioner picks
                futures.append((await self.producer.send(topic, value=value), [r]))
                continue
            key = text_key.encode()
            partitions = partitions_of.get(topic)
            if partitions is None:
                partitions = partitions_of[topic] = sorted(await self.producer.partitions_for(topic))
            partition = memo.get((key, len(partitions)))
            if partition is None:
                partition = self._partition(key, partitions)
            open_ = batches.get((topic, partition))
            if open_ is None:
                open_ = batches[(topic, partition)] = (self.producer.create_batch(), [])
            if open_[0].append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
                futures.append((await self.producer.send_batch(open_[0], topic, partition=partition), open_[1]))
                open_ = batches[(topic, partition)] = (self.producer.create_batch(), [])
                open_[0].append(key=key, value=value, timestamp=None)
            open_[1].append(r)
        for (topic, partition), (batch, group) in batches.items():
            futures.append((await self.producer.send_batch(batch, topic, partition=partition), group))
        return futures


def _ids(r: asyncpg.Record) -> dict[str, str]:
    """The fact ids of a message for its log line (never its content): a user-changed
    names its eventId, causationId and channelId; a dead letter its key's channel."""
    ids = {"channelId": (r["key"] or "").split(":", 1)[0]}
    try:
        body = orjson.loads(r["value"] or b"{}")
    except orjson.JSONDecodeError:
        body = {}
    if isinstance(body, dict):
        ids.update({k: body[k] for k in ("eventId", "causationId", "channelId") if isinstance(body.get(k), str)})
    return {k: v for k, v in ids.items() if v}


_SIZE_SLACK = 128  # > the producer's estimate beyond key and value: 61 + 21 + 5 + 5 + 1 bytes


def _surely_fits(key: str | None, value: bytes | None, limit: int) -> bool:
    """Whether the record's estimate (`_size`) is certainly within `limit`, from the
    lengths alone: a UTF-8 key is at most 4 bytes a character, and the estimate adds
    under `_SIZE_SLACK` to the key and value. Skips the estimate for every row but the
    large ones (~1 µs a message)."""
    return (len(value) if value is not None else 0) + 4 * (len(key) if key is not None else 0) + _SIZE_SLACK <= limit


def _size(r: asyncpg.Record) -> int:
    """The record's size on the wire, as the producer estimates it (an upper bound)."""
    key = r["key"].encode() if r["key"] is not None else None
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, r["value"], []))


def _code(err: KafkaError) -> str:
    """`MessageSizeTooLargeError` -> `message_size_too_large`: the parked row's code."""
    name = type(err).__name__.removesuffix("Error").removesuffix("Exception")
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


async def _wait(event: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
