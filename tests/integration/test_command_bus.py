"""The API's CommandBus against a real PostgreSQL (docs/decisions.md, "HTTP API:
commands measured"): waiters are answered by the projection's NOTIFY at commit, a
rejection's reason is read from `command_outcomes`, and outcomes nobody announced are
still found by the once-a-second read. The projection's side is played here by the
very functions batch.py calls (services/store/outcomes.py), in a transaction."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from services.api.commands import CommandBus, Outcome
from services.store import outcomes
from tests.support.infra import wait_for

pytestmark = pytest.mark.integration
CH = "ch_bus"


async def _decide(pool: asyncpg.Pool, rows: list[outcomes.Outcome], announced: list[tuple[str, str, bool]]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await outcomes.save(conn, rows)
        await outcomes.forget_and_announce(conn, [r[0] for r in rows], announced)


async def _waiting(bus: CommandBus, event_id: str) -> asyncio.Task[Outcome]:
    """A request waiting on `event_id`, once the bus has registered it."""
    task = asyncio.create_task(bus.wait(CH, event_id, 10))
    await wait_for(lambda: bus.is_waiting(CH, event_id), timeout=5)
    return task


async def _listening_bus(pool: asyncpg.Pool) -> CommandBus:
    async def publish(value: bytes, key: bytes) -> None:
        pass  # nothing consumes here: the test decides the outcomes itself

    bus = CommandBus(pool, publish)
    await bus.submit(CH, {"type": "member.upsert", "memberId": "m0", "profile": {}}, actor="test")
    await wait_for(lambda: bus.listening, timeout=10)
    return bus


async def test_a_waiter_is_answered_by_the_notification_at_commit(pool: asyncpg.Pool) -> None:
    """Announced "applied" without a row: only the NOTIFY can have answered it (the
    once-a-second read would find nothing)."""
    bus = await _listening_bus(pool)
    try:
        waiting = await _waiting(bus, "e1")
        await _decide(pool, [], [(CH, "e1", True)])
        assert await waiting == Outcome("applied")
        # Announced before anyone waited for it (the request's wait came after the commit):
        await _decide(pool, [], [(CH, "e2", True)])
        later = await _waiting(bus, "e3")
        await _decide(pool, [], [(CH, "e3", True)])
        assert await later == Outcome("applied")  # so e2's notification, committed first, was heard too
        assert await bus.wait(CH, "e2", 1) == Outcome("applied")  # remembered: no row, no later NOTIFY
    finally:
        await bus.close()


async def test_a_rejection_is_announced_and_its_reason_read_from_the_table(pool: asyncpg.Pool) -> None:
    bus = await _listening_bus(pool)
    try:
        waiting = await _waiting(bus, "r1")
        await _decide(pool, [(CH, "r1", 1, "unknown_user", "no user u_x")], [(CH, "r1", False)])
        assert await waiting == Outcome("rejected", "unknown_user", "no user u_x")
        assert await bus.outcome(CH, "r1") == Outcome("rejected", "unknown_user", "no user u_x")
    finally:
        await bus.close()


async def test_an_outcome_nobody_announced_is_found_and_other_schemas_are_ignored(pool: asyncpg.Pool) -> None:
    """A projection that does not notify (an older version during an upgrade) delays
    the answer to the next once-a-second read; a notification for another schema of
    the same database (a test or bench beside us) answers nothing."""
    bus = await _listening_bus(pool)
    try:
        other = asyncio.create_task(bus.wait(CH, "x1", 2))
        await pool.execute("SELECT pg_notify($1, $2)", outcomes.CHANNEL, "another_schema\n" + outcomes.payloads([(CH, "x1", True)])[0])
        assert await other == Outcome("pending")

        waiting = await _waiting(bus, "q1")
        await _decide(pool, [(CH, "q1", 1, None, None)], [])  # stored, not announced
        assert await waiting == Outcome("applied")
    finally:
        await bus.close()


async def test_without_a_listen_connection_the_waiters_are_polled(pool: asyncpg.Pool, monkeypatch: Any) -> None:
    """The database refused LISTEN (or the connection died): answers still come, by
    reading the table every 10 ms."""
    async def no_listen(self: Any, *args: Any) -> None:
        raise asyncpg.PostgresError("LISTEN refused")

    monkeypatch.setattr(asyncpg.Connection, "add_listener", no_listen)

    async def publish(value: bytes, key: bytes) -> None:
        pass

    bus = CommandBus(pool, publish)
    try:
        waiting = await _waiting(bus, "p1")
        assert not bus.listening
        await _decide(pool, [(CH, "p1", 1, None, None)], [])
        assert await waiting == Outcome("applied")
    finally:
        await bus.close()


async def test_a_command_isolated_and_dead_lettered_answers_its_waiter_rejected(pool: asyncpg.Pool) -> None:
    """A command the store refuses is found by isolation and dead-lettered `unstorable`
    (issue 11): its waiter is told at that commit and its status reads the letter's code
    and reason, instead of `pending` until `?wait=` runs out. A record on another topic,
    or one without channel and eventId, gives no command status."""
    import orjson

    from contracts.topics import Topics
    from services.projection.batch import dead_letter_record
    from services.projection.records import Record

    topics = Topics("p")
    command = orjson.dumps({"type": "member.upsert", "channelId": CH, "eventId": "iso-1", "occurredAt": 5, "memberId": "m"})
    bus = await _listening_bus(pool)
    try:
        waiting = await _waiting(bus, "iso-1")
        await dead_letter_record(pool, topics, Record(topics.commands, 0, 0, 9, CH.encode(), command), "unstorable", "refused by PostgreSQL")
        assert await waiting == Outcome("rejected", "unstorable", "refused by PostgreSQL")
        assert await bus.outcome(CH, "iso-1") == Outcome("rejected", "unstorable", "refused by PostgreSQL")

        sdk = orjson.dumps({"type": "boot", "channelId": CH, "eventId": "iso-2", "occurredAt": 5})
        await dead_letter_record(pool, topics, Record(topics.sdk_events, 0, 0, 9, CH.encode(), sdk), "unstorable", "x")
        await dead_letter_record(pool, topics, Record(topics.commands, 0, 1, 9, None, b"[1]"), "unstorable", "x")
        assert await pool.fetchval("SELECT count(*) FROM command_outcomes") == 1
    finally:
        await bus.close()
