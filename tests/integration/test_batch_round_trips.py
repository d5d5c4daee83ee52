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
    async with _outbox_notifications(pool) as (listener, conn, heard):
        async with conn.transaction():
            await repo.save_outbox(conn, [("t.user-changed", "k", b"{}")])
            await listener.execute("SELECT 1")  # a round trip on the listener: it would have heard by now
            assert heard == []
        await wait_for(lambda: heard, message="a NOTIFY at the COPY's commit")
        heard.clear()
        async with conn.transaction():
            await conn.execute("INSERT INTO outbox (topic, key, value) VALUES ('t.user-changed', 'k', NULL)")
        await wait_for(lambda: heard, message="a NOTIFY at the INSERT's commit")


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


# -- issue 14, session 15: the pipelined batch's fences and last statements, merged -----------


async def test_a_pipelined_batch_locks_both_fences_in_one_statement_once_their_rows_exist(pool: asyncpg.Pool) -> None:
    """repo.lock_batch (Pipeline._write's first statement) answers what lock_offsets then
    lock_channels_held answer — offsets, tokens, this transaction's own token — in one
    statement once every row exists, and falls back to them (inserting the missing
    rows) for a partition's or a channel's first batch; the rows stay locked."""
    parts = [(TOPIC, 0), (TOPIC, 1)]
    async with transaction(pool) as c:  # nothing stored: both functions' way
        offsets, tokens, own = await repo.lock_batch(c, parts, ["ch_b", "ch_a"])
        assert c.statements > 1
        assert own == await c.fetchval("SELECT pg_current_xact_id()::text::bigint")
        assert offsets == {(TOPIC, 0): 0, (TOPIC, 1): 0} and tokens == {"ch_a": own, "ch_b": own}
        await repo.save_positions(c, {(TOPIC, 0): 7}, {}, ["ch_a"])
    async with transaction(pool) as c:  # every row stored: one statement, the same answers
        offsets2, tokens2, own2 = await repo.lock_batch(c, parts, ["ch_a", "ch_b"])
        assert c.statements == 1
        assert own2 == await c.fetchval("SELECT pg_current_xact_id()::text::bigint") and own2 != own
        assert offsets2 == await repo.lock_offsets(c, parts)
        assert (tokens2, own2) == await repo.lock_channels_held(c, ["ch_a", "ch_b"])
        assert tokens2 == {"ch_a": own, "ch_b": own}
        async with pool.acquire() as other:  # both fences held: another writer waits on each
            await other.execute("SET lock_timeout = '50ms'")
            for sql in ("SELECT 1 FROM inbox_offsets WHERE partition = 1 FOR UPDATE",
                        "SELECT 1 FROM channel_writers WHERE channel_id = 'ch_b' FOR UPDATE"):
                with pytest.raises(asyncpg.LockNotAvailableError):
                    async with other.transaction():
                        await other.execute(sql)
    async with transaction(pool) as c:  # a new channel: its row inserted, the others' tokens read
        offsets3, tokens3, own3 = await repo.lock_batch(c, parts, ["ch_a", "ch_c"])
        assert offsets3 == {(TOPIC, 0): 7, (TOPIC, 1): 0}
        assert own3 is not None and tokens3 == {"ch_a": own, "ch_c": own3}
    async with transaction(pool) as c:  # a new partition beside a stored one, no channel
        offsets4, tokens4, own4 = await repo.lock_batch(c, [(TOPIC, 0), (TOPIC, 5)], [])
        assert offsets4 == {(TOPIC, 0): 7, (TOPIC, 5): 0} and (tokens4, own4) == ({}, None)


async def _tables(c: Any) -> dict[str, list[tuple[Any, ...]]]:
    """What the batch's last statements write, comparable across two transactions
    (outbox ids relative to the first, a channel's token as whether it is ours)."""
    own = await c.fetchval("SELECT pg_current_xact_id()::text::bigint")
    first = await c.fetchval("SELECT min(id) FROM outbox") or 0
    return {
        "clocks": [tuple(r) for r in await c.fetch("SELECT * FROM applied_clocks ORDER BY 1")],
        "applied": [tuple(r) for r in await c.fetch("SELECT channel_id, event_id, at FROM applied_events ORDER BY 1, 2")],
        "outbox": [(r[0] - first, *r[1:]) for r in await c.fetch("SELECT id, topic, key, value, n, keys, vals FROM outbox ORDER BY id")],
        "queue": [tuple(r) for r in await c.fetch("SELECT channel_id, event_id, name, user_id FROM lookup_queue ORDER BY 1, 2, 3")],
        "offsets": [tuple(r) for r in await c.fetch("SELECT * FROM inbox_offsets ORDER BY 1, 2")],
        "tokens": [(r[0], r[1] == own) for r in await c.fetch("SELECT channel_id, token FROM channel_writers ORDER BY 1")],
    }


async def test_finish_batch_writes_what_the_four_statements_it_replaces_write(pool: asyncpg.Pool) -> None:
    """repo.finish_batch (Pipeline._write's last statement) leaves the tables exactly as
    raise_clocks, save_outbox, lookups.enqueue_chats and save_positions do on the same
    batch, each case rolled back and done again the other way: clocks raised and a
    sweep due (the channel's expired rows deleted), one pack or several topics' packs,
    chats queued only for a medium a definition links, nothing to write but offsets."""
    from services.domain.core import Activity
    from services.domain.lookups import LookupChange
    from services.store import lookups as lookup_store

    window = 1_000_000
    parts = [(TOPIC, 0), (TOPIC, 1)]
    async with transaction(pool) as c:  # the state both ways start from
        await repo.lock_batch(c, parts, ["ch_a", "ch_b"])
        old = [("ch_a", "e-old", 100), ("ch_a", "e-mid", 400_000), ("ch_b", "e-b", 500)]
        await repo.save_applied(c, old)
        await repo.raise_clocks(c, old, window)
        await lookup_store.save_changes(c, [LookupChange("ch_a", "define", "CRM", definition={"media": ["line"]})])
        await repo.save_positions(c, {(TOPIC, 0): 3, (TOPIC, 1): 4}, {(TOPIC, 0): 10}, ["ch_a", "ch_b"])

    def chat(event_id: str, medium: str | None, kind: str = "chat") -> Activity:
        body = {"text": "hi"} if medium is None else {"text": "hi", "medium": medium}
        return Activity("ch_a", "u-1", kind, event_id, 700_000, body)

    # ch_a's clock 400,000 (swept there) → 1,200,000: a sweep is due, e-old goes
    applied = [("ch_a", "e1", 600_000), ("ch_a", "e2", 1_200_000), ("ch_b", "e3", 600), ("ch_c", "e4", 5)]
    one_topic = [("t.user-changed", "k1", b'{"a":1}'), ("t.user-changed", None, None), ("t.user-changed", "k2", b"{}")]
    two_topics = [("t.user-changed", "k1", b"x"), ("t.dead-letter", "k2", b"y"), ("t.user-changed", "k1", b"z")]
    chats = [chat("e1", "line"), chat("e2", "mail"), chat("e5", None), chat("e6", "line", kind="event")]
    cases = [
        (applied, one_topic, chats, {(TOPIC, 0): 9}, {(TOPIC, 0): 20, (TOPIC, 1): 30}, ["ch_a"]),
        (applied[:1], two_topics, [], {(TOPIC, 0): 9, (TOPIC, 1): 8}, {(TOPIC, 0): 5}, ["ch_a", "ch_b"]),
        ([], [], [], {(TOPIC, 1): 6}, {}, []),
    ]
    for case in cases:
        seen: list[Any] = []
        for merged in (False, True):
            async with pool.acquire() as conn:
                tx = conn.transaction()
                await tx.start()
                c = Counted(conn)
                await repo.lock_batch(c, parts, ["ch_a", "ch_b"])
                c.statements = 0
                a, messages, acts, offsets, clocks, stamp = case
                await repo.save_applied(c, a)
                if merged:
                    stamped = await repo.finish_batch(c, a, window, messages, acts, offsets, clocks, stamp)
                else:
                    await repo.raise_clocks(c, a, window)
                    await repo.save_outbox(c, messages)
                    await lookup_store.enqueue_chats(c, acts)
                    stamped = await repo.save_positions(c, offsets, clocks, stamp)
                own = await conn.fetchval("SELECT pg_current_xact_id()::text::bigint")
                seen.append((stamped == dict.fromkeys(stamp, own), await _tables(conn), c.statements))
                await tx.rollback()
        (same_old, tables_old, _), (same_new, tables_new, statements) = seen
        assert same_old and same_new
        assert tables_new == tables_old
        if case is cases[0]:  # save_applied's COPY (not counted), then the statement and the sweep
            assert statements == 2
            assert [r[1] for r in tables_new["applied"] if r[0] == "ch_a"] == ["e-mid", "e1", "e2"]
            assert tables_new["queue"] == [("ch_a", "e1", "CRM", "u-1")]
            assert len(tables_new["outbox"]) == 1 and tables_new["outbox"][0][4] == 3
        else:  # (several packs go by executemany before it, not counted)
            assert statements == 1
        if case is cases[1]:
            assert [r[1] for r in tables_new["outbox"]] == ["t.user-changed", "t.dead-letter"]
        if case is cases[2]:
            assert tables_new["outbox"] == [] and tables_new["tokens"] == [("ch_a", False), ("ch_b", False)]


async def test_finish_batch_wakes_the_relay_only_when_it_fills_the_outbox(pool: asyncpg.Pool) -> None:
    """The outbox's statement trigger fires for an INSERT of no rows too: finish_batch
    leaves the outbox out of its statement when the batch has no message, so a batch
    without messages does not wake the relay; one with messages does, at its commit."""
    async with _outbox_notifications(pool) as (listener, conn, heard):
        for messages in ([], [("t.user-changed", "k", b"{}")]):
            async with conn.transaction():
                await repo.lock_batch(conn, [(TOPIC, 0)], [])
                await repo.finish_batch(conn, [("ch", "e", 1)], WINDOW_MS, messages, [], {(TOPIC, 0): 1}, {}, [])
            if messages:
                await wait_for(lambda: heard, message="a NOTIFY at the commit")
            else:
                # A marker of our own after the commit: one session's notifications arrive in
                # commit order, so once it is heard, a NOTIFY of the batch would have been too.
                await conn.execute("SELECT pg_notify('unifier_outbox', 'marker')")
                await wait_for(lambda: "marker" in heard, message="the marker NOTIFY after the commit")
                assert heard == ["marker"]
                heard.clear()


@asynccontextmanager
async def _outbox_notifications(
    pool: asyncpg.Pool,
) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection, list[str]]]:
    """A connection LISTENing on unifier_outbox, a writing connection, and the channels
    heard from that writer alone: a channel is database-wide, and other tests running
    alongside in other schemas fill their outboxes too."""
    heard: list[str] = []
    writer = 0  # the writing backend's pid, set below

    def hear(_conn: Any, pid: int, channel: str, payload: str) -> None:
        if pid == writer:
            heard.append(payload or channel)  # the trigger's NOTIFY has no payload

    async with pool.acquire() as listener:
        await listener.add_listener("unifier_outbox", hear)
        try:
            async with pool.acquire() as conn:
                writer = conn.get_server_pid()
                yield listener, conn, heard
        finally:
            await listener.remove_listener("unifier_outbox", hear)
