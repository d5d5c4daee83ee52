"""Rebuild with several worker processes, each applying the channels of its shard
(shard 0 in the process that started the others, which would otherwise only wait).

Channels share nothing (T1: every row, id and identity key is per channel; a command
naming another channel's user is rejected whoever holds that user), so the state is
the same whatever process applies which channel, as long as each channel's facts are
applied in the canonical order — the canonical order restricted to a channel is that
channel's order.

How the channels are shared out (`by`):
- `partition` (first choice): each worker reads some partition numbers of every
  inbound topic, shared out by their records (`share_partitions`). Producers key by
  `channelId` and the inbound topics are co-partitioned (docs/operations.md), so a
  channel's facts normally sit on one partition number and each worker reads only its
  share of the log. But after
  partitions were added, or from a producer keying by something else, a channel's
  history can span partitions read by two workers: every worker reports the channels
  it read, and if one shows up twice the build fails with `ShardOverlap` and is redone
  by `channel`.
- `channel`: every worker reads the whole log and keeps the records whose
  `channelId` (parsed from the value, never trusted from the key) falls in its shard.
  Bad JSON and values without a string `channelId` go to shard 0 (they become dead
  letters, which a rebuild discards).

Each worker keeps the users of its channels in memory (`resident.py`) and writes them
to the rebuilt schema; no two workers write the same user, identity or eventId, and
none writes the inbox (the rebuilt inbox gets the stop offsets at the end).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import zlib
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg
import orjson

from contracts.topics import Topics
from services.platform.kafka import client_options
from services.projection.records import Record
from services.store import pool as store_pool

from .log import LIST_BYTES, LogReader, Partition
from .procs import reap, spawn  # noqa: F401  (also imported from here)
from .rebuild import Tally, apply_all
from .resident import FINISH_CONNECTIONS, HELD, OverBudget, Resident

log = logging.getLogger("unifier.replay")


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
    by: str  # "partition" | "channel"
    partitions: list[int]  # by partition: the partition numbers this worker reads
    memory_budget: int | None = None  # bytes, this worker's share (resident.OverBudget)
    # Whether the broker is reached with TLS/SASL (kafka.use): only then does a worker
    # read the settings (pydantic_settings, ~0.1 s of its start) to set them up.
    secured: bool = True


class ShardOverlap(RuntimeError):
    """Two workers read facts of one channel: sharding by partition does not fit this log."""


def shard_of(record: Record, workers: int) -> int:
    try:
        channel = orjson.loads(record.value or b"").get("channelId")
    except (orjson.JSONDecodeError, AttributeError):
        return 0
    if not isinstance(channel, str):
        return 0
    return zlib.crc32(channel.encode()) % workers


async def build_sharded(
    procs: list[asyncio.subprocess.Process], database_url: str, bootstrap: str, topics: Topics, schema: str,
    stops: dict[Partition, int], *, batch: int, tally: Tally, by: str = "partition", memory_budget: int | None = None,
) -> dict[Partition, int]:
    """Apply shard 0 here and hand each spawned worker the next share; wait for all of
    them. The partitions' clocks at their stops (records.PartitionClocks), as the
    workers that read them saw."""
    workers = len(procs) + 1
    stop_list = [(t, p, n) for (t, p), n in sorted(stops.items())]
    shares = share_partitions(stops, workers)
    secured = client_options(bootstrap) != {"bootstrap_servers": bootstrap}
    jobs = [
        _Job(i, workers, database_url, bootstrap, topics.prefix, schema, stop_list, batch, by, shares[i],
             None if memory_budget is None else memory_budget // workers, secured)
        for i in range(workers)
    ]

    async def worker(p: asyncio.subprocess.Process, job: _Job) -> tuple[bytes, int]:
        out, _ = await p.communicate(orjson.dumps(asdict(job)) + b"\n")
        return out, p.returncode or 0

    outputs = await asyncio.gather(_here(jobs[0]), *(worker(p, job) for p, job in zip(procs, jobs[1:], strict=True)))
    for out, _ in outputs:  # a worker over its memory budget: reading by channel would not fit either
        if (last := out.splitlines()[-1:]) and b"overBudget" in last[0]:
            raise OverBudget(orjson.loads(last[0])["overBudget"])
    failed = [f"replay worker {i} of {workers} exited with {code}" for i, (_, code) in enumerate(outputs) if code != 0]
    if failed and by == "partition":
        # Two workers writing one channel's users collide on the same ids: redo by channel
        # (a failure with another cause fails that run too, and is reported then).
        raise ShardOverlap(f"{failed[0]}; two workers may have written the same channel")
    if failed:
        raise RuntimeError(failed[0])
    owner: dict[str, int] = {}
    clocks: dict[Partition, int] = {}
    for i, (out, _) in enumerate(outputs):
        counts = orjson.loads(out.splitlines()[-1])
        for topic, partition, clock in counts["clocks"]:
            clocks[(topic, partition)] = max(clock, clocks.get((topic, partition), clock))
        tally.events += counts["events"]
        tally.applied += counts["applied"]
        tally.skipped += counts["skipped"]
        tally.dead_letters += counts["dead_letters"]
        for channel in counts["channels"]:
            if owner.setdefault(channel, i) != i:
                raise ShardOverlap(f"channel {channel!r} has facts in partitions of workers {owner[channel]} and {i}")
    return clocks


async def _here(job: _Job) -> tuple[bytes, int]:
    """Shard 0, applied by the process that started the workers (it would only wait
    for them otherwise: one interpreter fewer to start, ~0.35 s of CPU). Its outcome as
    a worker's last output line and exit code."""
    HELD.clear()  # a build redone (by channel) replaces the users of the first
    try:
        done = await _apply_shard(job, HELD)
    except OverBudget as err:
        HELD.clear()
        gc.unfreeze()  # Resident froze the heap; nothing of it is needed any more
        return orjson.dumps({"overBudget": str(err)}), 3
    except Exception as err:  # as a worker's non-zero exit: the caller decides what it means
        HELD.clear()
        gc.unfreeze()
        log.warning("replay: shard 1 of %d failed: %s: %s", job.workers, type(err).__name__, str(err)[:200])
        return b"", 1
    gc.freeze()  # the users held (HELD) are never walked by the collector again
    return orjson.dumps(done), 0


def share_partitions(stops: dict[Partition, int], workers: int) -> list[list[int]]:
    """Partition numbers per worker, balanced by their records (the end offsets of that
    number in every topic): the largest first, each to the worker with the fewest so
    far; then, while a partition moved or two swapped between the fullest and the
    emptiest share brings them closer, the best such move. The lightest share first:
    shard 0 is applied by the process that also started the others (`_here`).

    The greedy pass alone left 104,128 and 95,872 records of replay_bench's 200,000
    in its two shares (12 partitions): the command's shard, the larger, ended ~0.5–1 s
    after the worker's, and the rest of the rebuild waits for the last (issue 14,
    session 14)."""
    size: dict[int, int] = {}
    for (_topic, partition), end in stops.items():
        size[partition] = size.get(partition, 0) + end
    shares: list[list[int]] = [[] for _ in range(workers)]
    load = [0] * workers
    for partition in sorted(size, key=lambda p: (-size[p], p)):
        i = min(range(workers), key=lambda w: (load[w], w))
        shares[i].append(partition)
        load[i] += size[partition]
    while workers > 1:
        hi = max(range(workers), key=lambda w: (load[w], -w))
        lo = min(range(workers), key=lambda w: (load[w], w))
        gap = load[hi] - load[lo]
        # (what moves from hi to lo, a partition of hi, one of lo or None): the move
        # leaving the two shares closest; any with 0 < moved < gap lowers the fuller one.
        best: tuple[int, int, int | None] | None = None
        for p in shares[hi]:
            for q in [None, *shares[lo]]:
                moved = size[p] - (size[q] if q is not None else 0)
                if 0 < moved < gap and (best is None or abs(gap - 2 * moved) < abs(gap - 2 * best[0])):
                    best = (moved, p, q)
        if best is None:
            break
        moved, p, q = best
        shares[hi].remove(p)
        shares[lo].append(p)
        if q is not None:
            shares[lo].remove(q)
            shares[hi].append(q)
        load[hi] -= moved
        load[lo] += moved
    order = sorted(range(workers), key=lambda w: (load[w], w))
    return [sorted(shares[w]) for w in order]


async def _apply_shard(job: _Job, kept: list[Resident] | None = None) -> dict[str, Any]:
    """Apply this job's share of the log. `kept`: where to leave the users held (a
    worker process, which exits right after, need not free them one by one)."""
    topics = Topics(job.prefix)
    pool = await asyncpg.create_pool(
        job.database_url, min_size=1, max_size=FINISH_CONNECTIONS, init=store_pool._init,
        server_settings={"search_path": job.schema, "application_name": "unifier-replay"},
    )
    # Worker 0 shows progress for all: the shards are about the same size.
    tally = Tally(out=sys.stderr if job.index == 0 else None, label=f"replay (shard 1 of {job.workers})")
    keeper = Resident(pool, topics, memory_budget=job.memory_budget)
    if kept is not None:
        kept.append(keeper)
    if job.by == "partition":
        mine = set(job.partitions)
        stop = {(t, p): n for t, p, n in job.stops if p in mine}
    else:
        stop = {(t, p): n for t, p, n in job.stops}
    try:
        async with LogReader(job.bootstrap, topics.inbound, stop=stop) as reader:
            if job.by == "partition":
                tally.total = reader.total
                chunks = reader.merged(job.batch)
            else:
                tally.total = reader.total // job.workers  # about this shard's share
                chunks = _mine(reader.merged(job.batch), job.index, job.workers, job.batch)
            await apply_all(pool, topics, chunks, tally, keeper=keeper)
            clocks = reader.next_clocks
    finally:
        await pool.close()
    return {
        "events": tally.events, "applied": tally.applied, "skipped": tally.skipped, "dead_letters": tally.dead_letters,
        "channels": sorted(keeper.channels), "clocks": [[t, p, c] for (t, p), c in sorted(clocks.items())],
    }


async def _mine(chunks: AsyncIterator[list[Record]], index: int, workers: int, batch: int) -> AsyncIterator[list[Record]]:
    """This worker's records, in lists of about `batch` records or LIST_BYTES of values
    (the bound `LogReader.merged` keeps: import chunks are large)."""
    out: list[Record] = []
    size = 0
    async for chunk in chunks:
        mine = [r for r in chunk if shard_of(r, workers) == index]
        out.extend(mine)
        size += sum(len(r.value) for r in mine if r.value is not None)
        if len(out) >= batch or size >= LIST_BYTES:
            yield out
            out, size = [], 0
    if out:
        yield out


if __name__ == "__main__":  # a worker: python -m services.replay.shards, its job as a JSON line on stdin
    from .procs import phase

    phase("worker: imported")
    _line = sys.stdin.readline()
    if not _line:
        sys.exit(1)  # the parent gave up before handing out the jobs
    from services.platform import gc_tuning, kafka

    gc_tuning.tune()
    _raw = orjson.loads(_line)
    if _raw.get("secured", True):
        from services.platform.config import Settings

        kafka.use(Settings.from_env())  # the configured broker's TLS/SASL, as in the parent
    phase("worker: job read")
    _raw["stops"] = [tuple(x) for x in _raw["stops"]]
    _kept: list[Resident] = []
    try:
        _done = asyncio.run(_apply_shard(_Job(**_raw), _kept))
    except OverBudget as _err:  # told to the parent, which redoes the log batch by batch
        sys.stdout.write(orjson.dumps({"overBudget": str(_err)}).decode() + "\n")
        sys.exit(3)
    sys.stdout.write(orjson.dumps(_done).decode() + "\n")
    phase("worker: done")
    # Done: the parent waits for this process to end, and freeing the users held (a
    # directory of every user of the shard) and then the interpreter, object by object,
    # was ~0.1–0.2 s of CPU on its way out (issue 14, session 13). Everything it wrote
    # is committed and its connections closed; the output is flushed, then it ends.
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(0)
