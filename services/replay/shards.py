"""Rebuild with several worker processes, each applying the channels of its shard.

Channels share nothing (T1: every row, id and identity key is per channel; a command
naming another channel's user is rejected whoever holds that user), so the state is
the same whatever process applies which channel, as long as each channel's facts are
applied in the canonical order. Every worker reads the whole log up to the same stop
offsets, merges it canonically, keeps the records whose `channelId` (parsed from the
value, never trusted from the key) falls in its shard, and applies them with
`apply_batch` — the canonical order restricted to a channel is that channel's order.

The one thing workers must not share is the inbox: `apply_batch` skips records below
a partition's stored offset, and every worker sees every partition. So each worker
gets a schema of its own holding only `inbox_offsets` and `outbox`, and a search path
`<shard>, <rebuilt>`: its offsets and its (discarded) outbox land in the shard schema,
everything else in the rebuilt schema. The shard schemas are dropped at the end and
the rebuilt inbox gets the stop offsets.

Bad JSON and values without a string `channelId` go to shard 0 (they become dead
letters, which a rebuild discards).
"""

from __future__ import annotations

import asyncio
import sys
import zlib
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass

import asyncpg
import orjson

from contracts.topics import Topics
from services.projection.records import Record
from services.store import pool as store_pool

from .log import LogReader, Partition
from .rebuild import Tally, apply_all, drop_schema


@dataclass(frozen=True, slots=True)
class _Job:
    index: int
    workers: int
    database_url: str
    bootstrap: str
    prefix: str
    schema: str
    shard: str
    stops: list[tuple[str, int, int]]
    batch: int


def shard_of(record: Record, workers: int) -> int:
    try:
        channel = orjson.loads(record.value or b"").get("channelId")
    except (orjson.JSONDecodeError, AttributeError):
        return 0
    if not isinstance(channel, str):
        return 0
    return zlib.crc32(channel.encode()) % workers


async def build_sharded(
    database_url: str, bootstrap: str, topics: Topics, schema: str, stops: dict[Partition, int], *,
    workers: int, batch: int, tally: Tally,
) -> None:
    shards = [f"{schema}_s{i}" for i in range(workers)]
    conn = await asyncpg.connect(database_url)
    try:
        for shard in shards:
            await conn.execute(f'CREATE SCHEMA "{shard}"')
            # UNLOGGED: scratch tables, gone with the shard schema.
            await conn.execute(f'CREATE UNLOGGED TABLE "{shard}".inbox_offsets (LIKE "{schema}".inbox_offsets INCLUDING ALL)')
            await conn.execute(f'CREATE UNLOGGED TABLE "{shard}".outbox (LIKE "{schema}".outbox INCLUDING ALL)')
    finally:
        await conn.close()
    # Plain child interpreters (`python -m services.replay.shards JOB`), not
    # multiprocessing: nothing of this process (event loop, sockets, __main__) is copied
    # or re-imported, whatever program called us.
    procs = []
    try:
        for i in range(workers):
            job = _Job(i, workers, database_url, bootstrap, topics.prefix, schema, shards[i],
                       [(t, p, n) for (t, p), n in sorted(stops.items())], batch)
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.replay.shards", orjson.dumps(asdict(job)).decode(),
                stdout=asyncio.subprocess.PIPE,
            ))
        outputs = await asyncio.gather(*(p.communicate() for p in procs))
        for i, (p, (out, _)) in enumerate(zip(procs, outputs, strict=True)):
            if p.returncode != 0:
                raise RuntimeError(f"replay worker {i} of {workers} exited with {p.returncode}")
            counts = orjson.loads(out.splitlines()[-1])
            tally.events += counts["events"]
            tally.applied += counts["applied"]
            tally.skipped += counts["skipped"]
            tally.dead_letters += counts["dead_letters"]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        for shard in shards:
            await drop_schema(database_url, shard)


async def _apply_shard(job: _Job) -> dict[str, int]:
    topics = Topics(job.prefix)
    pool = await asyncpg.create_pool(
        job.database_url, min_size=1, max_size=2, init=store_pool._init,
        server_settings={"search_path": f"{job.shard},{job.schema}", "application_name": "unifier-replay"},
    )
    # Worker 0 shows progress for all: the shards are about the same size.
    tally = Tally(out=sys.stderr if job.index == 0 else None, label=f"replay (shard 1 of {job.workers})")
    try:
        async with LogReader(job.bootstrap, topics.inbound, stop={(t, p): n for t, p, n in job.stops}) as reader:
            tally.total = reader.total // job.workers  # about this shard's share
            await apply_all(pool, topics, _mine(reader.merged(job.batch), job.index, job.workers, job.batch), tally)
    finally:
        await pool.close()
    return {"events": tally.events, "applied": tally.applied, "skipped": tally.skipped, "dead_letters": tally.dead_letters}


async def _mine(chunks: AsyncIterator[list[Record]], index: int, workers: int, batch: int) -> AsyncIterator[list[Record]]:
    out: list[Record] = []
    async for chunk in chunks:
        out.extend(r for r in chunk if shard_of(r, workers) == index)
        if len(out) >= batch:
            yield out
            out = []
    if out:
        yield out


if __name__ == "__main__":  # a worker: python -m services.replay.shards '<job as JSON>'
    _raw = orjson.loads(sys.argv[1])
    _raw["stops"] = [tuple(x) for x in _raw["stops"]]
    sys.stdout.write(orjson.dumps(asyncio.run(_apply_shard(_Job(**_raw)))).decode() + "\n")
