"""`unifier replay`: rebuild the state from the retained topics and switch to it, or
show what a rebuild would change (`--dry-run`) without changing anything.

Rebuild, step by step (docs/design.md, Flow 5):
1. Refuse when the log holds less than the live state applied: a broker that lost its
   storage (tansu keeps its log in memory) would otherwise "rebuild" an empty state.
2. Build: a fresh schema beside the live one, the live channel settings copied into
   it, the whole log applied in the canonical order with `apply_batch`.
3. Catch up, unlocked, while the live service moved on (a few rounds, each shorter).
4. Switch (`switch.py`): catch up the last records under the lock, keep the live
   outbox's pending rows, rename. The running service keeps serving throughout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from contracts.topics import Topics
from services.domain.user import User
from services.domain.view import user_view
from services.store.pool import ensure_schema

from .digest import schema_digest, state_digest
from .log import LogReader, LogShort, Partition
from .procs import phase, reap, spawn
from .rebuild import Tally, build, catch_up, copy_channels, drop_schema, open_schema, stored_offsets
from .resident import HELD
from .switch import switch

log = logging.getLogger("unifier.replay")

_UNLOCKED_ROUNDS = 5
_SMALL_GAP = 2_000  # records: below this, the last catch-up runs under the lock


@dataclass(frozen=True, slots=True)
class Options:
    batch: int = 10_000
    workers: int = 1
    quiet_s: float = 1.0
    lock_timeout_s: float = 60.0
    drop_archive: bool = False
    memory_budget: int | None = None  # bytes for the users held while building (resident.OverBudget)


@dataclass(frozen=True, slots=True)
class Rebuilt:
    events: int
    digest: str
    archive: str
    offsets: dict[Partition, int]
    tally: Tally


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S")


def side_schema(live: str, kind: str) -> str:
    """`<live>_<kind><UTC stamp>`, within PostgreSQL's 63-byte names."""
    return f"{live[:40]}_{kind}{_stamp()}"


async def free_side_schema(conn: asyncpg.Connection, live: str, kind: str) -> str:
    """`side_schema`, with `_2`, `_3` … appended while the name is taken: two rebuilds
    within one second (a short log) would otherwise archive under the same name."""
    base = name = side_schema(live, kind)
    n = 1
    while await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", name):
        n += 1
        name = f"{base}_{n}"
    return name


async def check_log_holds(
    bootstrap: str, topics: Topics, live_offsets: dict[Partition, int], quiet_s: float,
) -> dict[Partition, int] | None:
    """Raise LogShort when a partition's end is below what the live state applied; the
    log's end probed (every partition's stop offset), which the build then reads up to
    instead of probing it again (~0.1–0.2 s before the build can start, issue 14
    session 14). None when nothing was applied live (nothing probed)."""
    if not any(live_offsets.values()):
        return None
    async with LogReader(bootstrap, topics.inbound, quiet_s=quiet_s) as reader:
        ends = reader.stops
    short = {p: (n, ends.get(p, 0)) for p, n in live_offsets.items() if n > ends.get(p, 0)}
    if short:
        shown = ", ".join(f"{t}[{p}] applied {n} but the log ends at {e}" for (t, p), (n, e) in sorted(short.items())[:5])
        raise LogShort(f"the log holds less than the live state applied ({shown}); refusing to replace it")
    return ends


async def _abandon(opening: asyncio.Future[asyncpg.Pool], database_url: str, schema: str) -> None:
    """Drop the new schema of a rebuild that stopped before it began."""
    try:
        pool = await opening
    except Exception:  # its own failure: whatever it made is dropped below
        pass
    else:
        await pool.close()
    await drop_schema(database_url, schema)


async def rebuild(
    database_url: str, bootstrap: str, topics: Topics, live: str, options: Options, tally: Tally,
    started: list[asyncio.subprocess.Process] | None = None,
) -> Rebuilt:
    # The workers first: their interpreters start (~0.35 s of imports each) while this
    # one checks the log and makes the new schema (~0.5 s), instead of after. `started`:
    # the `options.workers` - 1 workers, spawned by the caller earlier still (`cli`);
    # reaped here whatever happens.
    procs = started if started is not None else await spawn(options.workers) if options.workers > 1 else None
    try:
        return await _rebuild(database_url, bootstrap, topics, live, options, tally, procs)
    finally:
        if procs is not None:
            await reap(procs)


async def _rebuild(
    database_url: str, bootstrap: str, topics: Topics, live: str, options: Options, tally: Tally,
    procs: list[asyncio.subprocess.Process] | None,
) -> Rebuilt:
    await ensure_schema(database_url, live)
    phase("rebuild: live schema ensured")
    admin = await asyncpg.connect(database_url)
    try:
        live_offsets = await stored_offsets(admin, live)
        new, archive = await free_side_schema(admin, live, "r"), await free_side_schema(admin, live, "a")
    finally:
        await admin.close()
    phase("rebuild: names chosen")
    # The log's check (a consumer's metadata round trips) and the new schema's DDL
    # (~0.2–0.4 s) overlap; a log too short for the live state drops the schema again.
    opening = asyncio.ensure_future(open_schema(database_url, new))
    try:
        ends = await check_log_holds(bootstrap, topics, live_offsets, options.quiet_s)
    except BaseException:
        await _abandon(opening, database_url, new)
        raise
    phase("rebuild: log checked")
    pool = await opening
    phase("rebuild: schema opened")
    switched = False
    # The built schema's digest, read while its indexes are made (0.4–0.7 s of the
    # command's hashing and the server's reading, beside the index builds: on two cores
    # both are CPU and it measured neutral, with cores to spare they overlap): it is the
    # digest of the state switched to when nothing is caught up after the build, as
    # nothing else writes the schema before the switch (issue 14, session 15). When
    # something is, the switch reads the digest again, on its snapshot.
    early: list[str] = []

    async def built_digest() -> None:
        early.append(await schema_digest(database_url, new))
        phase("rebuild: built state's digest taken")

    try:
        await copy_channels(pool, live, pool)
        phase("rebuild: channels copied")
        built = offsets = await build(
            pool, bootstrap, topics, batch=options.batch, quiet_s=options.quiet_s, tally=tally,
            workers=options.workers, database_url=database_url, schema=new, memory_budget=options.memory_budget,
            started=procs, stops=ends, beside_restore=built_digest,
        )
        tally.show("replay: log read")
        phase("rebuild: built")
        await pool.execute("TRUNCATE outbox")  # history, never re-sent (switch.py)
        for _ in range(_UNLOCKED_ROUNDS):
            live_offsets = await stored_offsets(pool, live)
            gap = sum(max(n - offsets.get(p, 0), 0) for p, n in live_offsets.items())
            if gap <= _SMALL_GAP:
                break
            offsets = await catch_up(pool, bootstrap, topics, offsets, live_offsets, batch=options.batch, tally=tally)

        phase("rebuild: caught up unlocked")

        async def final(conn: asyncpg.Connection, live_offsets: dict[Partition, int]) -> None:
            nonlocal offsets
            phase("switch: locked")
            await copy_channels(conn, live, pool)  # under the lock: no change can slip in
            offsets = await catch_up(pool, bootstrap, topics, offsets, live_offsets, batch=options.batch, tally=tally)
            await pool.close()
            phase("switch: caught up")

        # The archive is dropped while the digest reads the switched state, when it is
        # read there (both PostgreSQL work on their own connections: ~0.2 s of wall
        # time less); after the switch otherwise.
        then = (lambda: drop_schema(database_url, archive)) if options.drop_archive else None
        def known() -> str | None:  # after the last catch-up, under the switch's lock
            return early[0] if early and offsets == built else None

        digest = await switch(database_url, live, new, archive, final, lock_timeout_s=options.lock_timeout_s, then=then,
                              known=known)
        switched = True
        phase("switch: digest taken")
    finally:
        if not switched:
            await pool.close()
            await drop_schema(database_url, new)
    caught_up = sum(offsets.values()) - sum(built.values())
    if tally.out is not None:
        print(f"replay: caught up {caught_up:,} records the live service applied during the rebuild", file=tally.out)
    return Rebuilt(tally.events, digest, archive, offsets, tally)


# -- dry run -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    user_id: str
    channel_id: str
    change: str  # "added" | "removed" | "changed"
    keys: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"userId": self.user_id, "channelId": self.channel_id, "change": self.change, "keys": self.keys}


async def dry_run(
    database_url: str, bootstrap: str, topics: Topics, live: str, options: Options, tally: Tally,
    since: int | None,
) -> tuple[str, str, AsyncIterator[Change]]:
    """Rebuild into a scratch schema; (live digest, rebuilt digest, the changes). The
    caller must exhaust or close the iterator: its end drops the scratch schema."""
    await ensure_schema(database_url, live)
    admin = await asyncpg.connect(database_url)
    try:
        scratch = await free_side_schema(admin, live, "d")
    finally:
        await admin.close()
    pool = await open_schema(database_url, scratch)
    try:
        await copy_channels(pool, live, pool)
        await build(
            pool, bootstrap, topics, batch=options.batch, quiet_s=options.quiet_s, tally=tally,
            workers=options.workers, database_url=database_url, schema=scratch, memory_budget=options.memory_budget,
        )
        HELD.clear()  # a dry run reads the users back from both schemas: shard 0's are not needed
        rebuilt_digest = await state_digest(pool)
    except BaseException:
        await pool.close()
        await drop_schema(database_url, scratch)
        raise
    await pool.close()
    live_conn = await asyncpg.connect(database_url, server_settings={"search_path": live})
    try:
        live_digest = await state_digest(live_conn)
    finally:
        await live_conn.close()
    return live_digest, rebuilt_digest, _changes(database_url, live, scratch, since)


async def _changes(database_url: str, live: str, scratch: str, since: int | None) -> AsyncIterator[Change]:
    a = await asyncpg.connect(database_url)
    b = await asyncpg.connect(database_url)
    try:
        async with a.transaction(isolation="repeatable_read", readonly=True), b.transaction(readonly=True):
            left = _users(a, live)
            right = _users(b, scratch)
            old, new = await anext(left, None), await anext(right, None)
            while old is not None or new is not None:
                if new is None or (old is not None and old.id < new.id):
                    change, old = _diff(old, None, since), await anext(left, None)
                elif old is None or new.id < old.id:
                    change, new = _diff(None, new, since), await anext(right, None)
                else:
                    change = _diff(old, new, since)
                    old, new = await anext(left, None), await anext(right, None)
                if change is not None:
                    yield change
    finally:
        await a.close()
        await b.close()
        await drop_schema(database_url, scratch)


async def _users(conn: asyncpg.Connection, schema: str) -> AsyncIterator[User]:
    # json as text: these plain connections have no codec. C collation = Python's order.
    async for row in conn.cursor(f'SELECT state::text FROM "{schema}".users ORDER BY id COLLATE "C"', prefetch=2000):
        yield User.from_json(orjson.loads(row[0]))


def comparable(user: User) -> dict[str, Any]:
    """The user as consumers see it, one level flat (`profile.email`, `web.os`), plus
    whether it is merged or deleted."""
    out: dict[str, Any] = {}
    for key, val in user_view(user).items():
        if key in ("profile", "web", "mobile") and isinstance(val, dict):
            for sub, subval in val.items():
                out[f"{key}.{sub}"] = subval
        else:
            out[key] = val
    out["mergedInto"] = user.merged_into
    out["deleted"] = user.deleted
    return out


def _touched_since(user: User | None, since: int | None) -> bool:
    if since is None:
        return True
    if user is None:
        return False
    return max(user.updated_at, user.last_seen_at or 0, user.created_at) >= since


def _diff(old: User | None, new: User | None, since: int | None) -> Change | None:
    if not (_touched_since(old, since) or _touched_since(new, since)):
        return None
    some = new if new is not None else old
    assert some is not None
    before = comparable(old) if old is not None else {}
    after = comparable(new) if new is not None else {}
    keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if not keys:
        return None
    change = "added" if old is None else "removed" if new is None else "changed"
    return Change(some.id, some.channel_id, change, keys)


def parse_time(raw: str) -> int:
    """Epoch milliseconds, or an ISO-8601 time (UTC unless it says otherwise)."""
    raw = raw.strip()
    if raw.isdigit():
        return int(raw)
    try:
        at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected epoch milliseconds or an ISO-8601 time, got {raw!r}") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp() * 1000)
