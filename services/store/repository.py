"""Set-based reads and writes of the state a batch needs (DESIGN: no per-message round
trip). Each function is one statement over arrays (UNNEST), run inside the batch's
transaction."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

import asyncpg
import orjson

from services.domain.channel import ChannelSettings
from services.domain.core import Activity
from services.domain.directory import Identity
from services.domain.grades import GradeChange
from services.domain.unification import MergeRecord
from services.domain.user import User
from services.store.pool import borrow

from . import rowcodec

# The users' rows are built in rows.py, compiled with the domain core; named here too.
from .rows import (
    STAGE_USERS,
    USER_COLUMNS,
    USER_TYPES,
    search_columns,
    stored_user,
    user_records,
    user_row,
)

__all__ = ["STAGE_USERS", "USER_COLUMNS", "USER_TYPES", "search_columns", "stored_user", "user_records", "user_row"]  # and its own


class Conflict(Exception):
    """Another instance changed what this batch read (G3): roll back and retry."""


Key = tuple[str, str, str]  # (channel_id, kind, value)


async def load_users(conn: asyncpg.Connection, ids: Sequence[str], keys: Sequence[Key]) -> list[tuple[int, User]]:
    """Users by id, and users owning any of the identity keys."""
    rows = await conn.fetch(
        """
        SELECT u.rev, u.state FROM users u WHERE u.id IN (
               SELECT unnest($1::text[])
               UNION
               SELECT i.user_id FROM identities i
                WHERE (i.channel_id, i.kind, i.value) IN (
                      SELECT * FROM unnest($2::text[], $3::text[], $4::text[])))
        """,
        list(ids),
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
    )
    return [(r["rev"], stored_user(r["state"])) for r in rows]


async def load_channels(conn: asyncpg.Connection, channel_ids: Iterable[str]) -> dict[str, ChannelSettings]:
    wanted = sorted(set(channel_ids))
    rows = await conn.fetch(
        """SELECT channel_id, member_hash_secret, mu_limit, imported_types || field_types AS field_types
             FROM channels WHERE channel_id = ANY($1::text[])""",
        wanted,
    )
    found = {r["channel_id"]: ChannelSettings(r["channel_id"], r["member_hash_secret"], r["mu_limit"], dict(r["field_types"])) for r in rows}
    return {ch: found.get(ch) or ChannelSettings(ch) for ch in wanted}


def applied_key(channel: str, event_id: str) -> str:
    """The SQL of `applied_events.k` (schema.sql: a stored generated column, the first
    of the primary key) for two text expressions: the channel's `hashtext` in the high
    half, the eventId's in the low half. A bigint key instead of the two texts makes a
    btree step one integer comparison instead of two collation-aware text comparisons,
    and the index entry ~20 bytes smaller; a channel's rows are one range of it (the
    sweep). Not unique by itself: a probe confirms the exact pair, which the key
    (k, channel_id, event_id) holds (issue 14, session 13). `hashtext` is PostgreSQL's
    own (the hash of hash indexes and hash partitions, stable across upgrades); it is
    only ever computed by the server that stores the key."""
    return f"((hashtext({channel})::bigint << 32) | (hashtext({event_id})::bigint & 4294967295))"


async def applied_window(
    conn: asyncpg.Connection, pairs: Sequence[tuple[str, str]], channel_ids: Iterable[str],
) -> tuple[list[tuple[str, str, int]], dict[str, int]]:
    """What the eventId window of a batch is read from (projection/window.py), in one
    statement (one round trip, issue 14 session 9): (channel, eventId, event time) of the
    pairs the table holds (expired ones too: the sweep is lazy, raise_clocks), and each
    channel's clock, its latest event time applied (a channel row carries no eventId:
    applied_events.event_id is never NULL). Each pair is one probe of the primary key
    (applied_key, then the exact pair); LATERAL … LIMIT 1 keeps it so (a join let the
    planner hash or sort the whole table when its statistics said it was small)."""
    wanted = sorted(set(channel_ids))
    if not pairs and not wanted:
        return [], {}
    rows = await conn.fetch(
        """SELECT p.c, a.event_id, a.at FROM unnest($1::text[], $2::text[]) AS p(c, e)
             CROSS JOIN LATERAL (SELECT a.event_id, a.at FROM applied_events a
                                  WHERE a.k = """ + applied_key("p.c", "p.e") + """
                                    AND a.channel_id = p.c AND a.event_id = p.e LIMIT 1) a
           UNION ALL
           SELECT channel_id, NULL, clock FROM applied_clocks WHERE channel_id = ANY($3::text[])""",
        [p[0] for p in pairs], [p[1] for p in pairs], wanted,
    )
    seen = [(r[0], r[1], r[2]) for r in rows if r[1] is not None]
    return seen, {r[0]: r[2] for r in rows if r[1] is None and r[2] is not None}


async def raise_clocks(conn: asyncpg.Connection, applied: Sequence[tuple[str, str, int]], window_ms: int) -> None:
    """After `save_applied`: raise the clocks of the channels of `applied` to their
    latest event time, and sweep each channel whose clock moved `window_ms`/2 past its
    last sweep: delete its rows out of the window (projection/window.py). In between,
    the expired rows stay, ignored by the rule (AppliedWindow.seen), so the table holds
    at most ~3/2 of each channel's window and a batch pays no forgetting (issue 14,
    session 12). The sweep reads all the channel's rows (there is no index on event
    time): its rows, once every half window of its event time. A channel's rows share
    their pages with other channels', so a sweep reads most of the table's pages: more
    often (a quarter, an eighth of a window) cost more than forgetting in every batch
    did (bench/window_store_cost.py, 100 channels).
    A channel's first clock is no sweep (xmax 0: inserted): its rows are this batch's."""
    if not applied:
        return
    latest: dict[str, int] = {}
    for c, _e, t in applied:
        if t > latest.get(c, t - 1):
            latest[c] = t
    due = await conn.fetch(
        """INSERT INTO applied_clocks AS k (channel_id, clock, swept)
           SELECT c, t, t FROM unnest($1::text[], $2::bigint[]) AS x(c, t)
           ON CONFLICT (channel_id) DO UPDATE SET clock = EXCLUDED.clock,
               swept = CASE WHEN EXCLUDED.clock >= k.swept + $3::bigint / 2 THEN EXCLUDED.clock ELSE k.swept END
            WHERE k.clock < EXCLUDED.clock
           RETURNING k.channel_id, k.clock, k.swept = k.clock AND xmax <> 0""",
        list(latest), list(latest.values()), window_ms,
    )
    # A statement of its own, only when a sweep is due: in the one above, as a CTE, its
    # generic plan scanned the whole table in every batch. A channel's rows are the range
    # of the key with its hashtext in the high half (applied_key).
    sweep = [r for r in due if r[2]]
    if sweep:
        await conn.execute(_SWEEP, [r[0] for r in sweep], [r[1] for r in sweep], window_ms)


_SWEEP = """DELETE FROM applied_events a USING unnest($1::text[], $2::bigint[]) AS k(c, clock)
             WHERE a.k BETWEEN hashtext(k.c)::bigint << 32 AND (hashtext(k.c)::bigint << 32) | 4294967295
               AND a.channel_id = k.c AND a.at < k.clock - $3::bigint"""


async def sweep_applied(conn: asyncpg.Connection | asyncpg.Pool, window_ms: int) -> int:
    """Delete every row out of its channel's window now (what the batches' sweeps do a
    channel at a time, raise_clocks): for an operator, and for tests that compare the
    remembered eventIds of two stores row for row. Returns how many were deleted."""
    done = await conn.execute(
        """DELETE FROM applied_events a USING applied_clocks k
            WHERE a.channel_id = k.channel_id AND a.at < k.clock - $1::bigint""",
        window_ms,
    )
    return int(done.split()[-1])


async def lock_offsets(conn: asyncpg.Connection, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """The inbox fence: lock each partition's stored offset for this transaction. A
    second instance holding the same partition waits here, then skips what we applied.

    One round trip once every partition has its row (every batch but a partition's
    first): the rows are locked as they are read. A partition without a row gets one
    first, then all are read again (a statement of its own: in READ COMMITTED a row that
    another instance inserted and committed while we waited on its conflict is seen
    only by a later statement)."""
    topics, parts = [p[0] for p in partitions], [p[1] for p in partitions]
    rows = await _lock_rows(conn, _LOCK_OFFSETS, _ADD_OFFSETS, len(set(partitions)), topics, parts)
    return {(r[0], r[1]): r[2] for r in rows}


async def _lock_rows(conn: asyncpg.Connection, lock: str, add: str, expected: int, *args: Any) -> list[asyncpg.Record]:
    """The rows `lock` reads FOR UPDATE; when fewer than `expected` exist, `add` inserts
    the missing ones first and they are read again (lock_offsets says why in two
    statements)."""
    rows = await conn.fetch(lock, *args)
    if len(rows) < expected:
        await conn.execute(add, *args)
        rows = await conn.fetch(lock, *args)
    return rows


_LOCK_OFFSETS = """SELECT o.topic, o.partition, o.next_offset FROM inbox_offsets o
             JOIN unnest($1::text[], $2::int[]) AS x(t, p) ON o.topic = x.t AND o.partition = x.p
            ORDER BY o.topic, o.partition
              FOR UPDATE OF o"""
_ADD_OFFSETS = """INSERT INTO inbox_offsets (topic, partition, next_offset)
               SELECT t, p, 0 FROM unnest($1::text[], $2::int[]) AS x(t, p)
               ON CONFLICT DO NOTHING"""


async def lock_channels(conn: asyncpg.Connection, channel_ids: Iterable[str]) -> dict[str, int]:
    """The channel fence (schema.sql, channel_writers): lock the channels' rows for this
    transaction, in channel order (no deadlock between instances); their tokens."""
    return (await lock_channels_held(conn, channel_ids))[0]


async def lock_channels_held(conn: asyncpg.Connection, channel_ids: Iterable[str]) -> tuple[dict[str, int], int | None]:
    """`lock_channels`, and this transaction's own token (None without channels): a row
    it found missing and inserted holds that token (projection/pipeline.py checks tokens
    read earlier). Read with the locked rows: no round trip of its own."""
    wanted = sorted(set(channel_ids))
    if not wanted:
        return {}, None
    # As lock_offsets: one round trip when every channel has its row (a channel's first
    # batch inserts it, then reads all again).
    rows = await _lock_rows(conn, _LOCK_CHANNELS, _ADD_CHANNELS, len(wanted), wanted)
    return {r[0]: r[1] for r in rows}, rows[0][2]


_LOCK_CHANNELS = """SELECT channel_id, token, pg_current_xact_id()::text::bigint FROM channel_writers
           WHERE channel_id = ANY($1::text[]) ORDER BY channel_id FOR UPDATE"""
_ADD_CHANNELS = """INSERT INTO channel_writers (channel_id, token)
               SELECT c, pg_current_xact_id()::text::bigint FROM unnest($1::text[]) AS c
               ON CONFLICT DO NOTHING"""


async def lock_batch(
    conn: asyncpg.Connection, partitions: Sequence[tuple[str, int]], channel_ids: Iterable[str],
) -> tuple[dict[tuple[str, int], int], dict[str, int], int | None]:
    """`lock_offsets` then `lock_channels_held`, in one round trip once every partition
    and channel has its row (every batch of a running projection but the first ones): the
    pipelined batch's first statement (projection/pipeline.py `_write`; issue 14, session
    15). The same rows are locked in the same order (the offsets, then the channels in
    channel order); the channels only when every partition's row was found, so that a
    partition's first batch goes the two functions' way (insert the missing rows, read all
    again) as before, and a channel's first batch `lock_channels_held`'s way."""
    pairs = sorted(set(partitions))
    wanted = sorted(set(channel_ids))
    rows = await conn.fetch(_LOCK_BATCH, [p[0] for p in pairs], [p[1] for p in pairs], wanted, len(pairs))
    offsets = {(r[1], r[2]): r[3] for r in rows if r[0]}
    if len(offsets) < len(pairs):  # nothing of the channels was locked
        return await lock_offsets(conn, partitions), *await lock_channels_held(conn, wanted)
    tokens = {r[1]: r[2] for r in rows if not r[0]}
    if len(tokens) < len(wanted):  # the rows found are locked: lock_channels_held adds the others
        return offsets, *await lock_channels_held(conn, wanted)
    own = next((r[3] for r in rows if not r[0]), None)
    return offsets, tokens, own


# `o` is read by `c` (so evaluated first): the channels are locked only when every
# partition's row was.
_LOCK_BATCH = """WITH o AS (
                 SELECT o.topic, o.partition, o.next_offset FROM inbox_offsets o
                   JOIN unnest($1::text[], $2::int[]) AS x(t, p) ON o.topic = x.t AND o.partition = x.p
                  ORDER BY o.topic, o.partition
                    FOR UPDATE OF o),
             c AS (
                 SELECT channel_id, token FROM channel_writers
                  WHERE channel_id = ANY($3::text[]) AND (SELECT count(*) FROM o) = $4::int
                  ORDER BY channel_id
                    FOR UPDATE)
           SELECT true, topic, partition::bigint, next_offset FROM o
           UNION ALL
           SELECT false, channel_id, token, pg_current_xact_id()::text::bigint FROM c"""


async def channel_tokens(conn: asyncpg.Connection, channel_ids: Iterable[str]) -> dict[str, int]:
    """The channels' writer tokens as committed now, without a lock (a channel without a
    row is absent): what a pipelined batch read its users under (projection/pipeline.py)."""
    wanted = sorted(set(channel_ids))
    if not wanted:
        return {}
    rows = await conn.fetch("SELECT channel_id, token FROM channel_writers WHERE channel_id = ANY($1::text[])", wanted)
    return {r[0]: r[1] for r in rows}


async def stored_offsets(conn: asyncpg.Connection | asyncpg.Pool, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    rows = await conn.fetch("SELECT topic, partition, next_offset FROM inbox_offsets WHERE topic = ANY($1::text[])", list(topics))
    return {(r[0], r[1]): r[2] for r in rows}


async def stored_clocks(conn: asyncpg.Connection | asyncpg.Pool, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    """Each partition's clock at its stored offset (projection/records.PartitionClocks)."""
    rows = await conn.fetch(
        "SELECT topic, partition, clock FROM inbox_offsets WHERE topic = ANY($1::text[]) AND clock IS NOT NULL", list(topics)
    )
    return {(r[0], r[1]): r[2] for r in rows}


async def stored_positions(
    conn: asyncpg.Connection | asyncpg.Pool, topics: Sequence[str],
) -> dict[tuple[str, int], tuple[int, int | None]]:
    """Each partition's stored offset with the clock at it, read together: a batch that
    commits between two reads would pair an offset with a later offset's clock."""
    rows = await conn.fetch(
        "SELECT topic, partition, next_offset, clock FROM inbox_offsets WHERE topic = ANY($1::text[])", list(topics)
    )
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


async def save_positions(
    conn: asyncpg.Connection, offsets: dict[tuple[str, int], int], clocks: dict[tuple[str, int], int],
    stamp: Iterable[str] = (),
) -> dict[str, int]:
    """A batch's last statement: the partitions' next offsets stored, their clocks
    advanced (never backwards; those of the same records), and the channels `stamp`
    marked as written by this transaction (the channel fence, schema.sql
    channel_writers: rows lock_channels locked); their new tokens. One round trip per
    batch where these were three (issue 14: at a paced rate a batch's round trips, not
    its rows, set how long it takes)."""
    keys = sorted(offsets.keys() | clocks.keys())
    channels = sorted(set(stamp))
    if not keys and not channels:
        return {}
    rows = await conn.fetch(
        """WITH moved AS (
             UPDATE inbox_offsets o
                SET next_offset = coalesce(x.n, o.next_offset), clock = GREATEST(o.clock, x.c)
               FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[]) AS x(t, p, n, c)
              WHERE o.topic = x.t AND o.partition = x.p)
           UPDATE channel_writers SET token = pg_current_xact_id()::text::bigint
            WHERE channel_id = ANY($5::text[]) RETURNING channel_id, token""",
        [k[0] for k in keys], [k[1] for k in keys], [offsets.get(k) for k in keys], [clocks.get(k) for k in keys],
        channels,
    )
    return {r[0]: r[1] for r in rows}


async def finish_batch(
    conn: asyncpg.Connection, applied: Sequence[tuple[str, str, int]], window_ms: int,
    messages: Sequence[tuple[str, str | None, bytes | None]], chats: Sequence[Activity],
    offsets: dict[tuple[str, int], int], clocks: dict[tuple[str, int], int], stamp: Iterable[str] = (),
) -> dict[str, int]:
    """A pipelined batch's last statements in one round trip (issue 14, session 15): what
    `raise_clocks(applied, window_ms)`, `save_outbox(messages)`, `lookups.enqueue_chats(chats)`
    and `save_positions(offsets, clocks, stamp)` write, in that order, as one statement
    of data-modifying CTEs (each runs once, to completion; they write four different
    tables, so their order within the statement does not matter). Returns the channels'
    new tokens as save_positions does. A due sweep of the eventId window follows as the
    statement of its own raise_clocks runs; messages that make more than one pack go by
    save_outbox first. A part without rows is left out of the statement: the outbox's
    statement trigger (outbox_notify) fires for an INSERT of no rows too."""
    latest: dict[str, int] = {}
    for c, _e, t in applied:
        if t > latest.get(c, t - 1):
            latest[c] = t
    packs = outbox_packs(messages) if messages else []
    if len(packs) > 1:
        await conn.executemany(_SAVE_PACK, packs)
        packs = []
    queued = [a for a in chats if a.kind == "chat" and isinstance(a.body.get("medium"), str)]
    keys = sorted(offsets.keys() | clocks.keys())
    channels = sorted(set(stamp))
    args: list[Any] = [
        [k[0] for k in keys], [k[1] for k in keys], [offsets.get(k) for k in keys], [clocks.get(k) for k in keys],
        channels,
    ]
    parts = []
    if latest:
        parts.append(_numbered(_FINISH_CLOCKS, len(args)))
        args += [list(latest), list(latest.values()), window_ms]
    if packs:
        parts.append(_numbered(_FINISH_PACK, len(args)))
        args += list(packs[0])
    if queued:
        parts.append(_numbered(_FINISH_CHATS, len(args)))
        args += [[a.channel_id for a in queued], [a.event_id for a in queued], [a.user_id for a in queued],
                 [a.body["medium"] for a in queued]]
    sql = "WITH " + ",\n".join([*parts, _FINISH_POSITIONS]) + "\nSELECT false, channel_id, token FROM stamped"
    if latest:
        sql += "\nUNION ALL SELECT true, channel_id, clock FROM clocks WHERE due"
    rows = await conn.fetch(sql, *args)
    sweep = [(r[1], r[2]) for r in rows if r[0]]
    if sweep:
        await conn.execute(_SWEEP, [r[0] for r in sweep], [r[1] for r in sweep], window_ms)
    return {r[1]: r[2] for r in rows if not r[0]}


def _numbered(part: str, before: int) -> str:
    """`part` with its parameters ${n}, ${n1}, … numbered after the `before` ones."""
    return part.format(n=before + 1, n1=before + 2, n2=before + 3, n3=before + 4)


_FINISH_POSITIONS = """moved AS (
             UPDATE inbox_offsets o
                SET next_offset = coalesce(x.n, o.next_offset), clock = GREATEST(o.clock, x.c)
               FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[]) AS x(t, p, n, c)
              WHERE o.topic = x.t AND o.partition = x.p),
           stamped AS (
             UPDATE channel_writers SET token = pg_current_xact_id()::text::bigint
              WHERE channel_id = ANY($5::text[]) RETURNING channel_id, token)"""
_FINISH_CLOCKS = """clocks AS (
             INSERT INTO applied_clocks AS k (channel_id, clock, swept)
             SELECT c, t, t FROM unnest(${n}::text[], ${n1}::bigint[]) AS x(c, t)
             ON CONFLICT (channel_id) DO UPDATE SET clock = EXCLUDED.clock,
                 swept = CASE WHEN EXCLUDED.clock >= k.swept + ${n2}::bigint / 2 THEN EXCLUDED.clock ELSE k.swept END
              WHERE k.clock < EXCLUDED.clock
             RETURNING k.channel_id, k.clock, k.swept = k.clock AND xmax <> 0 AS due)"""
_FINISH_PACK = """pack AS (
             INSERT INTO outbox (topic, n, keys, vals) VALUES (${n}, ${n1}, ${n2}, ${n3}))"""
_FINISH_CHATS = """chats AS (
             INSERT INTO lookup_queue (channel_id, event_id, name, user_id)
             SELECT c.channel_id, c.event_id, l.name, c.user_id
             FROM unnest(${n}::text[], ${n1}::text[], ${n2}::text[], ${n3}::text[]) AS c(channel_id, event_id, user_id, medium)
             JOIN lookups l ON l.channel_id = c.channel_id AND l.definition->'media' ? c.medium
             ON CONFLICT DO NOTHING)"""


async def adopt_log(conn: asyncpg.Connection | asyncpg.Pool, log_id: str) -> bool:
    """Note that the inbound log is `log_id`; if it is a different log than the stored
    offsets refer to (the embedded broker keeps its log in memory and starts empty),
    restart them at 0. Applied eventIds still guard against applying a fact twice."""
    async with borrow(conn) as c, c.transaction():
        old = await c.fetchval("SELECT value FROM meta WHERE key = 'log' FOR UPDATE")
        if old == log_id:
            return False
        await c.execute(
            "INSERT INTO meta (key, value) VALUES ('log', $1) ON CONFLICT (key) DO UPDATE SET value = $1", log_id
        )
        if old is None:
            return False
        await c.execute("UPDATE inbox_offsets SET next_offset = 0, clock = NULL")
        return True


# From this many new users (or new identity rows) in a batch, they go by binary COPY:
# an import batch creates hundreds to thousands. COPY skips the `unnest` of fourteen
# arrays (asyncpg checks every element it encodes: ~17 isinstance calls a user) and the
# speculative insertion of ON CONFLICT; a live batch's few new users are not worth its
# extra round trip for the column types (cached after the first).
COPY_NEW_FROM = 64


async def save_users(conn: asyncpg.Connection, users: Sequence[User], revs: dict[str, int]) -> None:
    """Write changed users, fenced on the revision they were loaded at (0 = new)."""
    if not users:
        return
    new, users = new_to_copy(users, revs)
    if new:
        await copy_new_users(conn, rowcodec.encode(user_records(new, revs), USER_TYPES))
        if not users:
            return
    await save_user_rows(conn, rowcodec.encode(user_records(users, revs), USER_TYPES), len(users))


def new_to_copy(users: Sequence[User], revs: dict[str, int]) -> tuple[list[User], list[User]]:
    """(the new users that go by COPY into `users`, the users that go by
    `save_user_rows`): the new ones (revision 0) are copied from COPY_NEW_FROM of them,
    else none are."""
    new = [u for u in users if not revs.get(u.id, 0)]
    if len(new) < COPY_NEW_FROM:
        return [], list(users)
    return new, [u for u in users if revs.get(u.id, 0)]


async def copy_rows(
    conn: asyncpg.Connection, table: str, columns: Sequence[str], payload: bytes, schema: str | None = None,
) -> None:
    """A binary COPY payload (`rowcodec.encode` of the rows) into `table`'s `columns`:
    the rows' bytes are sent as they are, instead of asyncpg encoding each value
    (`copy_records_to_table`; issue 14, session 17). Passed as a memoryview: asyncpg
    takes a `bytes` source for a file's path (os.fspath accepts bytes)."""
    await conn.copy_to_table(table, schema_name=schema, source=memoryview(payload), columns=list(columns), format="binary")


async def copy_new_users(conn: asyncpg.Connection, payload: bytes) -> None:
    """New users (`user_records` at revision 1, encoded as `USER_TYPES`) by binary COPY:
    `save_users` from COPY_NEW_FROM of them; a pipelined batch encodes them before it
    writes them."""
    # A new user's row must not exist (the fence: rev 0 → 1). COPY refuses a taken id as
    # the unique violation it is: another instance created that user.
    try:
        await copy_rows(conn, "users", USER_COLUMNS, payload)
    except asyncpg.UniqueViolationError as err:
        raise Conflict(f"a new user was created by another instance: {err.detail}") from err


async def save_user_rows(conn: asyncpg.Connection, payload: bytes, count: int) -> None:
    """Write `count` users (`user_records` at their next revision, encoded as
    `USER_TYPES`), fenced on their revision: the rows by binary COPY into the session's
    `users_staged` (STAGE_USERS), then one INSERT … SELECT … ON CONFLICT DO UPDATE from
    it. Instead of fourteen arrays of `unnest`, each element encoded by asyncpg (issue
    14, session 17). A user not at the revision before its row's (another instance wrote
    it), or a new one another created, is not written: Conflict.

    The commit empties `users_staged` (ON COMMIT DELETE ROWS), a rollback (to a
    savepoint too) its rows of the transaction; the statement only reads it (a DELETE …
    RETURNING cost PostgreSQL ~0.5–1.3 µs a user more, bench/user_update_cost.py). So
    it is called once a transaction (batch.write_effects, Pipeline._write): a second call
    would find the first's rows again, each already at its revision (not written again,
    not counted) or, for a user in both, the second row of one id (an error)."""
    if not count:
        return
    if not conn.is_in_transaction():  # the staged rows live until the commit: one transaction
        async with conn.transaction():
            await save_user_rows(conn, payload, count)
        return
    await copy_rows(conn, "users_staged", USER_COLUMNS, payload, schema="pg_temp")
    written = await conn.fetchval(_SAVE_STAGED)
    if written != count:
        raise Conflict(f"{count - written} of {count} users changed under this batch")


_SAVE_STAGED = """
        WITH w AS (
          INSERT INTO users AS u (id, channel_id, rev, type, member_id, merged_into, deleted,
                                  blocked, masked, last_seen_at, updated_at, state, name_key, tags)
          SELECT x.id, x.channel_id, x.rev, x.type, x.member_id, x.merged_into, x.deleted,
                 x.blocked, x.masked, x.last_seen_at, x.updated_at, x.state, x.name_key, x.tags
            FROM pg_temp.users_staged x
          ON CONFLICT (id) DO UPDATE SET
              rev = EXCLUDED.rev, type = EXCLUDED.type, member_id = EXCLUDED.member_id,
              merged_into = EXCLUDED.merged_into, deleted = EXCLUDED.deleted,
              blocked = EXCLUDED.blocked, masked = EXCLUDED.masked,
              last_seen_at = EXCLUDED.last_seen_at, updated_at = EXCLUDED.updated_at,
              state = EXCLUDED.state, name_key = EXCLUDED.name_key, tags = EXCLUDED.tags
          WHERE u.rev = EXCLUDED.rev - 1
          RETURNING 1)
        SELECT count(*) FROM w
        """


IDENTITY_COLUMNS = ("channel_id", "kind", "value", "user_id", "qualified")
IDENTITY_TYPES = "ttttb"


async def save_identities(
    conn: asyncpg.Connection, changes: Sequence[tuple[User, frozenset[Identity] | None, frozenset[Identity]]],
) -> None:
    """Write the identity rows of users whose identities changed, as deltas: `(user,
    identities when loaded (None: new user), identities now)`. The rows stored for a user
    are exactly `identities` of its stored state (every writer writes both in one
    transaction, and the state is fenced by `rev`: docs/decisions.md, "Issue 14, session
    21"), so the loaded set *is* what the table holds: the rows of `loaded - now` are
    deleted by their primary key, those of `now - loaded` inserted, and a user who only
    gained a veil writes one row and deletes none. No read by user id: `identities` has
    no index on `user_id`."""
    if not changes:
        return
    # By the primary key (channel, kind, value, user): a contact whose qualification
    # changed is deleted here and inserted again below with the new one.
    gone = [(u.channel_id, kind, value, u.id) for u, old, new in changes if old is not None for kind, value, _q in old - new]
    if gone:
        await conn.execute(
            """DELETE FROM identities i USING unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS g(c, k, v, u)
                WHERE i.channel_id = g.c AND i.kind = g.k AND i.value = g.v AND i.user_id = g.u""",
            *[list(col) for col in zip(*gone, strict=True)],
        )
    rows = [(u.channel_id, kind, value, u.id, q) for u, old, new in changes if old is not None for kind, value, q in new - old]
    # A new user's rows (no identities when loaded): none can be stored yet, as its users
    # row was not (save_users wrote it first, or refused it), so nothing for ON CONFLICT.
    fresh = [(u.channel_id, kind, value, u.id, q) for u, old, new in changes if old is None for kind, value, q in new]
    if len(fresh) >= COPY_NEW_FROM:
        try:
            await copy_rows(conn, "identities", IDENTITY_COLUMNS, rowcodec.encode(fresh, IDENTITY_TYPES))
        except asyncpg.UniqueViolationError as err:
            raise Conflict(f"identity taken by another instance: {err.detail}") from err
    else:
        rows.extend(fresh)
    if not rows:
        return
    try:
        await conn.execute(
            """INSERT INTO identities (channel_id, kind, value, user_id, qualified)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[])
               ON CONFLICT (channel_id, kind, value, user_id) DO NOTHING""",
            *[list(col) for col in zip(*rows, strict=True)],
        )
    except asyncpg.UniqueViolationError as err:
        raise Conflict(f"identity taken by another instance: {err.detail}") from err


async def save_applied(
    conn: asyncpg.Connection, applied: Sequence[tuple[str, str, int]], stored: Collection[tuple[str, str]] = (),
) -> None:
    """Remember applied eventIds with their event time, by binary COPY (half the server
    time of an INSERT … ON CONFLICT, issue 14). `stored`: the pairs the table held when
    the batch began; one of them applied again (forgotten by the window, not yet pruned)
    has its row renewed, as has a pair applied twice in the batch: the last time stays."""
    if not applied:
        return
    latest = {(c, e): t for c, e, t in applied}
    if len(latest) < len(applied) or stored:
        renewed = [k for k in latest if k in stored]
        if renewed:
            await conn.execute(
                """DELETE FROM applied_events a USING unnest($1::text[], $2::text[]) AS r(c, e)
                    WHERE a.k = """ + applied_key("r.c", "r.e") + """ AND a.channel_id = r.c AND a.event_id = r.e""",
                [k[0] for k in renewed], [k[1] for k in renewed],
            )
        applied = [(c, e, t) for (c, e), t in latest.items()]
    await copy_rows(conn, "applied_events", APPLIED_COLUMNS, rowcodec.encode(list(applied), APPLIED_TYPES))


APPLIED_COLUMNS = ("channel_id", "event_id", "at")
APPLIED_TYPES = "ttq"


_SAVE_PACK = "INSERT INTO outbox (topic, n, keys, vals) VALUES ($1, $2, $3, $4)"
PACK_BYTES = 1024 * 1024
"""A pack's values, at most (a larger batch is split; a message larger than this is a pack
alone). Measured (PostgreSQL's CPU a message, ~1 KB messages, lz4): packs of ~1 MB cost
the least to write; 2 MB ones ~50 % more, 5 MB ones twice as much (the server's
allocations past 1 MB)."""


async def save_outbox(conn: asyncpg.Connection, rows: Sequence[tuple[str, str | None, bytes | None]]) -> None:
    """The batch's messages (topic, key, value), in order, as packs: one outbox row per
    topic (schema.sql, `outbox`), one INSERT each (the ids come from the sequence in
    order). Its statement trigger (outbox_notify) wakes the relay at commit."""
    if rows:
        packs = outbox_packs(rows)
        if len(packs) == 1:
            await conn.execute(_SAVE_PACK, *packs[0])
        else:
            await conn.executemany(_SAVE_PACK, packs)


def outbox_packs(
    rows: Sequence[tuple[str, str | None, bytes | None]], limit: int = PACK_BYTES,
) -> list[tuple[str, int, list[str | None], list[bytes | None]]]:
    """The messages as packs (topic, n, keys, values): each topic's messages in their
    order, a new pack where the values would pass `limit` bytes. The relay publishes the
    packs in id order, so each key's messages keep their order."""
    values: list[Any] = [r[2] for r in rows]
    if len({r[0] for r in rows}) == 1 and None not in values and sum(map(len, values)) <= limit:  # a batch's usual case
        return [(rows[0][0], len(rows), [r[1] for r in rows], values)]
    packs: list[tuple[str, int, list[str | None], list[bytes | None]]] = []
    open_: dict[str, tuple[list[str | None], list[bytes | None], list[int]]] = {}
    for topic, key, value in rows:
        pack = open_.get(topic)
        size = len(value) if value is not None else 0
        if pack is not None and pack[2][0] + size > limit:
            packs.append((topic, len(pack[0]), pack[0], pack[1]))
            pack = None
        if pack is None:
            pack = open_[topic] = ([], [], [0])
        pack[0].append(key)
        pack[1].append(value)
        pack[2][0] += size
    packs.extend((topic, len(keys), keys, values) for topic, (keys, values, _) in open_.items())
    return packs


ACTIVITY_COLUMNS = ("channel_id", "event_id", "user_id", "kind", "occurred_at", "body")
ACTIVITY_TYPES = "ttttqJ"  # the body as jsonb: its JSON text after the version byte


async def save_activities(conn: asyncpg.Connection, acts: Sequence[Activity]) -> None:
    """Chats and behaviour events, each kept once by (channel, eventId): an eventId
    applied again after the window forgot it (projection/window.py) keeps its first
    activity. From COPY_NEW_FROM of them, by binary COPY inside a savepoint (a third
    less of PostgreSQL's time a row than the INSERT below, bench/activities_cost.py):
    a row already stored makes the COPY fail, the savepoint undoes it and the INSERT …
    ON CONFLICT DO NOTHING writes the batch's activities as before."""
    if not acts:
        return
    if len(acts) >= COPY_NEW_FROM:
        payload = rowcodec.encode([(a.channel_id, a.event_id, a.user_id, a.kind, a.at, orjson.dumps(a.body)) for a in acts],
                                  ACTIVITY_TYPES)
        try:
            async with conn.transaction():  # nested: a savepoint
                await copy_rows(conn, "activities", ACTIVITY_COLUMNS, payload)
            return
        except asyncpg.UniqueViolationError:
            pass
    rows = [(a.channel_id, a.event_id, a.user_id, a.kind, a.at, a.body) for a in acts]
    await conn.execute(
        """INSERT INTO activities (channel_id, event_id, user_id, kind, occurred_at, body)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[])
           ON CONFLICT DO NOTHING""",
        *[list(col) for col in zip(*rows, strict=True)],
    )


async def save_merges(conn: asyncpg.Connection, merges: Sequence[MergeRecord]) -> None:
    """Record merges (G4) and re-point the sources' chats and events to the target (U4)."""
    if not merges:
        return
    # One UPDATE matches each row once: with A merged into B and B into C in the same
    # batch, A's chats must go to C directly, as they would across two batches (U4).
    # The records and the re-pointing are one statement (two tables: one round trip).
    into = {m.source_id: m.target_id for m in merges}
    await conn.execute(
        """WITH recorded AS (
             INSERT INTO merges (channel_id, source_id, target_id, causation_id, occurred_at, contested)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[]))
           UPDATE activities a SET user_id = x.t FROM unnest($7::text[], $8::text[]) AS x(s, t)
            WHERE a.user_id = x.s""",
        [m.channel_id for m in merges], [m.source_id for m in merges], [m.target_id for m in merges],
        [m.causation_id for m in merges], [m.occurred_at for m in merges],
        [m.to_json()["contested"] for m in merges],
        list(into),
        [survivor(into, s) for s in into],
    )


def survivor(into: dict[str, str], user_id: str) -> str:
    """Where `user_id` ends up following the merges in `into` (source -> target)."""
    hops = 0
    while user_id in into and hops <= len(into):  # a merge chain never cycles; the bound says so
        user_id, hops = into[user_id], hops + 1
    return user_id


async def erase_personal_data(conn: asyncpg.Connection, user_ids: Sequence[str]) -> None:
    """B2: what stays of deleted users outside their own row. Their chat messages remain
    (seed 000: 会話のメッセージ内容だけが残ります) without the name they were written under;
    their behaviour events go; the merge records of merges into them (G4: the record
    survives) keep which side won each contested key, not the values, which were this
    person's e-mail, phone, name and the like. Runs after the batch's activities and
    merges are written, so what the same batch re-pointed to them is erased too."""
    if not user_ids:
        return
    ids = list(user_ids)
    await conn.execute("DELETE FROM activities WHERE user_id = ANY($1::text[]) AND kind = 'event'", ids)
    await conn.execute(
        "UPDATE activities SET body = body - 'authorName' WHERE user_id = ANY($1::text[]) AND body ? 'authorName'", ids
    )
    await conn.execute(
        """UPDATE merges m
              SET contested = (SELECT coalesce(jsonb_object_agg(c.key, jsonb_build_object('winner', c.value -> 'winner')), '{}')
                                 FROM jsonb_each(m.contested) AS c)
            WHERE m.target_id = ANY($1::text[]) OR m.source_id = ANY($1::text[])""",
        ids,
    )


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


# -- grades (D2) -----------------------------------------------------------------------


async def load_grades(conn: asyncpg.Connection, channel_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """The grade definitions (name → colour) of each channel."""
    wanted = sorted(set(channel_ids))
    found: dict[str, dict[str, str]] = {ch: {} for ch in wanted}
    if wanted:
        for r in await conn.fetch("SELECT channel_id, name, colour FROM grades WHERE channel_id = ANY($1::text[])", wanted):
            found[r[0]][r[1]] = r[2]
    return found


async def save_grade_changes(conn: asyncpg.Connection, changes: Sequence[GradeChange]) -> None:
    """Write grade changes in the order the facts made them (staff commands: few, so one
    statement each)."""
    for c in changes:
        if c.op == "define":
            await conn.execute(
                """INSERT INTO grades (channel_id, name, colour) VALUES ($1, $2, $3)
                   ON CONFLICT (channel_id, name) DO UPDATE SET colour = EXCLUDED.colour""",
                c.channel_id, c.name, c.colour,
            )
        elif c.op == "remove":
            await conn.execute("DELETE FROM grade_holders WHERE channel_id = $1 AND name = $2", c.channel_id, c.name)
            await conn.execute("DELETE FROM grades WHERE channel_id = $1 AND name = $2", c.channel_id, c.name)
        elif c.op == "assign":
            await conn.execute(
                """INSERT INTO grade_holders (channel_id, name, kind, value) VALUES ($1, $2, $3, $4)
                   ON CONFLICT DO NOTHING""",
                c.channel_id, c.name, c.kind, c.value,
            )
        else:
            await conn.execute(
                "DELETE FROM grade_holders WHERE channel_id = $1 AND name = $2 AND kind = $3 AND value = $4",
                c.channel_id, c.name, c.kind, c.value,
            )
