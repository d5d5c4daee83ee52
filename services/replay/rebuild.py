"""Rebuild every table from the retained inbound topics into a fresh schema (docs/design.md,
Flow 5), with the same `apply_batch` the live projection uses, in large batches.

`build` reads the whole log in the canonical order into a new schema; `catch_up`
applies what the live service applied meanwhile; `switch.py` swaps the schemas.
The rebuilt outbox is discarded: it holds a `user-changed` message for every change
in history and a dead letter for every bad record ever seen, all of which were
published when they happened (see `switch.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TextIO

import asyncpg

from contracts.topics import Topics
from services.platform.gc_tuning import paused as gc_paused
from services.projection.batch import apply_batch, dead_letter_record
from services.projection.isolation import NOT_THE_RECORD, apply_isolating
from services.projection.merge import by_weight
from services.projection.records import Record
from services.store import repository as repo
from services.store.pool import create_pool

from . import indexes
from .log import LogReader, Partition
from .procs import phase
from .resident import HELD, OverBudget, Resident

log = logging.getLogger("unifier.replay")

# The weight of a replay batch of import chunks (merge.by_weight): rows, about, as in the
# live service's batch (UNIFIER_BATCH_MAX's default); other records keep `--batch`.
REPLAY_WEIGHT = 10_000


@dataclass(slots=True)
class Tally:
    """What a rebuild did, and its progress line on stderr."""

    events: int = 0  # inbound records read and handed to apply_batch
    applied: int = 0
    skipped: int = 0
    dead_letters: int = 0
    total: int = 0  # offsets to read (an upper bound of the records)
    started: float = field(default_factory=time.monotonic)
    out: TextIO | None = sys.stderr
    label: str = "replay"
    every_s: float = 2.0
    _shown: float = field(default_factory=time.monotonic)

    def add(self, records: int, applied: int, skipped: int, dead: int) -> None:
        self.events += records
        self.applied += applied
        self.skipped += skipped
        self.dead_letters += dead
        now = time.monotonic()
        if self.out is not None and now - self._shown >= self.every_s:
            self._shown = now
            self.show(self.label)

    def show(self, what: str) -> None:
        if self.out is None:
            return
        elapsed = max(time.monotonic() - self.started, 1e-9)
        share = f" ({100 * self.events / self.total:.0f}%)" if self.total else ""
        print(
            f"{what}: {self.events:,}/{self.total:,} records{share}, {self.applied:,} applied, "
            f"{self.dead_letters:,} dead-lettered, {self.events / elapsed:,.0f} records/s",
            file=self.out,
            flush=True,
        )

    @property
    def rate(self) -> float:
        return self.events / max(time.monotonic() - self.started, 1e-9)


async def open_schema(database_url: str, schema: str) -> asyncpg.Pool:
    """A pool on a schema that must not exist yet (a rebuild never reuses leftovers)."""
    conn = await asyncpg.connect(database_url)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
            raise RuntimeError(f"schema {schema!r} already exists; drop it or wait a second")
    finally:
        await conn.close()
    # Connections are opened as needed: the build uses one or two, the indexes' restore
    # up to RESTORE_CONNECTIONS at the end.
    return await create_pool(database_url, schema, min_size=1, max_size=max(2, indexes.RESTORE_CONNECTIONS))


async def copy_channels(source: asyncpg.Connection | asyncpg.Pool, source_schema: str, target: asyncpg.Pool) -> int:
    """Channel settings are configuration, not facts: the log cannot rebuild them, so
    the rebuilt schema gets the live ones (committed, so that `apply_batch` on other
    connections of `target` sees them). The types imports declared (`imported_types`)
    are facts: the rebuild declares them as it replays the imports (P2: a type declared
    later must not reject earlier facts), so the target keeps its own."""
    rows = await source.fetch(
        f'SELECT channel_id, member_hash_secret, mu_limit, field_types::text FROM "{source_schema}".channels'
    )
    async with target.acquire() as c, c.transaction():
        await c.execute(
            "UPDATE channels SET member_hash_secret = NULL, mu_limit = NULL, field_types = '{}' WHERE channel_id <> ALL($1::text[])",
            [r[0] for r in rows],
        )
        await c.executemany(
            """INSERT INTO channels (channel_id, member_hash_secret, mu_limit, field_types) VALUES ($1, $2, $3, $4::text::jsonb)
               ON CONFLICT (channel_id) DO UPDATE SET member_hash_secret = EXCLUDED.member_hash_secret,
                   mu_limit = EXCLUDED.mu_limit, field_types = EXCLUDED.field_types""",
            [tuple(r) for r in rows],
        )
    return len(rows)


async def build(
    pool: asyncpg.Pool, bootstrap: str, topics: Topics, *, batch: int, quiet_s: float, tally: Tally,
    workers: int = 1, database_url: str | None = None, schema: str | None = None, memory_budget: int | None = None,
    started: list[asyncio.subprocess.Process] | None = None, stops: dict[Partition, int] | None = None,
    beside_restore: Callable[[], Awaitable[None]] | None = None,
) -> dict[Partition, int]:
    """Apply the whole retained log to the (fresh) schema of `pool`; the end offsets
    consumed per partition (every inbound partition, 0 for an empty one). With
    `workers` > 1 the channels are shared out among worker processes (`shards.py`).
    `memory_budget` (bytes, all workers together) bounds the users held in memory: past
    it the log is applied batch by batch instead (`resident.OverBudget`). `started`:
    the `workers` - 1 worker processes, spawned by the caller (`shards.spawn`) as early
    as it could; they are reaped here. `stops`: the log's end, already probed by the
    caller (`replay.check_log_holds`): the build reads up to it, without a probe of its own.
    The tables written once at the end get their secondary indexes after (`indexes.py`);
    `beside_restore()` runs while they are made, once the resident build succeeded
    (every row is written: a rebuild reads its digest then, replay._rebuild)."""
    deferred = await indexes.defer(pool)
    phase("build: indexes dropped")
    if workers > 1:
        from .shards import ShardOverlap, build_sharded, reap, spawn

        assert database_url is not None and schema is not None
        failed: Exception | None = None
        procs = started if started is not None else await spawn(workers)
        try:
            if stops is None:
                async with LogReader(bootstrap, topics.inbound, quiet_s=quiet_s) as reader:
                    tally.total = reader.total
                    stops = reader.stops
            else:
                tally.total = sum(stops.values())  # about: a log's first offsets are 0 unless retention moved them
            try:
                clocks = await build_sharded(
                    procs, database_url, bootstrap, topics, schema, stops, batch=batch, tally=tally,
                    memory_budget=memory_budget,
                )
            except OverBudget as err:
                HELD.clear()  # shard 0's users: the fallback needs the memory
                failed = err
            except ShardOverlap as overlap:
                HELD.clear()
                log.warning("replay: %s; rebuilding with every worker reading the whole log", overlap)
                await reap(procs)
                await _empty(pool)
                tally.events = tally.applied = tally.skipped = tally.dead_letters = 0
                procs = await spawn(workers)
                try:
                    clocks = await build_sharded(
                        procs, database_url, bootstrap, topics, schema, stops, batch=batch, tally=tally, by="channel",
                        memory_budget=memory_budget,
                    )
                except RuntimeError as err:  # a worker failed again
                    HELD.clear()
                    failed = err
        finally:
            await reap(procs)
    else:
        async with LogReader(bootstrap, topics.inbound, quiet_s=quiet_s, stop=stops) as reader:
            tally.total = reader.total
            try:
                await apply_all(pool, topics, reader.merged(batch), tally, keeper=Resident(pool, topics, memory_budget=memory_budget))
                failed = None
            except NOT_THE_RECORD:
                raise
            except Exception as err:  # the store refused what the core accepted, or OverBudget
                failed = err.with_traceback(None)  # its frames hold the users: let them go
            # Failed part-way (OverBudget), the batch-by-batch build reads to the log's end.
            stops = reader.next_offsets if failed is None else reader.stops
            clocks = reader.next_clocks
    phase("build: shards done")
    # Before anything reads the schema through them, the fallback included.
    if failed is None and beside_restore is not None:
        # Both run to their end before a failure is raised: nothing still reads or
        # writes the schema when the caller drops it.
        done = await asyncio.gather(indexes.restore(pool, deferred), beside_restore(), return_exceptions=True)
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
    else:
        await indexes.restore(pool, deferred)
    if failed is not None:
        clocks = await _batch_by_batch(pool, bootstrap, topics, stops, batch=batch, tally=tally, failed=failed)
    phase("build: indexes restored")
    await stamp_channels(pool)
    await store_offsets(pool, stops, clocks)
    return stops


async def _batch_by_batch(
    pool: asyncpg.Pool, bootstrap: str, topics: Topics, stops: dict[Partition, int], *, batch: int, tally: Tally,
    failed: Exception,
) -> dict[Partition, int]:
    """Users resident are written in bulk, where a record the store refuses cannot be
    told apart; batch by batch, as live, it is found and dead-lettered (isolation.py).
    An outage fails this run too."""
    log.warning("replay: the resident build failed (%s: %s); rebuilding batch by batch in one process",
                type(failed).__name__, str(failed)[:200])
    gc.unfreeze()
    await _empty(pool)
    tally.events = tally.applied = tally.skipped = tally.dead_letters = 0
    async with LogReader(bootstrap, topics.inbound, stop=stops) as reader:
        tally.total = reader.total
        await apply_all(pool, topics, reader.merged(batch), tally)
        return reader.next_clocks


async def _empty(pool: asyncpg.Pool) -> None:
    """Empty what a build wrote into its fresh schema; the channel settings stay, the
    types its imports declared go (they are declared again)."""
    tables = await pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'channels' ORDER BY 1"
    )
    if tables:
        await pool.execute("TRUNCATE " + ", ".join(f'"{t[0]}"' for t in tables))
    await pool.execute("UPDATE channels SET imported_types = '{}' WHERE imported_types <> '{}'")


async def catch_up(
    pool: asyncpg.Pool, bootstrap: str, topics: Topics, start: dict[Partition, int],
    stop: dict[Partition, int], *, batch: int, tally: Tally,
) -> dict[Partition, int]:
    """Apply the records between `start` and `stop` (both per partition); new offsets."""
    wanted = {p: max(stop.get(p, 0), start.get(p, 0)) for p in start.keys() | stop.keys()}
    if all(wanted[p] <= start.get(p, 0) for p in wanted):
        return dict(start)
    tally.total += sum(wanted[p] - start.get(p, 0) for p in wanted)
    clocks = await repo.stored_clocks(pool, topics.inbound)  # bound timestamps from there on as live does
    async with LogReader(bootstrap, topics.inbound, start=start, stop=wanted, clocks=clocks) as reader:
        await apply_all(pool, topics, reader.merged(batch), tally)
        ends = {**start, **reader.next_offsets}
        clocks = {**clocks, **reader.next_clocks}
    await store_offsets(pool, ends, clocks)
    return ends


async def apply_all(
    pool: asyncpg.Pool, topics: Topics, chunks: AsyncIterator[list[Record]], tally: Tally, *,
    keeper: Resident | None = None,
) -> None:
    """Apply chunks in order, reading and merging the next chunk while PostgreSQL
    writes the current one: by `keeper` into a fresh schema nobody else writes, with the
    users kept in memory (`resident.py`); without, batch by batch as the live service."""
    queue: asyncio.Queue[list[Record] | BaseException | None] = asyncio.Queue(maxsize=2)

    async def read() -> None:
        try:
            async for chunk in chunks:
                # Import chunks weigh by their size (merge.py, ROW_BYTES): a batch of them
                # holds about as many rows as the live service's, not up to a million.
                for part in by_weight(chunk, topics.import_rows, REPLAY_WEIGHT):
                    await queue.put(part)
            await queue.put(None)
        except Exception as err:  # handed to the applying side, which raises it
            await queue.put(err)

    reader = asyncio.create_task(read(), name="replay-reader")
    # A resident build keeps what it builds (users) or frees it by reference counting
    # (records, parsed facts, effects): the cyclic collector found ~50 garbage objects
    # in 80 young collections over 100,000 facts and cost ~4 µs of CPU per fact, 8 % of
    # the build (docs/decisions.md, "Replay: reading the log for less"). So it is paused
    # until the users are written, as the live projection pauses it per batch (the
    # batch-by-batch fallback gets that from apply_batch); memory stays bounded by the
    # budget (OverBudget).
    try:
        with gc_paused() if keeper is not None else contextlib.nullcontext():
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                if keeper is not None:
                    result = await keeper.apply(item)
                else:  # as live: a record the store refuses is found and dead-lettered (isolation.py)
                    result = await apply_isolating(
                        lambda rs: apply_batch(pool, topics, rs, now_ms=0, outbox=False),  # outbox discarded (switch.py)
                        item,
                        lambda r, code, reason: dead_letter_record(pool, topics, r, code, reason, now_ms=0, outbox=False),
                        passthrough=NOT_THE_RECORD,
                    )
                tally.add(len(item), result.applied, result.skipped, sum(result.dead_letters.values()))
            if keeper is not None:
                phase(f"shard: log applied ({tally.events} records)")
                await keeper.finish()
                phase("shard: written")
            await reader
    finally:
        if not reader.done():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        if keeper is not None:
            await keeper.abandon()  # failed: its write of pending effects ends first


async def stamp_channels(pool: asyncpg.Pool) -> None:
    """A `channel_writers` row for every channel the build holds users of (token 0: no
    instance's transaction), as every live write leaves one: a channel without a row has
    no users (schema.sql), which instances rely on (projection/resident.py, fresh
    channels). The catch-up's batches lock, so insert, their channels' rows themselves."""
    await pool.execute(
        """INSERT INTO channel_writers (channel_id, token)
           SELECT DISTINCT channel_id, 0 FROM users ON CONFLICT DO NOTHING"""
    )


async def store_offsets(pool: asyncpg.Pool, offsets: dict[Partition, int], clocks: dict[Partition, int] | None = None) -> None:
    """Record every partition's end consumed, also those without a record (an empty
    partition, a trailing gap), and its clock there, so the live service continues
    exactly from here (records.PartitionClocks)."""
    if not offsets:
        return
    keys = sorted(offsets)
    clocks = clocks or {}
    await pool.execute(
        """INSERT INTO inbox_offsets AS o (topic, partition, next_offset, clock)
           SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[])
           ON CONFLICT (topic, partition) DO UPDATE
             SET next_offset = GREATEST(o.next_offset, EXCLUDED.next_offset),
                 clock = GREATEST(o.clock, EXCLUDED.clock)""",
        [k[0] for k in keys], [k[1] for k in keys], [offsets[k] for k in keys], [clocks.get(k) for k in keys],
    )


async def stored_offsets(conn: asyncpg.Connection | asyncpg.Pool, schema: str) -> dict[Partition, int]:
    rows = await conn.fetch(f'SELECT topic, partition, next_offset FROM "{schema}".inbox_offsets')
    return {(r[0], r[1]): r[2] for r in rows}


async def drop_schema(database_url: str, schema: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
