"""Replay rate against the live projection rate, on the same log in the same run.

    .venv/bin/python bench/replay_bench.py [--events 200000] [--workers N] [--batch 10000] [--instances 1,2]

1. Start (or use, from KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL) a broker and PostgreSQL;
   publish `--events` mixed facts (services/replay/workload.py) on a fresh prefix.
2. Live: run `unifier run` as a subprocess on a fresh schema; time from its first
   applied batch to the last record applied (the ~5 s consumer-group join excluded).
   Scale-out (`--instances 1,2`): the same log consumed again by 2 instances in one
   consumer group on another fresh schema, timed from the moment both hold partitions;
   its digest must equal the single instance's.
3. Replay: run `unifier replay --rebuild` as a subprocess on the first schema; its
   wall time, and the build rate it reports.
Prints one JSON object with the figures (and writes it under bench/results/).
Targets (Issue 5): replay ≥ 3× live and ≥ 50,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contracts.topics import Topics  # noqa: E402
from services.replay import workload  # noqa: E402
from services.runtime.embedded import EmbeddedBroker, EmbeddedPostgres  # noqa: E402
from services.runtime.topics import ensure_topics  # noqa: E402

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
UNIFIER = str(ROOT / ".venv" / "bin" / "unifier")


async def _applied(conn: asyncpg.Connection, schema: str) -> int:
    try:
        return int(await conn.fetchval(f'SELECT coalesce(sum(next_offset), 0) FROM "{schema}".inbox_offsets'))
    except asyncpg.UndefinedTableError:
        return 0


async def _run(env: dict[str, str], *cmd: str) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode or 0, out, err


def _counts(raw: str) -> list[int]:
    counts = [int(x) for x in raw.split(",") if x.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of instance counts, each at least 1")
    return counts


async def _prepare(conn: asyncpg.Connection, database_url: str, schema: str, channels: int) -> None:
    """A fresh schema with its tables; the hashed channels need their secret first."""
    from services.store.pool import ensure_schema

    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await ensure_schema(database_url, schema)
    for ch in workload.hashed_channels(channels):
        await conn.execute(
            f'INSERT INTO "{schema}".channels (channel_id, member_hash_secret) VALUES ($1, $2)',
            ch, workload.HASHED_CHANNEL_SECRET,
        )


def _holds_partitions(log: Path) -> bool:
    """The instance's latest assignment (aiokafka's log line) is not empty."""
    found = re.findall(r"Setting newly assigned partitions (.*) for group", log.read_text(errors="replace"))
    return bool(found) and found[-1] not in ("set()", "{}", "frozenset()")


async def _live(conn: asyncpg.Connection, env: dict[str, str], schema: str, instances: int, events: int, work: Path) -> float:
    """Events/s of `instances` × `unifier run` in one group draining the published log,
    timed from the moment every instance holds partitions and something is applied (the
    group join and the first rebalance excluded: they are fixed costs, not throughput)."""
    logs = [work / f"live-{instances}-{i}.log" for i in range(instances)]
    procs = []
    for path in logs:
        with path.open("wb") as out:
            procs.append(await asyncio.create_subprocess_exec(UNIFIER, "run", env=env, stdout=out, stderr=out))
    try:
        first = None
        while (n := await _applied(conn, schema)) < events:
            for proc, path in zip(procs, logs, strict=True):
                if proc.returncode is not None:
                    raise RuntimeError(f"unifier run exited {proc.returncode}; see {path}")
            if n and first is None and all(_holds_partitions(p) for p in logs):
                first = (time.perf_counter(), n)
            await asyncio.sleep(0.05)
        done = time.perf_counter()
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 60)
    if first is None or events - first[1] < events // 4:
        raise RuntimeError(f"{instances} instance(s): most events were applied before every instance held partitions; "
                           "publish more (--events)")
    print(f"live, {instances} instance(s): {(events - first[1]) / (done - first[0]):,.0f} events/s", file=sys.stderr)
    return (events - first[1]) / (done - first[0])


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--channels", type=int, default=48)
    ap.add_argument("--workers", type=int, default=0, help="replay workers (0: the command's default)")
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--keep", action="store_true", help="keep the schema afterwards")
    ap.add_argument("--instances", type=_counts, default=[1, 2],
                    help="live runs, each with this many instances in one group (default 1,2)")
    args = ap.parse_args()

    async with AsyncExitStack() as stack:
        work = Path(os.environ.get("TMPDIR", "/tmp")) / f"unifier-bench-{secrets.token_hex(3)}"
        work.mkdir(parents=True)
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or (
            await stack.enter_async_context(EmbeddedBroker(work))
        ).bootstrap
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            try:
                (await asyncpg.connect(LOCAL_POSTGRES, timeout=2)).terminate()
                database_url = LOCAL_POSTGRES
            except (OSError, asyncpg.PostgresError, TimeoutError):
                database_url = (await stack.enter_async_context(EmbeddedPostgres(work / "pg"))).url
        tag = secrets.token_hex(3)
        prefix, schema = f"bench{tag}.", f"bench_{tag}"
        topics = Topics(prefix)
        env = {
            **os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "DATABASE_URL": database_url,
            "UNIFIER_TOPIC_PREFIX": prefix, "UNIFIER_DB_SCHEMA": schema, "UNIFIER_CONSUMER_GROUP": f"bench{tag}",
            "UNIFIER_METRICS_PORT": "0", "UNIFIER_DATA_DIR": str(work),
        }
        await ensure_topics(bootstrap, prefix, 12)
        facts = workload.mixed_facts(args.events, channels=args.channels, rounds=10)
        started = time.perf_counter()
        await workload.publish(bootstrap, topics, facts)
        publish_s = time.perf_counter() - started
        conn = await asyncpg.connect(database_url)
        try:
            # -- live, with 1 then N instances ------------------------------------------------
            live_rates: dict[int, float] = {}
            live_digests: dict[int, str] = {}
            for n in args.instances:
                run_schema = schema if n == args.instances[0] else f"{schema}_x{n}"
                run_env = {**env, "UNIFIER_DB_SCHEMA": run_schema, "UNIFIER_CONSUMER_GROUP": f"bench{tag}x{n}"}
                await _prepare(conn, database_url, run_schema, args.channels)
                live_rates[n] = await _live(conn, run_env, run_schema, n, args.events, work)
                _, out, _ = await _run(run_env, UNIFIER, "digest")
                live_digests[n] = orjson.loads(out)["digest"]
                if run_schema != schema and not args.keep:
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{run_schema}" CASCADE')
            live_rate = live_rates[args.instances[0]]
            live_digest = live_digests[args.instances[0]]

            # -- replay -------------------------------------------------------------------
            cmd = [UNIFIER, "replay", "--rebuild", "--drop-archive", "--batch", str(args.batch)]
            if args.workers:
                cmd += ["--workers", str(args.workers)]
            started = time.perf_counter()
            code, out, err = await _run(env, *cmd)
            replay_s = time.perf_counter() - started
            if code != 0:
                raise RuntimeError(f"replay failed: {err.decode()}")
            result = orjson.loads(out)
            rates = re.findall(rb"log read: .*?([\d,]+) records/s", err)
            build_rate = int(rates[-1].replace(b",", b"")) if rates else None
        finally:
            if not args.keep:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()

    figures = {
        "events": args.events,
        "cpus": os.cpu_count(),
        "publishSeconds": round(publish_s, 2),
        "liveEventsPerSecond": round(live_rate),
        "liveEventsPerSecondByInstances": {str(n): round(r) for n, r in live_rates.items()},
        "liveDigestsEqual": len(set(live_digests.values())) == 1,
        "replayWallSeconds": round(replay_s, 2),
        "replayEventsPerSecond": round(args.events / replay_s),
        "replayBuildEventsPerSecond": build_rate,
        "replayOverLive": round(args.events / replay_s / live_rate, 2),
        "digestsEqual": result["digest"] == live_digest,
        "targets": {"overLive": 3, "eventsPerSecond": 50_000},
    }
    print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / f"replay-{time.strftime('%Y%m%dT%H%M%S')}.json").write_bytes(orjson.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
