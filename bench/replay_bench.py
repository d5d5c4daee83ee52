"""Replay rate against the live projection rate, on the same log in the same run.

    .venv/bin/python bench/replay_bench.py [--events 200000] [--repeat 3] [--workers N]
                                           [--batch 10000] [--instances 1,2]

1. Start (or use, from KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL) a broker and PostgreSQL;
   publish `--events` mixed facts (services/replay/workload.py) on a fresh prefix.
2. Floors: one reader reading the whole log in the canonical order, doing nothing,
   then parsing every record as the projection does — the records/s a replay worker
   could reach with no business logic at all.
3. `--repeat` times, interleaved (this VM's speed drifts ±15 % between runs, and
   other work shares its two cores, so a ratio of two runs minutes apart says little;
   CPU per event says more):
   live: `unifier run` (the first `--instances` count) on a fresh schema, timed from
   the moment every instance holds partitions and something is applied (the ~5 s
   consumer-group join excluded) to the last record applied;
   replay: `unifier replay --rebuild` of that schema, timed as a whole command (start,
   build, switch, digest); its digest must equal the live one.
4. Scale-out: the other `--instances` counts, once each, on fresh schemas and groups;
   their digests must equal the first.
Every live and replay run also reports the CPU µs per event of each party: the
service's processes (`python`: the command and every process it started, reaped),
PostgreSQL (`postgres`: the backends of the bench's own database, created for the run
on DATABASE_URL's server, sampled every 50 ms pid by pid — its WAL writer and
checkpointer are not counted, they serve every database) and the broker.
Prints one JSON object — every run, the medians — and writes it under bench/results/.
Targets (issue 14): rebuild ≥ 40,000 events/s and ≥ 2× live.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import secrets
import statistics
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

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


class PartyCpu:
    """CPU seconds spent, between `start()` and `stop()`, by this process's reaped
    children (the commands run), the backends of one database, and the broker."""

    def __init__(self, conn: asyncpg.Connection, database: str, broker_pid: int | None) -> None:
        self.conn, self.database, self.broker_pid = conn, database, broker_pid
        self.tck = os.sysconf("SC_CLK_TCK")
        self._task: asyncio.Task[None] | None = None

    def _cpu(self, pid: int) -> float | None:
        try:
            parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(parts[11]) + int(parts[12])) / self.tck

    async def _sample(self) -> None:
        for (pid,) in await self.conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", self.database
        ):
            if (cpu := self._cpu(pid)) is not None:
                self._first.setdefault(pid, cpu if self._before else 0.0)
                self._last[pid] = cpu

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            await self._sample()

    async def start(self) -> None:
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._before = True  # backends already there count from now, later ones from 0
        await self._sample()
        self._before = False
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._children = usage.ru_utime + usage.ru_stime
        self._broker = self._cpu(self.broker_pid) if self.broker_pid else None
        self._task = asyncio.create_task(self._loop())

    async def stop(self, events: int) -> dict[str, float]:
        """CPU µs per event by party since `start()`."""
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._sample()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        spent = {
            "python": usage.ru_utime + usage.ru_stime - self._children,
            "postgres": sum(self._last[p] - self._first[p] for p in self._last),
            "broker": (self._cpu(self.broker_pid) or 0.0) - self._broker if self._broker is not None else 0.0,
        }
        return {k: round(1e6 * v / events, 1) for k, v in spent.items()}


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


async def _floors(bootstrap: str, topics: Topics, events: int) -> dict[str, float]:
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
            started, cpu, n = time.perf_counter(), time.process_time(), 0
            async for chunk in reader.merged(10_000):
                n += len(chunk)
                if parse:
                    parse_records(topics, chunk)
            rates[label] = round(n / (time.perf_counter() - started))
            rates[label + "CpuMicros"] = round(1e6 * (time.process_time() - cpu) / max(n, 1), 1)
        if n != events:
            raise RuntimeError(f"read {n} records of {events}")
        print(f"floor, one reader, {label}: {rates[label]:,} records/s, {rates[label + 'CpuMicros']} µs CPU per record",
              file=sys.stderr)
    return rates


async def _replay(env: dict[str, str], args: argparse.Namespace) -> tuple[float, int | None, str]:
    """`unifier replay --rebuild` on env's schema: wall seconds, the build rate it
    reports, and its digest."""
    cmd = [UNIFIER, "replay", "--rebuild", "--drop-archive", "--batch", str(args.batch)]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    started, t0 = time.perf_counter(), time.time()
    code, out, err = await _run(env, *cmd)
    replay_s = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"replay failed: {err.decode()}")
    if env.get("UNIFIER_REPLAY_PHASES"):  # the command's and its workers' phases (procs.phase), as replay_phases.py
        pids: dict[bytes, str] = {}
        for pid, at, cpu, name in re.findall(rb"^phase (\d+) ([\d.]+) ([\d.]+) (.*)$", err, re.M):
            who = pids.setdefault(pid, "command" if not pids else f"worker{len(pids)}")
            print(f"{float(at) - t0:7.3f} {float(cpu):6.3f}  {who:8} {name.decode()}", file=sys.stderr)
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
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
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
        broker_pid = None
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker = await stack.enter_async_context(EmbeddedBroker(work))
            bootstrap, broker_pid = broker.bootstrap, broker.pid
        server_url = os.environ.get("DATABASE_URL")
        if not server_url:
            try:
                (await asyncpg.connect(LOCAL_POSTGRES, timeout=2)).terminate()
                server_url = LOCAL_POSTGRES
            except (OSError, asyncpg.PostgresError, TimeoutError):
                server_url = (await stack.enter_async_context(EmbeddedPostgres(work / "pg"))).url
        tag = secrets.token_hex(3)
        prefix, schema = f"bench{tag}.", f"bench_{tag}"
        # A database of its own: its backends are this bench's and nobody else's (CPU by party).
        database = f"replay_bench_{tag}"
        admin = await asyncpg.connect(server_url)
        await admin.execute(f'CREATE DATABASE "{database}"')
        database_url = _with_database(server_url, database)
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
        sampler = await asyncpg.connect(database_url)  # its own: it polls while `conn` works
        cpu = PartyCpu(sampler, database, broker_pid)

        async def live(n: int, name: str) -> tuple[float, str, dict[str, str], dict[str, float]]:
            """`n` instances on a fresh schema and consumer group: events/s, digest, CPU."""
            run_schema = f"{schema}_{name}"
            run_env = {**env, "UNIFIER_DB_SCHEMA": run_schema, "UNIFIER_CONSUMER_GROUP": f"bench{tag}{name}"}
            await _prepare(conn, database_url, run_schema, args.channels)
            await cpu.start()
            rate = await _live(conn, run_env, run_schema, n, args.events, work)
            used = await cpu.stop(args.events)
            print(f"live, {n} instance(s): CPU µs per event {used}", file=sys.stderr)
            _, out, _ = await _run(run_env, UNIFIER, "digest")
            return rate, orjson.loads(out)["digest"], run_env, used

        try:
            # -- live and replay, interleaved: the VM's speed drifts between runs ------------
            base = args.instances[0]
            runs = []
            digests: list[tuple[str, str]] = []  # (live, replay) of each run
            for i in range(args.repeat):
                rate, digest, run_env, live_cpu = await live(base, f"r{i}")
                await cpu.start()
                replay_s, build_rate, replay_digest = await _replay(run_env, args)
                replay_cpu = await cpu.stop(args.events)
                print(f"replay: CPU µs per event {replay_cpu}", file=sys.stderr)
                runs.append({
                    "liveEventsPerSecond": round(rate), "replayEventsPerSecond": round(args.events / replay_s),
                    "replayBuildEventsPerSecond": build_rate, "replayOverLive": round(args.events / replay_s / rate, 2),
                    "liveCpuMicrosPerEvent": live_cpu, "replayCpuMicrosPerEvent": replay_cpu,
                })
                digests.append((digest, replay_digest))
            # -- scale-out: the other instance counts, once ------------------------------------
            live_rates = {base: statistics.median([r["liveEventsPerSecond"] for r in runs])}
            live_digests = {base: digests[0][0]}
            for n in args.instances[1:]:
                live_rates[n], live_digests[n], _, _ = await live(n, f"x{n}")
        finally:
            await conn.close()
            await sampler.close()
            if not args.keep:
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await admin.close()

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
        "targets": {"overLive": 2, "eventsPerSecond": 40_000},
    }
    print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / f"replay-{time.strftime('%Y%m%dT%H%M%S')}.json").write_bytes(orjson.dumps(figures))
    return 0


def _with_database(url: str, database: str) -> str:
    """`url` with its database name replaced."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
