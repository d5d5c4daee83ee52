"""Issue 14, session 9 (docs/decisions.md, "Issue 14, session 9: latency"): at a paced
rate a batch's round trips to PostgreSQL, not its rows, set how long it takes, so the
fences and the batch's last writes take one statement each, and the relay is woken by
the statement that fills the outbox. Real PostgreSQL; statements counted on the
connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from services.projection.window import WINDOW_MS
from services.store import repository as repo
from tests.support.infra import wait_for

pytestmark = pytest.mark.integration

TOPIC = "t.sdk-events"


class Counted:
    """A connection whose statements are counted (execute, fetch, fetchval)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.statements = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.conn, name)
        if name in ("execute", "fetch", "fetchval", "fetchrow"):
            async def counted(*a: Any, **kw: Any) -> Any:
                self.statements += 1
                return await attr(*a, **kw)
            return counted
        return attr


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[Counted]:
    async with pool.acquire() as conn, conn.transaction():
        yield Counted(conn)


async def test_offsets_are_locked_in_one_statement_once_their_rows_exist(pool: asyncpg.Pool) -> None:
    """The inbox fence (lock_offsets): a partition's first batch inserts its row (then
    reads every row again); every later batch locks and reads in one statement, and a
    second transaction still waits on the lock (the fence holds)."""
    parts = [(TOPIC, 0), (TOPIC, 1)]
    async with transaction(pool) as c:
        assert await repo.lock_offsets(c, parts) == {(TOPIC, 0): 0, (TOPIC, 1): 0}
        assert c.statements == 3
        await repo.save_positions(c, {(TOPIC, 0): 7}, {})
    async with pool.acquire() as other:
        other_pid = await other.fetchval("SELECT pg_backend_pid()")
        async with transaction(pool) as c:
            assert await repo.lock_offsets(c, parts) == {(TOPIC, 0): 7, (TOPIC, 1): 0}
            assert c.statements == 1
            # Held: another transaction's lock on partition 0 waits until this one ends.
            waiting = asyncio.ensure_future(_lock_in_own_transaction(other, [(TOPIC, 0)]))
            await wait_for(lambda: _waits_on_a_lock(pool, other_pid), message="the other transaction waits on the fence")
            assert not waiting.done()
            await repo.save_positions(c, {(TOPIC, 0): 9}, {})
        assert await asyncio.wait_for(waiting, 10) == {(TOPIC, 0): 9}  # it read what we committed


async def _waits_on_a_lock(pool: asyncpg.Pool, pid: int) -> bool:
    return bool(await pool.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid))


async def _lock_in_own_transaction(conn: asyncpg.Connection, parts: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    async with conn.transaction():
        return await repo.lock_offsets(conn, parts)


async def test_a_partition_without_a_row_next_to_stored_ones_gets_one(pool: asyncpg.Pool) -> None:
    """The fast path does not hide a missing row: partition 2's first batch, beside
    partitions already stored, inserts it and reads all three."""
    async with transaction(pool) as c:
        await repo.lock_offsets(c, [(TOPIC, 0)])
        await repo.save_positions(c, {(TOPIC, 0): 4}, {})
    async with transaction(pool) as c:
        got = await repo.lock_offsets(c, [(TOPIC, 0), (TOPIC, 2)])
        assert got == {(TOPIC, 0): 4, (TOPIC, 2): 0}
        assert c.statements == 3


async def test_channels_are_locked_in_one_statement_once_their_rows_exist(pool: asyncpg.Pool) -> None:
    """The channel fence (lock_channels_held): a channel's first batch inserts its row
    with this transaction's token; later batches lock in one statement and read the
    token the last writer left, and their own."""
    async with transaction(pool) as c:
        tokens, own = await repo.lock_channels_held(c, ["ch_a", "ch_b"])
        assert c.statements == 3
        assert own is not None and tokens == {"ch_a": own, "ch_b": own}  # ours: we inserted them
        stamped = await repo.save_positions(c, {}, {}, ["ch_a"])
        assert stamped == {"ch_a": own}
    async with transaction(pool) as c:
        tokens2, own2 = await repo.lock_channels_held(c, ["ch_b", "ch_a"])
        assert c.statements == 1
        assert own2 is not None and own2 != own
        assert tokens2 == {"ch_a": own, "ch_b": own}


async def test_the_last_statement_stores_offsets_clocks_and_stamps(pool: asyncpg.Pool) -> None:
    """save_positions: next offsets stored, clocks advanced and never moved back, a
    partition with a clock but no new offset keeps its offset, and only the channels
    asked for are stamped (with this transaction's token), in one statement."""
    p0, p1 = (TOPIC, 0), (TOPIC, 1)
    async with transaction(pool) as c:
        await repo.lock_offsets(c, [p0, p1])
        tokens, own = await repo.lock_channels_held(c, ["ch_a", "ch_b"])
        await repo.save_positions(c, {p0: 10, p1: 5}, {p0: 1_000, p1: 2_000})
    async with transaction(pool) as c:
        await repo.lock_offsets(c, [p0, p1])
        await repo.lock_channels_held(c, ["ch_a", "ch_b"])
        c.statements = 0
        stamped = await repo.save_positions(c, {p0: 12}, {p0: 900, p1: 2_500}, ["ch_b"])
        assert c.statements == 1
        own2 = await c.fetchval("SELECT pg_current_xact_id()::text::bigint")
    assert stamped == {"ch_b": own2}
    stored = await repo.stored_positions(pool, [TOPIC])
    assert stored == {p0: (12, 1_000), p1: (5, 2_500)}  # p0's clock not moved back; p1's offset kept
    assert await repo.channel_tokens(pool, ["ch_a", "ch_b"]) == {"ch_a": own, "ch_b": own2}


async def test_the_outbox_wakes_the_relay_at_commit_whoever_fills_it(pool: asyncpg.Pool) -> None:
    """The relay LISTENs on unifier_outbox; the outbox's statement trigger notifies at
    the commit of any statement that fills it (save_outbox's COPY, or any INSERT), so
    the writer spends no round trip on it, and nothing is announced before the commit.
    Only this writer's notifications count: a channel is database-wide, and other tests
    running alongside in other schemas fill their outboxes too."""
    heard: list[str] = []
    writer = 0  # the writing backend's pid, set below

    def hear(_conn: Any, pid: int, channel: str, _payload: str) -> None:
        if pid == writer:
            heard.append(channel)

    async with pool.acquire() as listener:
        await listener.add_listener("unifier_outbox", hear)
        async with pool.acquire() as conn:
            writer = conn.get_server_pid()
            async with conn.transaction():
                await repo.save_outbox(conn, [("t.user-changed", "k", b"{}")])
                await listener.execute("SELECT 1")  # a round trip on the listener: it would have heard by now
                assert heard == []
            await wait_for(lambda: heard, message="a NOTIFY at the COPY's commit")
            heard.clear()
            async with conn.transaction():
                await conn.execute("INSERT INTO outbox (topic, key, value) VALUES ('t.user-changed', 'k', NULL)")
            await wait_for(lambda: heard, message="a NOTIFY at the INSERT's commit")
        await listener.remove_listener("unifier_outbox", hear)


async def test_the_window_is_read_in_one_statement(pool: asyncpg.Pool) -> None:
    """applied_window: the remembered (channel, eventId) pairs asked for, and every
    channel's clock (its latest event time, remembered pair asked for or not; none for a
    channel with nothing applied), read by one statement (projection/window.py)."""
    async with transaction(pool) as c:
        applied = [("ch_a", "e1", 100), ("ch_a", "e2", 300), ("ch_b", "e9", 50)]
        await repo.save_applied(c, applied)
        await repo.raise_clocks(c, applied, WINDOW_MS)  # the clocks, as write_rest raises them
    async with transaction(pool) as c:
        seen, clocks = await repo.applied_window(c, [("ch_a", "e1"), ("ch_a", "e7"), ("ch_b", "e9")], ["ch_a", "ch_b", "ch_c"])
        assert c.statements == 1
    assert sorted(seen) == [("ch_a", "e1", 100), ("ch_b", "e9", 50)]
    assert clocks == {"ch_a": 300, "ch_b": 50}
