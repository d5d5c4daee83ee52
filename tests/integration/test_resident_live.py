"""The live projection's resident users (services/projection/resident.py) against
PostgreSQL: users kept in memory between batches must change nothing in the state, and
whatever another writer did must make them be dropped, not trusted (G3).

The records are those of test_resident.py (mixed SDK facts with merges, commands, bad
records, imports with an MU limit), fed to `apply_batch` directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest_asyncio

from services.platform.config import Settings
from services.projection.batch import apply_batch
from services.projection.records import Record
from services.projection.resident import ResidentUsers
from services.replay import workload
from services.replay.digest import state_digest
from services.store import repository as repo
from services.store.pool import create_pool
from tests.integration.test_resident import CHANNELS, LEAD_CHANNEL, MU_CHANNEL, TOPICS, _records
from tests.support.infra import drop_schema

CHUNK = 250


@pytest_asyncio.fixture
async def pools(settings: Settings) -> AsyncIterator[list[asyncpg.Pool]]:
    async for made in channel_pools(settings, ("load", "res", "tiny")):
        yield made


async def channel_pools(settings: Settings, kinds: tuple[str, ...]) -> AsyncIterator[list[asyncpg.Pool]]:
    """One schema per kind with the workload's channels (hashed ones, the MU-limited
    one); the body of a fixture: dropped after its one yield."""
    assert settings.database_url is not None
    names = [f"{settings.db_schema}_{k}" for k in kinds]
    made = [await create_pool(settings.database_url, n) for n in names]
    for p in made:
        for ch in workload.hashed_channels(CHANNELS):
            await p.execute("INSERT INTO channels (channel_id, member_hash_secret) VALUES ($1, $2)", ch, workload.HASHED_CHANNEL_SECRET)
        await p.execute("INSERT INTO channels (channel_id, mu_limit) VALUES ($1, 25)", MU_CHANNEL)
    yield made
    for p in made:
        await p.close()
    for n in names:
        await drop_schema(settings.database_url, n)


def _chunks(records: list[Record]) -> list[list[Record]]:
    return [records[i : i + CHUNK] for i in range(0, len(records), CHUNK)]


async def _retried(pool: asyncpg.Pool, records: list[Record], resident: ResidentUsers) -> int:
    """apply_batch as the consumer runs it: a conflict is retried (G3). The conflicts met."""
    for conflicts in range(5):
        try:
            await apply_batch(pool, TOPICS, records, now_ms=0, outbox=False, resident=resident)
            return conflicts
        except repo.Conflict:
            continue
    raise AssertionError("still conflicting")


async def _rows(pool: asyncpg.Pool) -> dict[str, list[tuple[Any, ...]]]:
    queries = {
        "identities": "SELECT channel_id, kind, value, user_id, qualified FROM identities ORDER BY 1, 2, 3, 4",
        "activities": "SELECT channel_id, event_id, user_id, kind, body::text FROM activities ORDER BY 1, 2",
        "merges": "SELECT channel_id, source_id, target_id FROM merges ORDER BY 1, 2",
        "imports": "SELECT channel_id, import_id, status, rows::text FROM imports ORDER BY 1, 2",
    }
    return {k: [tuple(r) for r in await pool.fetch(q)] for k, q in queries.items()}


async def test_resident_users_reach_the_state_that_loading_every_batch_reaches(pools: list[asyncpg.Pool]) -> None:
    """Flow 5, G3, U4, I17: the same batches give the same users, identities, chats,
    merges and import log whether each batch loads its users from PostgreSQL or keeps
    them in memory — with room for all of them, and with room for 40 (evicted least
    recently used after every batch, so lookups keep going back to the store)."""
    load, res, tiny = pools
    records = _records()
    roomy, cramped = ResidentUsers(10**6), ResidentUsers(40)
    for chunk in _chunks(records):
        await apply_batch(load, TOPICS, chunk, now_ms=0, outbox=False)
        await apply_batch(res, TOPICS, chunk, now_ms=0, outbox=False, resident=roomy)
        await apply_batch(tiny, TOPICS, chunk, now_ms=0, outbox=False, resident=cramped)
        assert len(cramped) <= 40

    assert roomy.drops == 0 and cramped.drops == 0
    assert roomy.hits > 0 and roomy.misses > 0  # the test exercises both paths
    # Nobody evicted but users an import wrote in a batch of import facts alone (not kept
    # after its commit: ResidentUsers.forget, issue 14 item 5).
    stored = {r[0]: r[1] for r in await res.fetch("SELECT id, channel_id FROM users")}
    held = {u.id for u in roomy.directory.users()}
    forgotten = stored.keys() - held
    assert held <= stored.keys() and forgotten and {stored[i] for i in forgotten} <= {LEAD_CHANNEL, MU_CHANNEL}
    expected = await state_digest(load)
    assert await load.fetchval("SELECT count(*) FROM merges") > 0
    for pool in (res, tiny):
        assert await state_digest(pool) == expected
        assert await _rows(pool) == await _rows(load)


async def test_g3_another_writer_of_a_channel_makes_the_resident_copy_dropped_and_the_state_stays_right(
    pools: list[asyncpg.Pool],
) -> None:
    """G3: instance A keeps users in memory; instance B (a rebalance, or a producer keying
    a channel to two partitions) applies a stretch of the same channels' facts; when A
    goes on, the channel fence shows B's stamp, A drops what it holds and loads fresh.
    The state equals that of one writer loading every batch."""
    load, shared, _ = pools
    chunks = _chunks(_records())
    a, b = ResidentUsers(10**6), ResidentUsers(10**6)
    third = len(chunks) // 3
    for i, chunk in enumerate(chunks):
        await apply_batch(load, TOPICS, chunk, now_ms=0, outbox=False)
        writer = b if third <= i < 2 * third else a
        await _retried(shared, chunk, writer)
    assert a.drops >= 1  # it saw B's writes and did not trust its copy
    assert await state_digest(shared) == await state_digest(load)
    assert await _rows(shared) == await _rows(load)


async def test_g3_a_revision_conflict_drops_the_resident_copy_and_the_batch_is_reapplied_on_fresh_state(
    pools: list[asyncpg.Pool],
) -> None:
    """G3: a writer that does not stamp the channel fence (an older version, a hand
    edit) moves every user's `rev`. The resident copy's next write is refused by the
    revision fence (or its next load sees the moved rev): the batch rolls back, the copy
    is dropped, the retry loads fresh users and applies — same state as loading every batch."""
    load, res, _ = pools
    chunks = _chunks(_records())
    resident = ResidentUsers(10**6)
    half = len(chunks) // 2
    conflicts = 0
    for i, chunk in enumerate(chunks):
        await apply_batch(load, TOPICS, chunk, now_ms=0, outbox=False)
        if i == half:
            await res.execute("UPDATE users SET rev = rev + 1")
            drops = resident.drops
            conflicts += await _retried(res, chunk, resident)
            assert resident.drops > drops
            continue
        conflicts += await _retried(res, chunk, resident)
    assert conflicts >= 1
    assert await state_digest(res) == await state_digest(load)
    assert await _rows(res) == await _rows(load)


def _boot(offset: int, veil: str, at: int) -> Record:
    body = {"type": "boot", "eventId": f"fence-{offset}", "channelId": "ch_fence", "occurredAt": at,
            "veilId": veil, "platform": "web"}
    return Record(TOPICS.sdk_events, 0, offset, at, b"ch_fence", orjson.dumps(body))


async def test_g3_the_channel_fence_drops_the_copy_when_another_instance_wrote_the_channel(
    pools: list[asyncpg.Pool],
) -> None:
    """G3, channel fence: B writes a user of the channel that A's copy does not even hold
    (no revision of A's users moves, so no write of A's would be refused); A's next
    batch on the channel still drops its copy, because the channel's writer row names B's
    transaction, not A's last one."""
    _, pool, _ = pools
    a, b = ResidentUsers(10**6), ResidentUsers(10**6)
    await apply_batch(pool, TOPICS, [_boot(0, "v-a", 1_000)], now_ms=0, resident=a)
    await apply_batch(pool, TOPICS, [_boot(1, "v-a", 2_000)], now_ms=0, resident=a)
    assert a.drops == 0 and a.hits > 0  # the second batch was answered from memory
    await apply_batch(pool, TOPICS, [_boot(2, "v-b", 3_000)], now_ms=0, resident=b)
    await apply_batch(pool, TOPICS, [_boot(3, "v-a", 4_000)], now_ms=0, resident=a)
    assert a.drops == 1
    assert await pool.fetchval("SELECT count(*) FROM users WHERE channel_id = 'ch_fence'") == 2


async def test_g3_a_fresh_channel_is_answered_from_memory_until_another_instance_writes_it(
    pools: list[asyncpg.Pool],
) -> None:
    """G3, fresh channels (resident.py; issue 14, session 23): A's first batch on a
    channel with no fence row asks the store nothing for its new visitor. B then writes
    a user of the channel that A never saw; A's next batch on that user's veil must find
    it — the fence drops A's copy, and with it what A knew of the channel — and not
    create a second user for the veil."""
    _, pool, _ = pools
    a, b = ResidentUsers(10**6), ResidentUsers(10**6)
    await apply_batch(pool, TOPICS, [_boot(0, "v-a", 1_000)], now_ms=0, resident=a)
    assert "ch_fence" in a.fresh and a.misses == 0  # nothing asked of the store
    await apply_batch(pool, TOPICS, [_boot(1, "v-b", 2_000)], now_ms=0, resident=b)
    assert "ch_fence" not in b.fresh  # A's row was there: B asks the store
    await apply_batch(pool, TOPICS, [_boot(2, "v-b", 3_000)], now_ms=0, resident=a)
    assert a.drops == 1 and not a.fresh
    assert await pool.fetchval("SELECT count(*) FROM users WHERE channel_id = 'ch_fence'") == 2
    assert await pool.fetchval("SELECT count(*) FROM identities WHERE channel_id = 'ch_fence' AND value = 'v-b'") == 1
