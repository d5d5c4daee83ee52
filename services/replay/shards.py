"""Rebuild with several worker processes, each applying the channels of its shard.

Channels share nothing (T1: every row, id and identity key is per channel; a command
naming another channel's user is rejected whoever holds that user), so the state is
the same whatever process applies which channel, as long as each channel's facts are
applied in the canonical order. Every worker reads the whole log up to the same stop
offsets, merges it canonically, keeps the records whose `channelId` (parsed from the
value, never trusted from the key) falls in its shard, and applies them with
the live projection's core — the canonical order restricted to a channel is that channel's order.

Each worker keeps the users of its channels in memory (`resident.py`) and writes them
to the rebuilt schema; no two workers write the same user, identity or eventId, and
none writes the inbox (the rebuilt inbox gets the stop offsets at the end).

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
from .rebuild import Tally, apply_all


@dataclass(frozen=True, slots=True)
class _Job:
    index: int
    workers: int
    database_url: str
    bootstrap: str
    prefix: str
    schema: str
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


async def spawn(workers: int) -> list[asyncio.subprocess.Process]:
    """Start the worker processes; each waits for its job on stdin. Started before the
    log's end is probed, so that their imports (~1 s) overlap the probe."""
    # Plain child interpreters (`python -m services.replay.shards`), not
    # multiprocessing: nothing of this process (event loop, sockets, __main__) is copied
    # or re-imported, whatever program called us.
    procs = []
    try:
        for _ in range(workers):
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.replay.shards", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            ))
    except BaseException:
        await reap(procs)
        raise
    return procs


async def reap(procs: list[asyncio.subprocess.Process]) -> None:
    """Kill the workers still running (the build failed or was cancelled)."""
    for p in procs:
        if p.returncode is None:
            p.kill()
            await p.wait()


async def build_sharded(
    procs: list[asyncio.subprocess.Process], database_url: str, bootstrap: str, topics: Topics, schema: str,
    stops: dict[Partition, int], *, batch: int, tally: Tally,
) -> None:
    """Hand each spawned worker its share and wait for all of them."""
    workers = len(procs)
    jobs = [
        _Job(i, workers, database_url, bootstrap, topics.prefix, schema, [(t, p, n) for (t, p), n in sorted(stops.items())], batch)
        for i in range(workers)
    ]
    outputs = await asyncio.gather(*(p.communicate(orjson.dumps(asdict(job)) + b"\n") for p, job in zip(procs, jobs, strict=True)))
    for i, (p, (out, _)) in enumerate(zip(procs, outputs, strict=True)):
        if p.returncode != 0:
            raise RuntimeError(f"replay worker {i} of {workers} exited with {p.returncode}")
        counts = orjson.loads(out.splitlines()[-1])
        tally.events += counts["events"]
        tally.applied += counts["applied"]
        tally.skipped += counts["skipped"]
        tally.dead_letters += counts["dead_letters"]


async def _apply_shard(job: _Job) -> dict[str, int]:
    topics = Topics(job.prefix)
    pool = await asyncpg.create_pool(
        job.database_url, min_size=1, max_size=2, init=store_pool._init,
        server_settings={"search_path": job.schema, "application_name": "unifier-replay"},
    )
    # Worker 0 shows progress for all: the shards are about the same size.
    tally = Tally(out=sys.stderr if job.index == 0 else None, label=f"replay (shard 1 of {job.workers})")
    try:
        async with LogReader(job.bootstrap, topics.inbound, stop={(t, p): n for t, p, n in job.stops}) as reader:
            tally.total = reader.total // job.workers  # about this shard's share
            await apply_all(pool, topics, _mine(reader.merged(job.batch), job.index, job.workers, job.batch), tally, resident=True)
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


if __name__ == "__main__":  # a worker: python -m services.replay.shards, its job as a JSON line on stdin
    _line = sys.stdin.readline()
    if not _line:
        sys.exit(1)  # the parent gave up before handing out the jobs
    from services.runtime import gc_tuning

    gc_tuning.tune()
    _raw = orjson.loads(_line)
    _raw["stops"] = [tuple(x) for x in _raw["stops"]]
    sys.stdout.write(orjson.dumps(asyncio.run(_apply_shard(_Job(**_raw)))).decode() + "\n")
