"""The pipelined live projection (services/projection/pipeline.py) against PostgreSQL:
batch N+1 prepared in memory while N commits must end in exactly the state the serial
path (`apply_batch`, every batch loading its users) reaches — also when N's commit
fails after N+1 was applied in memory, and when another writer moved the store.

The records are those of test_resident.py (mixed SDK facts with merges, commands, bad
records, imports with an MU limit), fed in the same batches to both paths.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest_asyncio

from services.platform.config import Settings
from services.projection.batch import BatchResult, apply_batch, dead_letter_record
from services.projection.isolation import NOT_THE_RECORD, apply_isolating
from services.projection.pipeline import Pipeline
from services.projection.records import Record
from services.projection.resident import ResidentUsers
from services.replay.digest import state_digest
from services.store import repository as repo
from tests.integration.test_resident import TOPICS, _records
from tests.integration.test_resident_live import _chunks, _rows, channel_pools


@pytest_asyncio.fixture
async def pools(settings: Settings) -> AsyncIterator[list[asyncpg.Pool]]:
    async for made in channel_pools(settings, ("serial", "piped", "tiny")):
        yield made


def _pipeline(pool: asyncpg.Pool, resident: ResidentUsers) -> Pipeline:
    """A pipeline whose serial path is the consumer's: conflicts and outages retried,
    a record the store refuses isolated and dead-lettered (consumer.Projection.apply)."""

    async def attempt(batch: list[Record]) -> BatchResult:
        for _ in range(10):
            try:
                return await apply_batch(pool, TOPICS, batch, now_ms=0, outbox=False, resident=resident)
            except (repo.Conflict, *NOT_THE_RECORD):
                continue
        raise AssertionError("the serial path kept failing")

    async def dead_letter(record: Record, code: str, reason: str) -> BatchResult:
        return await dead_letter_record(pool, TOPICS, record, code, reason, now_ms=0, outbox=False)

    async def serial(records: list[Record]) -> BatchResult:
        serial.batches += 1  # type: ignore[attr-defined]
        return await apply_isolating(attempt, records, dead_letter, passthrough=())

    serial.batches = 0  # type: ignore[attr-defined]
    return Pipeline(pool, TOPICS, resident, serial, lambda _r, _res, _e: None, outbox=False)


async def _serial_reference(pool: asyncpg.Pool, chunks: list[list[Record]]) -> None:
    for chunk in chunks:
        await apply_batch(pool, TOPICS, chunk, now_ms=0, outbox=False)


async def test_pipelined_batches_reach_the_state_of_the_serial_path(pools: list[asyncpg.Pool]) -> None:
    """Flow 2, G3, U4, I17: batches prepared while the one before commits give the same
    users, identities, chats, merges and import log as the serial path loading every
    batch — with room for every user, and with room for 40 (evictions after every
    commit, never of a user an uncommitted batch changed)."""
    serial, roomy, tiny = pools
    chunks = _chunks(_records())
    await _serial_reference(serial, chunks)
    expected, rows = await state_digest(serial), await _rows(serial)
    for piped, budget in ((roomy, 10**6), (tiny, 40)):
        resident = ResidentUsers(budget)
        pipe = _pipeline(piped, resident)
        for chunk in chunks:
            await pipe.feed(chunk)
        await pipe.drain()
        assert pipe.redone == 0 and resident.drops == 0  # nothing failed: nothing was redone
        assert pipe.pipelined > len(chunks) // 2  # most batches were prepared ahead
        assert pipe.serial.batches > 0  # type: ignore[attr-defined]  # the imports went serially
        assert await state_digest(piped) == expected, f"budget {budget}"
        assert await _rows(piped) == rows


async def _fail_commit(pool: asyncpg.Pool, nth: int, how: str) -> None:
    """Make the `nth` statement writing users fail (a sequence counts them: not rolled
    back with the transaction, so the retry passes): `check` raises a check violation
    (a record the store refuses: isolation), `kill` terminates the backend (an outage)."""
    action = (
        "RAISE EXCEPTION 'injected fault' USING ERRCODE = 'check_violation'" if how == "check"
        else "PERFORM pg_terminate_backend(pg_backend_pid())"
    )
    await pool.execute(f"""
        CREATE SEQUENCE fault_count;
        CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF nextval('fault_count') = {nth} THEN {action}; END IF;
          RETURN NULL;
        END $$;
        CREATE TRIGGER fault AFTER INSERT OR UPDATE ON users FOR EACH STATEMENT EXECUTE FUNCTION fault();
    """)


async def _faulted_run(pools: list[asyncpg.Pool], how: str) -> None:
    serial, piped, _ = pools
    chunks = _chunks(_records())
    await _serial_reference(serial, chunks)
    await _fail_commit(piped, 5, how)
    resident = ResidentUsers(10**6)
    pipe = _pipeline(piped, resident)
    for i, chunk in enumerate(chunks):
        await pipe.feed(chunk)
        if i == 5:
            # The fifth write failed after the sixth batch was applied in memory: both
            # were applied again by the serial path, from what was committed.
            assert pipe.redone == 2 and resident.drops >= 1
    await pipe.drain()
    assert await piped.fetchval("SELECT last_value FROM fault_count") > 5  # the fault fired
    assert await state_digest(piped) == await state_digest(serial)
    assert await _rows(piped) == await _rows(serial)
    stored = await repo.stored_offsets(piped, [TOPICS.sdk_events, TOPICS.commands, TOPICS.import_rows])
    assert stored == await repo.stored_offsets(serial, [TOPICS.sdk_events, TOPICS.commands, TOPICS.import_rows])


async def test_a_commit_refused_after_the_next_batch_was_applied_in_memory_ends_in_the_serial_state(
    pools: list[asyncpg.Pool],
) -> None:
    """G3 / hostile input: batch N's transaction is refused (a check violation at its
    users' write) after N+1 was prepared on N's in-memory result. Everything in memory
    is dropped, N and N+1 go by the serial path (isolation applies N in halves), and
    the state is the serial one."""
    await _faulted_run(pools, "check")


async def test_a_connection_killed_at_commit_after_the_next_batch_was_applied_in_memory_ends_in_the_serial_state(
    pools: list[asyncpg.Pool],
) -> None:
    """Crash safety: batch N's backend dies during its transaction (as PostgreSQL
    restarting would kill it) while N+1 sits prepared in memory. N rolled back; the
    serial path applies N and N+1 again from the committed offsets: the serial state."""
    await _faulted_run(pools, "kill")


async def test_g3_another_writer_between_two_pipelined_batches_makes_the_next_one_redone_serially(
    pools: list[asyncpg.Pool],
) -> None:
    """G3, channel fence: another instance (serial, its own resident copy) writes a
    stretch of the same channels while this one has a batch in flight and the next one
    prepared. This one's next transaction finds the channels' tokens moved, drops what
    it holds and applies serially from the store: the state of a single serial writer."""
    serial, shared, _ = pools
    chunks = _chunks(_records())
    await _serial_reference(serial, chunks)
    a, b = ResidentUsers(10**6), ResidentUsers(10**6)
    pipe_a, pipe_b = _pipeline(shared, a), _pipeline(shared, b)
    third = len(chunks) // 3
    for i, chunk in enumerate(chunks):
        if third <= i < 2 * third:
            await pipe_a.drain()
            await pipe_b.feed(chunk)
        else:
            await pipe_b.drain()
            await pipe_a.feed(chunk)
    await pipe_a.drain()
    await pipe_b.drain()
    assert pipe_a.redone >= 1 and a.drops >= 1  # it saw B's writes and did not trust its copy
    assert await state_digest(shared) == await state_digest(serial)
    assert await _rows(shared) == await _rows(serial)


def _boot(offset: int, veil: str, at: int, event_id: str | None = None) -> Record:
    body = {"type": "boot", "eventId": event_id or f"pipe-{offset}", "channelId": "ch_pipe", "occurredAt": at,
            "veilId": veil, "platform": "web"}
    return Record(TOPICS.sdk_events, 0, offset, at, b"ch_pipe", orjson.dumps(body))


async def test_an_event_id_applied_by_the_batch_in_flight_is_skipped_by_the_next_one(pools: list[asyncpg.Pool]) -> None:
    """CONTRACT (eventId idempotency), window.py: batch N+1 is prepared before N's
    applied eventIds are in the store; the eventId window overlays what N applied, so a
    redelivery of N's fact in N+1 is skipped (not applied twice, not refused by the
    store's key) — as the serial path, which reads after N committed, skips it."""
    _, piped, _ = pools
    pipe = _pipeline(piped, ResidentUsers(10**6))
    await pipe.feed([_boot(0, "v-a", 1_000, "same")])
    await pipe.feed([_boot(1, "v-a", 2_000, "same"), _boot(2, "v-b", 2_500)])
    await pipe.drain()
    assert pipe.pipelined == 2 and pipe.redone == 0
    assert await piped.fetchval("SELECT count(*) FROM applied_events WHERE channel_id = 'ch_pipe'") == 2
    # The redelivery moved nothing: the user was last seen by the first delivery.
    assert await piped.fetchval("SELECT last_seen_at FROM users WHERE channel_id = 'ch_pipe' AND state::text LIKE '%v-a%'") == 1_000


async def test_g3_the_channel_fence_voids_a_pipelined_batch_when_another_instance_wrote_the_channel(
    pools: list[asyncpg.Pool],
) -> None:
    """G3, channel fence: B writes a user of the channel that A's copy does not even hold
    (no revision of A's users moves, so no write of A's would be refused). A's next
    pipelined batch, prepared on its copy, finds the channel's writer token moved in its
    transaction: it is redone serially from the store."""
    _, pool, _ = pools
    a, b = ResidentUsers(10**6), ResidentUsers(10**6)
    pipe_a = _pipeline(pool, a)
    await pipe_a.feed([_boot(0, "v-a", 1_000)])
    await pipe_a.feed([_boot(1, "v-a", 2_000)])
    await pipe_a.drain()
    assert pipe_a.redone == 0 and a.hits > 0
    await apply_batch(pool, TOPICS, [_boot(2, "v-b", 3_000)], now_ms=0, outbox=False, resident=b)
    await pipe_a.feed([_boot(3, "v-a", 4_000)])
    await pipe_a.drain()
    assert pipe_a.redone == 1 and a.drops >= 1
    assert await pool.fetchval("SELECT count(*) FROM users WHERE channel_id = 'ch_pipe'") == 2
