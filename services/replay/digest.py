"""The digest of the canonical state: the same facts give the same digest.

Canonical form: every user's full state (provenance included) in id order, then every
merge record in (channel, source) order, then the grades (D2) and their holders in key
order, then the lookup definitions and recorded answers (seed 004 §2), each as sorted-key JSON, one per line.

A user's state is stored in that form since issue 14 session 12 (`User.state_json` sorts
its keys), so it is hashed as stored; a state stored before is decoded and dumped again,
as every state was until then (tests/oracle/digest.py keeps that computation, and
tests/integration/test_digest.py holds the two equal). The value is unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import asyncpg
import orjson
from asyncpg.transaction import Transaction

from services.domain.user import STATE_START
from services.store.pool import borrow

_OPTS = orjson.OPT_SORT_KEYS
_CANONICAL = STATE_START.encode()


async def state_digest(conn: asyncpg.Connection | asyncpg.Pool) -> str:
    async with borrow(conn) as c, c.transaction(isolation="repeatable_read", readonly=True):
        return await digest_in_transaction(c)


async def schema_digest(database_url: str, schema: str) -> str:
    """The digest of `schema` as one snapshot sees it, the users hashed on one connection
    while a second, on the same snapshot (`share`), reads the other tables, as the
    switch does. A rebuild takes it of its built schema while the indexes are made, and
    prints it when nothing was caught up after (replay._rebuild)."""
    c = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        other = await asyncpg.connect(database_url, server_settings={"search_path": schema})
        try:
            async with c.transaction(isolation="repeatable_read", readonly=True):
                beside = await share(other, await c.fetchval("SELECT pg_export_snapshot()"))
                digest = await digest_in_transaction(c, other if beside is not None else None)
                if beside is not None:
                    await beside.commit()
                return digest
        finally:
            await other.close()
    finally:
        await c.close()


async def share(other: asyncpg.Connection, shared: str) -> Transaction | None:
    """A transaction on `other` seeing the exported snapshot `shared`, for the digest's
    second reader; None where the server refuses to import it (the digest then reads
    everything on the snapshot's own connection, as before)."""
    beside = other.transaction(isolation="repeatable_read", readonly=True)
    await beside.start()
    try:
        await other.execute(f"SET TRANSACTION SNAPSHOT '{shared}'")
    except asyncpg.PostgresError:
        await beside.rollback()
        return None
    return beside


async def digest_in_transaction(c: asyncpg.Connection, other: asyncpg.Connection | None = None) -> str:
    """The digest as seen by the transaction already open on `c` (its snapshot): a
    replay takes the snapshot just before it switches schemas, then digests. `other`:
    a second connection in a transaction on the same snapshot (`pg_export_snapshot`,
    `SET TRANSACTION SNAPSHOT`), which reads everything after the users meanwhile
    (merges, grades, lookups: ~0.2 s of the ~0.5 s a rebuild of 200,000 events waited
    for its digest, issue 14 session 14); the bytes hashed, and so the digest, are the
    same."""
    h = hashlib.sha256()
    if other is None:
        await _hash_users(c, h)
        h.update(await _after_users(c))
    else:
        rest = asyncio.ensure_future(_after_users(other))
        try:
            await _hash_users(c, h)
        except BaseException:
            rest.cancel()
            await asyncio.gather(rest, return_exceptions=True)
            raise
        h.update(await rest)
    return h.hexdigest()


async def _after_users(c: asyncpg.Connection) -> bytes:
    """What the digest hashes after the users' lines: the merges, grades and their
    holders, lookups and their answers, as one byte string."""
    out = [b"--merges--\n"]
    async for row in c.cursor(
        "SELECT channel_id, source_id, target_id, causation_id, occurred_at, contested FROM merges ORDER BY channel_id, source_id",
        prefetch=2000,
    ):
        merge = dict(row)
        merge["contested"] = _json(merge["contested"])
        out.append(orjson.dumps(merge, option=_OPTS) + b"\n")
    out.append(b"--grades--\n")
    for row in await c.fetch("SELECT channel_id, name, colour FROM grades ORDER BY channel_id, name"):
        out.append(orjson.dumps(list(row)) + b"\n")
    out.append(b"--grade-holders--\n")
    async for row in c.cursor("SELECT channel_id, name, kind, value FROM grade_holders ORDER BY 1, 2, 3, 4", prefetch=10_000):
        out.append(orjson.dumps(list(row)) + b"\n")
    out.append(b"--lookups--\n")  # definitions and recorded answers (seed 004 §2)
    for row in await c.fetch("SELECT channel_id, name, definition FROM lookups ORDER BY channel_id, name"):
        out.append(orjson.dumps([row[0], row[1], _json(row[2])], option=_OPTS) + b"\n")
    async for row in c.cursor(
        "SELECT channel_id, event_id, user_id, name, occurred_at, record FROM lookup_results ORDER BY 1, 2", prefetch=2000,
    ):
        out.append(orjson.dumps([*list(row)[:5], _json(row[5])], option=_OPTS) + b"\n")
    return b"".join(out)


async def _hash_users(c: asyncpg.Connection, h: Any) -> None:
    """Every user's state, canonical, one per line, in id order. A state written by
    `User.state_json` is canonical as stored (sorted keys, orjson's spelling), so it is
    hashed as it is, a fetch at a time; one stored before that (its keys in field
    order: it does not begin with `STATE_START`) is decoded and dumped again with
    sorted keys (`canonical_state`). The decode and dump were most of the digest's
    Python: 1.0 s of CPU for the whole digest of 71,426 users against 0.4 s now (issue
    14 session 12, measured on a loaded machine)."""
    # As bytes (the text's UTF-8, `convert_to`): the same on every connection (the pool's
    # decode json, plain ones do not), and hashed without a decode and an encode in
    # Python (~0.1 s of 0.3 for 71,000 users). Large fetches: a round trip per 2,000 rows
    # showed in the time. By the primary key, not sorted: a rebuilt table has
    # no statistics yet, and the planner sorted every state (~64 MB for 71,000 users,
    # spilled to disk) where walking the key reads a heap the rebuild wrote in id order
    # (resident.finish): 645 → ~190 ms of PostgreSQL's time. For this statement only.
    await c.execute("SET LOCAL enable_sort = off")
    cursor = await c.cursor("SELECT convert_to(state::text, 'UTF8') FROM users ORDER BY id")
    while rows := await cursor.fetch(10_000):
        states: list[bytes] = [row[0] for row in rows]
        if all(state.startswith(_CANONICAL) for state in states):
            h.update(b"\n".join(states))
            h.update(b"\n")
        else:
            for state in states:
                h.update((state if state.startswith(_CANONICAL) else canonical_state(state)) + b"\n")
    await c.execute("SET LOCAL enable_sort TO DEFAULT")


def canonical_state(stored: str | bytes) -> bytes:
    """A stored state in the digest's canonical form: its JSON dumped by orjson with
    sorted keys (the form `User.state_json` writes since session 12)."""
    return orjson.dumps(orjson.loads(stored), option=_OPTS)


def _json(value: Any) -> Any:
    """json(b) arrives decoded on the pool's connections and as text on plain ones: the
    digest must not depend on which connection computed it."""
    return orjson.loads(value) if isinstance(value, str) else value
