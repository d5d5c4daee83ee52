"""The outbox relay: publish outbox rows in id order, then delete them.

A row is one message or a pack of a batch's messages of one topic, in order
(schema.sql, `outbox`); a pack is deleted once all of it was published. At least once:
a crash between publishing and deleting re-sends rows (a whole pack); consumers dedupe
user-changed by (userId, version), and every message carries a stable eventId. One
relay at a time holds a PostgreSQL advisory lock, so per-user order (= outbox id order,
then order within a pack) holds with several instances running. A NOTIFY from the
projection's commit wakes it at once; a short poll covers a missed notification.

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
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any, Final

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
from services.platform.kafka import producer_options
from services.relay.partitioner import keyed, partition_of
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
            **producer_options(bootstrap), acks="all", enable_idempotence=idempotence, linger_ms=2,
            max_batch_size=256 * 1024, max_request_size=max_message_bytes,
        )
        self._partitions_of_key: dict[tuple[bytes, int], int] = {}  # see _partition
        self._round_partitions: dict[str, list[int]] = {}  # each topic's partitions, as `_send` saw them last
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
            while await self.publish_once(conn) >= _BATCH:  # drain what the last batches wrote
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
        """Publish the next rows (about `_BATCH` messages: whole rows, so a pack may take
        it past); delete them, parking the messages the broker refused. How many messages
        were handled (sent or parked)."""
        self._wake.clear()
        rows = await conn.fetch(_FETCH, _BATCH)
        count = sum([r[4] for r in rows])
        await self._count_backlog(conn, count)
        await self._count_parked(conn)
        if not rows:
            return 0
        refused: dict[tuple[int, int], tuple[str, str]] = {}  # (row, message) -> (code, reason)
        limit = self.max_message_bytes
        if not all(_pack_fits(r, limit - _SIZE_SLACK) for r in rows):  # a message may be over the limit
            for ri, mi, _topic, key, value in _messages(rows):
                if not _surely_fits(key, value, limit) and (size := _size(key, value)) > limit:
                    refused[(ri, mi)] = ("message_too_large", f"{size} bytes; the limit is {limit} (UNIFIER_MAX_MESSAGE_BYTES)")
        sent = await self._send(rows, refused)
        outcomes = await asyncio.gather(*(s[0] for s in sent), return_exceptions=True)
        suspects: list[_Message] = []  # messages of a batch the broker refused: which one was it?
        for batch, outcome in zip(sent, outcomes, strict=True):
            if isinstance(outcome, REFUSED):
                suspects.extend(self._batch_messages(rows, refused, batch))
            elif isinstance(outcome, BaseException):
                raise outcome  # an outage: the rows stay in the outbox
        if suspects:
            refused.update(await self._send_alone(suspects))
        ids = [r[0] for r in rows]
        published: Counter[str] = Counter()
        for r in rows:
            published[r[1]] += r[4]
        if refused:
            await self._park(conn, ids, refused, rows)
            for ri, _mi in refused:
                published[rows[ri][1]] -= 1
        else:
            await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", ids)
        for topic, n in published.items():
            metrics.PUBLISHED.labels(topic=topic).inc(n)
        return count

    async def _send_alone(self, messages: list[_Message]) -> dict[tuple[int, int], tuple[str, str]]:
        """Send each message in a batch of its own; those still refused ((row, message) ->
        code, reason)."""
        alone: list[tuple[asyncio.Future[Any], _Message]] = []
        for m in messages:
            ri, mi, topic, key, value = m
            batch = self.producer.create_batch()
            batch.append(key=key.encode() if key is not None else None, value=value, timestamp=None)
            alone.append((await self.producer.send_batch(batch, topic, partition=await self._partition_of(topic, key)), m))
        outcomes = await asyncio.gather(*(future for future, _ in alone), return_exceptions=True)
        refused = {}
        for (_, m), outcome in zip(alone, outcomes, strict=True):
            if isinstance(outcome, REFUSED):
                refused[(m[0], m[1])] = (_code(outcome), f"the broker refused it: {type(outcome).__name__}")
            elif isinstance(outcome, BaseException):
                raise outcome
        return refused

    async def _park(
        self, conn: asyncpg.Connection, ids: list[int], refused: dict[tuple[int, int], tuple[str, str]],
        rows: list[asyncpg.Record],
    ) -> None:
        """In one transaction: the refused messages go to outbox_parked, the rows are
        deleted. A one-message row keeps its id there; a message of a pack takes a new
        one from the outbox's sequence."""
        parked = [m for m in _messages(rows) if (m[0], m[1]) in refused]
        async with conn.transaction():
            fresh = iter(await conn.fetch(
                "SELECT nextval('outbox_id_seq') FROM generate_series(1, $1)", sum(rows[m[0]][5] is not None for m in parked),
            ))
            parked_ids = [rows[m[0]][0] if rows[m[0]][5] is None else next(fresh)[0] for m in parked]
            await conn.execute(
                """INSERT INTO outbox_parked (id, topic, key, value, code, reason)
                   SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[])
                   ON CONFLICT (id) DO NOTHING""",
                parked_ids, [m[2] for m in parked], [m[3] for m in parked], [m[4] for m in parked],
                [refused[(m[0], m[1])][0] for m in parked], [refused[(m[0], m[1])][1] for m in parked],
            )
            await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", ids)
        for m, parked_id in zip(parked, parked_ids, strict=True):
            code, reason = refused[(m[0], m[1])]
            metrics.PARKED.labels(topic=m[2], code=code).inc()
            log.error("parked outbox message %d for %s (%s): %s; `unifier outbox parked list` shows it",
                      parked_id, m[2], code, reason, extra=_ids(m[3], m[4]))
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
            metrics.OUTBOX_BACKLOG.set(await conn.fetchval("SELECT coalesce(sum(n), 0) FROM outbox"))

    async def _count_parked(self, conn: asyncpg.Connection) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._parked_counted_at >= _PARKED_REFRESH_S:
            self._parked_counted_at = now
            metrics.OUTBOX_PARKED.set(await conn.fetchval("SELECT count(*) FROM outbox_parked"))

    async def _partition_of(self, topic: str, key: str | None) -> int:
        """The partition `_send` gives the message (any for one without a key)."""
        partitions = sorted(await self.producer.partitions_for(topic))
        if key is None:
            return partitions[0]
        return self._partition(key.encode(), partitions)

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

    async def _send(
        self, rows: list[asyncpg.Record], refused: dict[tuple[int, int], tuple[str, str]],
    ) -> list[_Sent]:
        """Queue the rows' messages (but those `refused`) as one record batch per
        partition: a send() per message cost ~30 µs of the service's CPU. The partition is
        the one send() would choose (the default partitioner over the sorted partitions),
        so a key keeps its partition and, the rows and each pack's messages being in
        order, its order. Each message is appended by the batch's record builder itself
        (aiokafka's C `DefaultRecordBatchBuilder.append`, what `BatchBuilder.append` calls
        after its Python checks), with one timestamp a round. What each batch holds is
        said by position: the partition's messages `first` to `first + count` of this
        round, in order (`_batch_messages`). A row's keys are encoded and given their
        partitions by one compiled call (`partitioner.keyed`), not step by step here."""
        futures: list[_Sent] = []
        batches: dict[str, dict[int, list[Any]]] = {}  # topic -> partition -> [batch, append, count, first]
        partitions_of = self._round_partitions = {}  # the producer's metadata, as of this call
        memo = self._partitions_of_key  # `_partition`'s memo, which `keyed` shares
        timestamp = int(time.time() * 1000)
        for ri, r in enumerate(rows):
            topic = r[1]
            if r[5] is None:
                keys, values = [r[2]], [r[3]]
            else:
                keys, values = r[5], r[6]
            if refused or None in keys:  # the refused left out; no key, no order to keep: the partitioner picks
                kept_keys, kept_values = [], []
                for mi, (text_key, value) in enumerate(zip(keys, values, strict=True)):
                    if (ri, mi) in refused:
                        continue
                    if text_key is None:
                        futures.append((await self.producer.send(topic, value=value), topic, -1, ri, mi))
                        continue
                    kept_keys.append(text_key)
                    kept_values.append(value)
                keys, values = kept_keys, kept_values
            partitions = partitions_of.get(topic)
            if partitions is None:
                partitions = partitions_of[topic] = sorted(await self.producer.partitions_for(topic))
                batches[topic] = {}
            open_of = batches[topic]
            encoded, chosen = keyed(keys, partitions, memo, _KEYS_REMEMBERED)
            for key, value, partition in zip(encoded, values, chosen, strict=True):
                open_ = open_of.get(partition)
                if open_ is None:
                    batch = self.producer.create_batch()
                    open_ = open_of[partition] = [batch, _appender(batch), 0, 0]
                if open_[1](open_[2], timestamp, key, value, _NO_HEADERS) is None:  # full: send it, start another
                    futures.append(await self._queue(open_, topic, partition))
                    batch = self.producer.create_batch()
                    open_[:] = [batch, _appender(batch), 0, open_[3] + open_[2]]
                    open_[1](0, timestamp, key, value, _NO_HEADERS)
                open_[2] += 1
        for topic, open_of in batches.items():
            for partition, open_ in open_of.items():
                futures.append(await self._queue(open_, topic, partition))
        return futures

    async def _queue(self, open_: list[Any], topic: str, partition: int) -> _Sent:
        """Hand a filled batch to the producer: (its future, topic, partition, first, count)."""
        batch, _append, count, first = open_
        batch._relative_offset = count  # what BatchBuilder.append counts, appended past it
        return (await self.producer.send_batch(batch, topic, partition=partition), topic, partition, first, count)

    def _batch_messages(
        self, rows: list[asyncpg.Record], refused: dict[tuple[int, int], tuple[str, str]], sent: _Sent,
    ) -> list[_Message]:
        """The messages of a batch `_send` queued: its partition's, by position; a
        keyless message's batch holds it alone."""
        _future, topic, partition, first, count = sent
        if partition == -1:
            ri, mi = first, count
            return [m for m in _messages(rows) if m[0] == ri and m[1] == mi]
        mine: list[_Message] = []
        for m in _messages(rows):
            if m[2] == topic and m[3] is not None and (m[0], m[1]) not in refused:
                if self._partition(m[3].encode(), self._round_partitions[topic]) == partition:
                    mine.append(m)
        return mine[first:first + count]

_FETCH: Final = """SELECT id, topic, key, value, n, keys, vals FROM outbox
WHERE id <= (SELECT max(id) FROM (
    SELECT id, sum(n) OVER (ORDER BY id) - n AS before FROM outbox ORDER BY id LIMIT $1) c WHERE before < $1)
ORDER BY id"""
"""The next rows in id order, up to `$1` messages (a row holds `n`): whole rows, the last
one possibly past it (the running sum over ids and counts only: the window never holds a
row's messages). Columns by position: 0 id, 1 topic, 2 key, 3 value (a one-message row),
4 n, 5 keys, 6 vals (a pack; NULL for a one-message row)."""

_Message = tuple[int, int, str, str | None, bytes | None]
"""A message of a round, for the slow paths (sizes, refusals, parking): (row, message in
the row, topic, key, value)."""

_Sent = tuple["asyncio.Future[Any]", str, int, int, int]
"""A batch `_send` queued: (future, topic, partition, first, count) — the partition's
messages of the round from `first`, in order; partition -1: a keyless message alone,
(row, message) in place of (first, count)."""

_NO_HEADERS: Final[list[Any]] = []  # the record builder takes a list; never appended to


def _messages(rows: list[asyncpg.Record]) -> Iterator[_Message]:
    """Every message of the rows, in order."""
    for ri, r in enumerate(rows):
        if r[5] is None:
            yield ri, 0, r[1], r[2], r[3]
        else:
            for mi, (key, value) in enumerate(zip(r[5], r[6], strict=True)):
                yield ri, mi, r[1], key, value


def _pack_fits(r: asyncpg.Record, short: int) -> bool:
    """Whether every message of the row is surely within the limit (`short` = the limit
    less `_SIZE_SLACK`; see `_surely_fits`), from its longest key and value."""
    if r[5] is None:
        return len(r[3] or b"") + 4 * len(r[2] or "") <= short
    longest_value = max(map(len, filter(None, r[6])), default=0)
    return longest_value + 4 * max(map(len, filter(None, r[5])), default=0) <= short


def _appender(batch: BatchBuilder) -> Any:
    """The batch's record builder's `append(offset, timestamp, key, value, headers)`: the
    C builder aiokafka's `BatchBuilder.append` calls (aiokafka is pinned: a version that
    moves it fails tests/unit/test_relay_partition.py's batch test)."""
    return batch._builder.append


def _ids(key: str | None, value: bytes | None) -> dict[str, str]:
    """The fact ids of a message for its log line (never its content): a user-changed
    names its eventId, causationId and channelId; a dead letter its key's channel."""
    ids = {"channelId": (key or "").split(":", 1)[0]}
    try:
        body = orjson.loads(value or b"{}")
    except orjson.JSONDecodeError:
        body = {}
    if isinstance(body, dict):
        ids.update({k: body[k] for k in ("eventId", "causationId", "channelId") if isinstance(body.get(k), str)})
    return {k: v for k, v in ids.items() if v}


_SIZE_SLACK = 128  # > the producer's estimate beyond key and value: 61 + 21 + 5 + 5 + 1 bytes


def _surely_fits(key: str | None, value: bytes | None, limit: int) -> bool:
    """Whether the record's estimate (`_size`) is certainly within `limit`, from the
    lengths alone: a UTF-8 key is at most 4 bytes a character, and the estimate adds
    under `_SIZE_SLACK` to the key and value. Skips the estimate for every message but
    the large ones (~1 µs a message)."""
    return (len(value) if value is not None else 0) + 4 * (len(key) if key is not None else 0) + _SIZE_SLACK <= limit


def _size(key: str | None, value: bytes | None) -> int:
    """The record's size on the wire, as the producer estimates it (an upper bound)."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key.encode() if key is not None else None, value, []))


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
