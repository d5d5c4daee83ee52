"""Replay rate against the live projection rate, on the same log in the same run.

    .venv/bin/python bench/replay_bench.py [--events 200000] [--workers N] [--batch 10000]

1. Start (or use, from KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL) a broker and PostgreSQL;
   publish `--events` mixed facts (services/replay/workload.py) on a fresh prefix.
2. Live: run `unifier run` as a subprocess on a fresh schema; time from its first
   applied batch to the last record applied (the ~5 s consumer-group join excluded).
3. Replay: run `unifier replay --rebuild` as a subprocess on the same schema; its
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


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--channels", type=int, default=48)
    ap.add_argument("--workers", type=int, default=0, help="replay workers (0: the command's default)")
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--keep", action="store_true", help="keep the schema afterwards")
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
            await conn.execute(f'CREATE SCHEMA "{schema}"')
            # The service creates the tables; the hashed channels need their secret first.
            from services.store.pool import ensure_schema

            await ensure_schema(database_url, schema)
            for ch in workload.hashed_channels(args.channels):
                await conn.execute(
                    f'INSERT INTO "{schema}".channels (channel_id, member_hash_secret) VALUES ($1, $2)',
                    ch, workload.HASHED_CHANNEL_SECRET,
                )

            # -- live ---------------------------------------------------------------------
            log = await asyncio.to_thread(open, work / "live.log", "wb")
            live = await asyncio.create_subprocess_exec(UNIFIER, "run", env=env, stdout=log, stderr=log)
            try:
                first = None
                while (n := await _applied(conn, schema)) < args.events:
                    if live.returncode is not None:
                        raise RuntimeError(f"unifier run exited {live.returncode}; see {work / 'live.log'}")
                    if n and first is None:
                        first = (time.perf_counter(), n)
                    await asyncio.sleep(0.05)
                done = time.perf_counter()
            finally:
                live.terminate()
                await asyncio.wait_for(live.wait(), 60)
                log.close()
            assert first is not None
            live_rate = (args.events - first[1]) / (done - first[0])
            _, out, _ = await _run(env, UNIFIER, "digest")
            live_digest = orjson.loads(out)["digest"]

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
        "replayWallSeconds": round(replay_s, 2),
        "replayEventsPerSecond": round(args.events / replay_s),
        "replayBuildEventsPerSecond": build_rate,
        "replayOverLive": round(args.events / replay_s / live_rate, 2),
        "digestsEqual": result["digest"] == live_digest,
        "targets": {"overLive": 3, "eventsPerSecond": 50_000},
    }
    print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"replay-{time.strftime('%Y%m%dT%H%M%S')}.json").write_bytes(orjson.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
