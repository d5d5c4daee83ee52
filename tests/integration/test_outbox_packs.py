"""The outbox in packs (issue 14, session 14; docs/decisions.md, "the outbox in packs"):
a batch's messages are one outbox row per topic, and the relay publishes them as it
published one row a message — every message once, each key's messages in order (design
"Properties to hold": per user, in version order), a refused one parked alone, the rows
of a version before the packs relayed as before (docs/operations.md, "Upgrading")."""

from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.producer.message_accumulator import BatchBuilder
from hypothesis import given, settings
from hypothesis import strategies as st

from services.relay import relay as relay_mod
from services.relay.relay import Relay
from services.store.pool import create_pool
from services.store.repository import outbox_packs, save_outbox

pytestmark = pytest.mark.integration

UC, DL = "t.user-changed", "t.dead-letter"

_messages = st.lists(
    st.tuples(st.sampled_from([UC, DL]), st.one_of(st.none(), st.sampled_from(["a", "b", "c", "ü"])),
              st.one_of(st.none(), st.binary(max_size=40))),
    min_size=1, max_size=40,
)


@settings(max_examples=300)
@given(_messages, st.integers(min_value=1, max_value=120))
def test_packs_hold_each_topics_messages_in_order_within_the_size(messages: list[Any], limit: int) -> None:
    """Each topic's messages, packs read in order, are the batch's messages of that topic
    in order; a pack passes `limit` bytes only with one message."""
    packs = outbox_packs(messages, limit)
    for topic in (UC, DL):
        flat = [(k, v) for t, n, keys, vals in packs if t == topic for k, v in zip(keys, vals, strict=True)]
        assert flat == [(k, v) for t, k, v in messages if t == topic]
    for _t, n, keys, vals in packs:
        assert n == len(keys) == len(vals) >= 1
        assert n == 1 or sum(len(v) for v in vals if v is not None) <= limit


class _Builder:
    """aiokafka's record builder as the relay uses it: full after `room` records."""

    def __init__(self, room: int) -> None:
        self.records: list[tuple[int, bytes | None, bytes | None]] = []
        self.room = room

    def append(self, offset: int, timestamp: int, key: bytes | None, value: bytes | None, headers: list[Any]) -> object | None:
        if len(self.records) >= self.room:
            return None
        assert offset == len(self.records) and isinstance(timestamp, int) and headers == []
        self.records.append((offset, key, value))
        return object()


class _Batch:
    def __init__(self, room: int) -> None:
        self._builder = _Builder(room)
        self.alone: list[tuple[bytes | None, bytes | None]] = []

    def append(self, *, key: bytes | None, value: bytes | None, timestamp: None) -> object:
        self.alone.append((key, value))
        return object()


class _Broker:
    """A producer that records what each partition received, in order; batches hold at
    most `room` records (so full batches are sent and new ones started); a batch holding
    b"POISON" is refused as Kafka refuses a record over its limit."""

    def __init__(self, room: int = 3, partitions: int = 3) -> None:
        self.room, self.partitions = room, partitions
        self.received: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = defaultdict(list)

    def create_batch(self) -> _Batch:
        return _Batch(self.room)

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    async def send(self, topic: str, *, value: bytes | None) -> asyncio.Future[None]:
        self.received[(topic, -1)].append((None, value))
        return self._done(None)

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> asyncio.Future[None]:
        records = [(k, v) for _, k, v in batch._builder.records] + batch.alone
        assert getattr(batch, "_relative_offset", len(records)) == len(records)
        if any(v is not None and b"POISON" in v for _, v in records):
            return self._done(MessageSizeTooLargeError())
        self.received[(topic, partition)].extend(records)
        return self._done(None)

    @staticmethod
    def _done(error: BaseException | None) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
        return future


def _relay(pool: asyncpg.Pool, broker: _Broker) -> Relay:
    relay = Relay(pool, "unused:9092", "test-relay")
    relay.producer = broker  # type: ignore[assignment]
    return relay


async def _drain(relay: Relay, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        while await relay.publish_once(conn):
            pass
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_packs_and_single_rows_are_published_once_each_key_in_order(pool: asyncpg.Pool) -> None:
    """Batches of packs after rows of one message (an outbox of the version before, or
    parked messages put back): every message once, on its key's partition, each key's
    messages in the order they were written; keyless messages too."""
    written: list[tuple[str, str | None, bytes]] = []
    await pool.executemany("INSERT INTO outbox (topic, key, value) VALUES ($1, $2, $3)",
                           [(UC, f"k{i % 4}", b"old-%d" % i) for i in range(5)])
    written += [(UC, f"k{i % 4}", b"old-%d" % i) for i in range(5)]
    n = 0
    for size in (7, 1, 12, 30):
        batch = [(UC if i % 5 else DL, f"k{(n + i) % 4}" if i % 9 else None, b"m-%d" % (n + i)) for i in range(size)]
        n += size
        async with pool.acquire() as conn, conn.transaction():
            await save_outbox(conn, batch)
        written += batch
    broker = _Broker(room=3)
    relay = _relay(pool, broker)
    relay_mod_batch = relay_mod._BATCH
    try:
        relay_mod._BATCH = 10  # several rounds, a pack taking a round past it
        await _drain(relay, pool)
    finally:
        relay_mod._BATCH = relay_mod_batch
    got = [(t, k.decode() if k is not None else None, v) for (t, _p), recs in broker.received.items() for k, v in recs]
    assert sorted(got, key=repr) == sorted(written, key=repr)  # every message once
    for (topic, partition), recs in broker.received.items():
        for key in {k for k, _ in recs if k is not None}:
            assert partition == relay._partition(key, [0, 1, 2])
            assert [v for k, v in recs if k == key] == [v for t, k, v in written if t == topic and k == key.decode()]


async def test_a_refused_message_of_a_pack_is_parked_alone_with_a_new_id(pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 11 item 1 in a pack: the broker refuses the batch holding one message; that
    message alone is parked (under an id of the outbox's sequence, after every row's), the
    pack's others are published and the pack deleted. The log names the fact's ids, never
    the message."""
    poison = orjson.dumps({"eventId": "uc-3", "causationId": "ev-3", "channelId": "ch", "user": {"name": "POISON"}})
    batch = [(UC, f"ch:u{i}", poison if i == 3 else b"ok-%d" % i) for i in range(8)]
    async with pool.acquire() as conn, conn.transaction():
        await save_outbox(conn, batch)
    (pack_id,) = [r[0] for r in await pool.fetch("SELECT id FROM outbox")]
    broker = _Broker(room=2)
    await _drain(_relay(pool, broker), pool)
    published = sorted(v for recs in broker.received.values() for _, v in recs)
    assert published == sorted(b"ok-%d" % i for i in range(8) if i != 3)
    parked = await pool.fetch("SELECT id, topic, key, value, code FROM outbox_parked")
    assert [(r["topic"], r["key"], r["value"], r["code"]) for r in parked] == [(UC, "ch:u3", poison, "message_size_too_large")]
    assert parked[0]["id"] > pack_id
    (line,) = [r for r in caplog.records if r.name == "unifier.relay" and "parked" in r.getMessage()]
    assert (line.eventId, line.causationId) == ("uc-3", "ev-3")  # type: ignore[attr-defined]
    assert "POISON" not in line.getMessage() and str(parked[0]["id"]) in line.getMessage()


async def test_a_message_of_a_pack_over_the_limit_is_parked_before_sending(pool: asyncpg.Pool) -> None:
    """UNIFIER_MAX_MESSAGE_BYTES in a pack: the message over it is parked (code
    message_too_large), the others sent in order."""
    batch = [(UC, "ch:u1", b"a"), (UC, "ch:u1", b"x" * 3000), (UC, "ch:u1", b"b")]
    async with pool.acquire() as conn, conn.transaction():
        await save_outbox(conn, batch)
    broker = _Broker()
    relay = _relay(pool, broker)
    relay.max_message_bytes = 2048
    await _drain(relay, pool)
    assert [v for recs in broker.received.values() for _, v in recs] == [b"a", b"b"]
    assert await pool.fetchval("SELECT code FROM outbox_parked") == "message_too_large"


async def test_an_outbox_of_the_version_before_is_upgraded_in_place_and_relayed(settings: Any) -> None:
    """schema.sql on an outbox created before the packs, holding rows: the rows stay (one
    message each) and are relayed first, in order; the upgrade is idempotent."""
    schema = f"t_outbox_up_{secrets.token_hex(3)}"
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"; SET search_path TO "{schema}"')
        await conn.execute("CREATE TABLE outbox (id bigserial PRIMARY KEY, topic text NOT NULL, key text, value bytea)")
        await conn.executemany("INSERT INTO outbox (topic, key, value) VALUES ($1, $2, $3)",
                               [(UC, "ch:u1", b"v1"), (UC, "ch:u1", b"v2"), (UC, None, None)])
        pool = await create_pool(settings.database_url, schema, min_size=1, max_size=2)  # runs schema.sql
        try:
            await (await create_pool(settings.database_url, schema, min_size=1, max_size=1)).close()  # again: nothing changes
            assert [tuple(r) for r in await pool.fetch("SELECT topic, key, value, n, keys FROM outbox ORDER BY id")] == [
                (UC, "ch:u1", b"v1", 1, None), (UC, "ch:u1", b"v2", 1, None), (UC, None, None, 1, None)]
            assert await pool.fetchval("""SELECT bool_and(attcompression = 'l' OR attstorage = 'e') FROM pg_attribute
                                          WHERE attrelid = 'outbox'::regclass AND attname IN ('keys', 'vals')""")
            async with pool.acquire() as c, c.transaction():
                await save_outbox(c, [(UC, "ch:u1", b"v3")])
            broker = _Broker()
            await _drain(_relay(pool, broker), pool)
            assert [v for (_t, p), recs in broker.received.items() if p >= 0 for _, v in recs] == [b"v1", b"v2", b"v3"]
            assert broker.received[(UC, -1)] == [(None, None)]
        finally:
            await pool.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await pool.close()
    finally:
        await conn.close()


async def test_the_relay_builds_the_batch_aiokafkas_batch_builder_builds() -> None:
    """The relay appends through the batch's C builder (`relay._appender`) and sets the
    count itself: the batch is byte for byte what `BatchBuilder.append` builds (an aiokafka
    that moves its builder fails here, not in production)."""
    ours, theirs = BatchBuilder(64 * 1024, 0), BatchBuilder(64 * 1024, 0)
    append = relay_mod._appender(ours)
    records = [(b"ch:u%d" % i, b"value-%d" % i) for i in range(20)] + [(b"ch:t", None)]
    for offset, (key, value) in enumerate(records):
        assert append(offset, 1_767_225_600_000, key, value, relay_mod._NO_HEADERS) is not None
        assert theirs.append(timestamp=1_767_225_600_000, key=key, value=value) is not None
    ours._relative_offset = len(records)
    assert ours.record_count() == theirs.record_count() == len(records)
    assert bytes(ours._build()) == bytes(theirs._build())
