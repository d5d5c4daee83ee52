"""A rebuild's build phase in this one process: CPU per event, and where it goes.

    .venv/bin/python bench/replay_profile.py [--events 100000] [--repeat 3] [--profile out.prof]

Starts a broker (or uses KAFKA_BOOTSTRAP_SERVERS), publishes `--events` mixed facts
(services/replay/workload.py) once, then `--repeat` times builds a fresh schema on the
local PostgreSQL with `rebuild.build(workers=1)` — what shard 0 of `unifier replay
--rebuild` does, without the switch and the digest (`--whole`: with them, as
`unifier replay --rebuild --workers N` does, default 1: all in this process) — and prints this process's CPU µs
per event, with each stage's own share (`process_time` around the stage's functions,
summed; the log reader runs as a task meanwhile, so its share is what its steps cost
here, not wall time). `--profile FILE` runs the last build under cProfile and writes
its stats there (`python -m pstats FILE`), without the stage timers.
PostgreSQL's CPU per event is that of the backends of a database made for the run
(`replay_prof_*`, dropped afterwards), as bench/replay_bench.py counts it.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import os
import resource
import secrets
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.replay_bench import PartyCpu, _with_database  # noqa: E402
from contracts.topics import Topics  # noqa: E402
from services.platform.embedded import EmbeddedBroker  # noqa: E402
from services.platform.topics import ensure_topics  # noqa: E402
from services.replay import workload  # noqa: E402

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"

SPENT: dict[str, float] = {}
WALL: dict[str, float] = {}
COUNTS: dict[str, int] = {}  # collections by generation
SERVER: dict[str, float] = {}  # PostgreSQL CPU seconds during the async stages
STAGE_PG: list[PartyCpu] = []  # its sampler for stages, on a connection of its own  # seconds of the async stages, from call to return


def _timed(owner: Any, name: str, label: str, *, sample_server: bool = True) -> Callable[[], None]:
    """Wrap `owner.name` (sync or async) to add its process time to SPENT[label]; undo."""
    original = getattr(owner, name)
    clock = time.process_time
    if asyncio.iscoroutinefunction(original):
        @functools.wraps(original)
        async def wrapper(*a: Any, **k: Any) -> Any:
            # Only the steps of this coroutine up to its awaits are ours to count: the
            # event loop runs other tasks meanwhile. Good enough for the COPY stages,
            # whose Python work happens before they await the server.
            server = await _server_cpu() if sample_server else None
            started, wall = clock(), time.perf_counter()
            try:
                return await original(*a, **k)
            finally:
                SPENT[label] = SPENT.get(label, 0.0) + clock() - started
                WALL[label] = WALL.get(label, 0.0) + time.perf_counter() - wall
                if server is not None:
                    SERVER[label] = SERVER.get(label, 0.0) + (await _server_cpu() or 0.0) - server
    else:
        @functools.wraps(original)
        def wrapper(*a: Any, **k: Any) -> Any:
            started = clock()
            try:
                return original(*a, **k)
            finally:
                SPENT[label] = SPENT.get(label, 0.0) + clock() - started
    setattr(owner, name, wrapper)
    return lambda: setattr(owner, name, original)


_SAMPLING = asyncio.Lock()  # stages run side by side (the digest beside the archive's drop): one sample at a time


async def _server_cpu() -> float | None:
    """CPU seconds of the run's database backends so far (None: not sampled). The
    sampler has one connection: two stages sampling at once made `--whole` fail with
    asyncpg's "another operation is in progress" once the drop ran beside the digest."""
    if not STAGE_PG:
        return None
    party = STAGE_PG[0]
    async with _SAMPLING:
        await party._sample()
        return sum(party._last[p] - party._first[p] for p in party._last)


def _gc_timer() -> Callable[[], None]:
    """Add the cyclic collector's time (which no profiler shows) to SPENT["gc"]; undo."""
    import gc

    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.process_time()
        else:
            label = f"gc gen {info['generation']}"
            SPENT[label] = SPENT.get(label, 0.0) + time.process_time() - started[0]
            COUNTS[label] = COUNTS.get(label, 0) + 1
            COUNTS[label + " garbage found"] = COUNTS.get(label + " garbage found", 0) + info["collected"]

    gc.callbacks.append(callback)
    return lambda: gc.callbacks.remove(callback)


def _stage_timers() -> list[Callable[[], None]]:
    from services import domain
    from services.domain import core
    from services.domain.directory import Directory
    from services.replay import indexes, log, replay, resident, switch
    from services.store import bulk

    # Compiled (services/compiled_core.py), the core and its classes are native: their
    # functions are called directly by the compiled loop and cannot be patched, so they
    # are timed only on the interpreted core (UNIFIER_CORE=interpreted).
    interpreted = [
        _timed(core, "apply", "core.apply"),
        _timed(Directory, "settle", "directory.settle"),
    ] if domain.CORE != "compiled" else []
    return interpreted + [
        _gc_timer(),
        _timed(replay, "build", "build (awaits included)"),
        _timed(replay, "catch_up", "catch_up (awaits included)"),
        _timed(replay, "drop_schema", "drop schema (awaits included)"),
        _timed(replay, "ensure_schema", "fixed: ensure the live schema (awaits included)"),
        _timed(replay, "open_schema", "fixed: make the build's schema (awaits included)"),
        _timed(replay, "copy_channels", "fixed: copy channels (awaits included)"),
        _timed(indexes, "defer", "fixed: indexes.defer (awaits included)"),
        _timed(replay, "check_log_holds", "fixed: probe the log's end (awaits included)"),
        _timed(indexes, "restore", "fixed: indexes.restore (awaits included)"),
        _timed(switch, "digest_in_transaction", "fixed: digest (awaits included)"),
        _timed(replay, "switch", "fixed: switch incl. digest (awaits included)"),
        _timed(log.LogReader, "_fill", "read: fetch + records", sample_server=False),  # runs beside the others
        _timed(resident, "parse_records", "decode (parse_records)"),
        _timed(resident, "run_facts", "run_facts (core included)"),
        _timed(bulk, "copy_users", "final COPY users (awaits included)"),
        _timed(bulk, "copy_identities", "final COPY identities (awaits included)"),
        _timed(bulk, "copy_applied", "final COPY applied (awaits included)"),
        _timed(resident.Resident, "_write_effects", "pending writes (awaits included)"),
        _timed(bulk, "copy_activities", "pending: COPY activities (awaits included)"),
        _timed(resident, "_save_merges", "pending: save_merges (awaits included)"),
        _timed(resident.HeldOutcomes, "save", "pending: command outcomes held"),
        _timed(resident.HeldOutcomes, "copy", "final COPY command outcomes (awaits included)"),
        _timed(resident.import_log, "prepare", "per chunk: import_log.prepare (awaits included)"),
        _timed(resident.import_log, "save", "per chunk: import_log.save (awaits included)"),
    ]


async def _build_once(
    database_url: str, bootstrap: str, topics: Topics, channels: int, profile: str | None, whole: bool, workers: int,
) -> dict[str, float]:
    from services.platform import gc_tuning
    from services.replay import replay
    from services.replay.rebuild import Tally, build, open_schema

    gc_tuning.tune()
    schema = f"bench_prof_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(database_url)
    try:
        pool = await open_schema(database_url, schema)  # as `unifier replay` makes its schema
        for ch in workload.hashed_channels(channels):
            await pool.execute(
                "INSERT INTO channels (channel_id, member_hash_secret) VALUES ($1, $2)", ch, workload.HASHED_CHANNEL_SECRET
            )
        tally = Tally(out=None)
        undo = [] if profile else _stage_timers()
        SPENT.clear()
        SERVER.clear()
        WALL.clear()
        COUNTS.clear()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        children = usage.ru_utime + usage.ru_stime
        prof = cProfile.Profile() if profile else None
        sampler = await asyncpg.connect(database_url)
        party = PartyCpu(sampler, database_url.rsplit("/", 1)[1], None)
        await party.start()
        stages = await asyncpg.connect(database_url)
        # Sampled only at the stages' edges (no polling task: one connection, one query at a time).
        STAGE_PG[:] = [PartyCpu(stages, database_url.rsplit("/", 1)[1], None)]
        STAGE_PG[0]._first, STAGE_PG[0]._last, STAGE_PG[0]._before = {}, {}, True
        await STAGE_PG[0]._sample()
        STAGE_PG[0]._before = False
        started, cpu = time.perf_counter(), time.process_time()
        try:
            if prof:
                prof.enable()
            if whole:  # `unifier replay --rebuild --workers 1` against the (empty) live schema
                await pool.close()
                await replay.rebuild(database_url, bootstrap, topics, schema, replay.Options(drop_archive=True, workers=workers), tally)
            else:
                await build(pool, bootstrap, topics, batch=10_000, quiet_s=1.0, tally=tally, workers=1)
            if prof:
                prof.disable()
        finally:
            for u in undo:
                u()
            if not whole:
                await pool.close()
        wall, spent = time.perf_counter() - started, time.process_time() - cpu
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        children = usage.ru_utime + usage.ru_stime - children
        server = (await party.stop(max(tally.events, 1)))["postgres"]
        STAGE_PG.clear()
        await stages.close()
        await sampler.close()
        if prof and profile:
            prof.dump_stats(profile)
        n = max(tally.events, 1)
        out = {"events": tally.events, "eventsPerSecond": round(n / wall), "cpuMicrosPerEvent": round(1e6 * (spent + children) / n, 1),
               "workersCpuMicrosPerEvent": round(1e6 * children / n, 1), "seconds": round(wall, 2),
               "postgresMicrosPerEvent": server}
        out.update({k: round(1e6 * v / n, 2) for k, v in sorted(SPENT.items())})
        out.update({f"{k}, wall s": round(v, 3) for k, v in sorted(WALL.items())})
        out.update({f"{k}, collections": v for k, v in sorted(COUNTS.items())})
        out.update({f"{k}, postgres µs per event": round(1e6 * v / n, 2) for k, v in sorted(SERVER.items())})
        return out
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--channels", type=int, default=48)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", help="cProfile the last build into this file")
    ap.add_argument("--whole", action="store_true",
                    help="the whole rebuild (probe, build, indexes, switch, digest), not the build alone")
    ap.add_argument("--prefix", help="read this topic prefix, already published (KAFKA_BOOTSTRAP_SERVERS)")
    ap.add_argument("--publish-only", action="store_true",
                    help="publish, print the broker and prefix, and keep the broker until SIGTERM (for A/B runs)")
    ap.add_argument("--workers", type=int, default=1, help="with --whole: worker processes, this one included")
    args = ap.parse_args()
    server_url = os.environ.get("DATABASE_URL", LOCAL_POSTGRES)
    database = f"replay_prof_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{database}"')
    database_url = _with_database(server_url, database)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"unifier-prof-{secrets.token_hex(3)}"
    work.mkdir(parents=True)
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = EmbeddedBroker(work)
        bootstrap = await broker.start()
    try:
        prefix = args.prefix or f"prof{secrets.token_hex(3)}."
        topics = Topics(prefix)
        if not args.prefix:
            await ensure_topics(bootstrap, prefix, 12)
            await workload.publish(bootstrap, topics, workload.mixed_facts(args.events, channels=args.channels, rounds=10))
        if args.publish_only:
            print(f"KAFKA_BOOTSTRAP_SERVERS={bootstrap} --prefix {prefix}", flush=True)
            stop = asyncio.Event()  # keep the broker until told to stop (kill PID: SIGTERM)
            for sig in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().add_signal_handler(sig, stop.set)
            await stop.wait()
            return 0
        for i in range(args.repeat):
            last = i == args.repeat - 1
            figures = await _build_once(database_url, bootstrap, topics, args.channels, args.profile if last else None, args.whole, args.workers)
            print(figures, flush=True)
    finally:
        if broker is not None:
            await broker.stop()
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
