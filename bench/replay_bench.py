"""Replay rate against the live projection rate, on the same log in the same run.

    .venv/bin/python bench/replay_bench.py [--events 200000] [--repeat 3] [--workers N]
                                           [--batch 10000] [--instances 1,2]

1. Start (or use, from KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL) a broker and PostgreSQL;
   publish `--events` mixed facts (services/replay/workload.py) on a fresh prefix.
2. Floors: one reader reading the whole log in the canonical order, doing nothing,
   then parsing every record as the projection does — the records/s a replay worker
   could reach with no business logic at all.
3. `--repeat` times, interleaved (this VM's speed drifts ±15 % between runs, so a
   ratio of two runs minutes apart says little):
   live: `unifier run` (the first `--instances` count) on a fresh schema, timed from
   the moment every instance holds partitions and something is applied (the ~5 s
   consumer-group join excluded) to the last record applied;
   replay: `unifier replay --rebuild` of that schema, timed as a whole command (start,
   build, switch, digest); its digest must equal the live one.
4. Scale-out: the other `--instances` counts, once each, on fresh schemas and groups;
   their digests must equal the first.
Prints one JSON object — every run, the medians — and writes it under bench/results/.
Targets (Issue 5): replay ≥ 3× live and ≥ 50,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import statistics
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contracts.topics import Topics  # noqa: E402
from services.platform.embedded import EmbeddedBroker, EmbeddedPostgres  # noqa: E402
from services.platform.topics import ensure_topics  # noqa: E402
from services.replay import workload  # noqa: E402

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


async def _floors(bootstrap: str, topics: Topics, events: int) -> dict[str, int]:
    """What reading the log costs before any logic, in this process: the records/s of
    one reader handing out the canonical order (`LogReader.merged`, as each replay
    worker does), and of the same with every record parsed and validated as the
    projection parses it (`parse_records`). The ceiling of a replay worker's rate."""
    from services.platform import gc_tuning
    from services.projection.batch import parse_records
    from services.replay.log import LogReader

    gc_tuning.tune()  # as the replay workers run
    rates = {}
    for label, parse in (("readOnly", False), ("readAndParse", True)):
        async with LogReader(bootstrap, topics.inbound) as reader:
            started, n = time.perf_counter(), 0
            async for chunk in reader.merged(10_000):
                n += len(chunk)
                if parse:
                    parse_records(topics, chunk)
            rates[label] = round(n / (time.perf_counter() - started))
        if n != events:
            raise RuntimeError(f"read {n} records of {events}")
        print(f"floor, one reader, {label}: {rates[label]:,} records/s", file=sys.stderr)
    return rates


async def _replay(env: dict[str, str], args: argparse.Namespace) -> tuple[float, int | None, str]:
    """`unifier replay --rebuild` on env's schema: wall seconds, the build rate it
    reports, and its digest."""
    cmd = [UNIFIER, "replay", "--rebuild", "--drop-archive", "--batch", str(args.batch)]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    started = time.perf_counter()
    code, out, err = await _run(env, *cmd)
    replay_s = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"replay failed: {err.decode()}")
    rates = re.findall(rb"log read: .*?([\d,]+) records/s", err)
    build_rate = int(rates[-1].replace(b",", b"")) if rates else None
    print(f"replay: {args.events / replay_s:,.0f} events/s ({replay_s:.2f} s)", file=sys.stderr)
    return replay_s, build_rate, orjson.loads(out)["digest"]


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--channels", type=int, default=48)
    ap.add_argument("--workers", type=int, default=0, help="replay workers (0: the command's default)")
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--keep", action="store_true", help="keep the schema afterwards")
    ap.add_argument("--instances", type=_counts, default=[1, 2],
                    help="live runs, each with this many instances in one group (default 1,2)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="live (first --instances count) and replay runs, interleaved; medians reported (default 3)")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

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
            "UNIFIER_TOPIC_PREFIX": prefix, "UNIFIER_METRICS_PORT": "0", "UNIFIER_DATA_DIR": str(work),
            "UNIFIER_HTTP_ADDR": "127.0.0.1:0",
        }
        await ensure_topics(bootstrap, prefix, 12)
        facts = workload.mixed_facts(args.events, channels=args.channels, rounds=10)
        started = time.perf_counter()
        await workload.publish(bootstrap, topics, facts)
        publish_s = time.perf_counter() - started
        del facts
        floors = await _floors(bootstrap, topics, args.events)
        conn = await asyncpg.connect(database_url)
        schemas: list[str] = []

        async def live(n: int, name: str) -> tuple[float, str, dict[str, str]]:
            """`n` instances on a fresh schema and consumer group: events/s, digest."""
            run_schema = f"{schema}_{name}"
            schemas.append(run_schema)
            run_env = {**env, "UNIFIER_DB_SCHEMA": run_schema, "UNIFIER_CONSUMER_GROUP": f"bench{tag}{name}"}
            await _prepare(conn, database_url, run_schema, args.channels)
            rate = await _live(conn, run_env, run_schema, n, args.events, work)
            _, out, _ = await _run(run_env, UNIFIER, "digest")
            return rate, orjson.loads(out)["digest"], run_env

        try:
            # -- live and replay, interleaved: the VM's speed drifts between runs ------------
            base = args.instances[0]
            runs = []
            digests: list[tuple[str, str]] = []  # (live, replay) of each run
            for i in range(args.repeat):
                rate, digest, run_env = await live(base, f"r{i}")
                replay_s, build_rate, replay_digest = await _replay(run_env, args)
                runs.append({
                    "liveEventsPerSecond": round(rate), "replayEventsPerSecond": round(args.events / replay_s),
                    "replayBuildEventsPerSecond": build_rate, "replayOverLive": round(args.events / replay_s / rate, 2),
                })
                digests.append((digest, replay_digest))
            # -- scale-out: the other instance counts, once ------------------------------------
            live_rates = {base: statistics.median([r["liveEventsPerSecond"] for r in runs])}
            live_digests = {base: digests[0][0]}
            for n in args.instances[1:]:
                live_rates[n], live_digests[n], _ = await live(n, f"x{n}")
        finally:
            if not args.keep:
                for s in schemas:
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{s}" CASCADE')
            await conn.close()

    figures = {
        "events": args.events,
        "cpus": os.cpu_count(),
        "publishSeconds": round(publish_s, 2),
        "floorOneReaderRecordsPerSecond": floors,
        "runs": runs,
        "liveEventsPerSecond": round(live_rates[base]),
        "liveEventsPerSecondByInstances": {str(n): round(r) for n, r in live_rates.items()},
        "liveDigestsEqual": len({*live_digests.values(), *(live for live, _ in digests)}) == 1,
        "replayEventsPerSecond": round(statistics.median([r["replayEventsPerSecond"] for r in runs])),
        "replayOverLive": statistics.median([r["replayOverLive"] for r in runs]),
        "digestsEqual": all(live == replay for live, replay in digests),
        "targets": {"overLive": 3, "eventsPerSecond": 50_000},
    }
    print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / f"replay-{time.strftime('%Y%m%dT%H%M%S')}.json").write_bytes(orjson.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
