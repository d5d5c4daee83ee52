"""HTTP API benchmark (issue 12, item 7): reads at 1,000 requests/s against 1,000,000
users, commands with `?wait=5` at 200/s, each beside a baseline measured in the same run.

In one run, on the embedded tansu broker and the PostgreSQL of DATABASE_URL (default:
the local server on 127.0.0.1:5432), in a schema of its own that is dropped at the end
(with `--schema NAME`: kept, and reused by the next run when it holds --users users —
the 1,000,000-user fill takes minutes):

1. fill: N members in one channel (the worst case for per-channel indexes), written
   with COPY (services/store/bulk.py, as a replay writes), not through the service;
   every index of services/store/schema.sql built, then ANALYZE;
2. the service (`python -m services.runtime.cli run`: projection, relay and the HTTP
   API) in a child process, so the load generator does not share its core;
3. baseline: the reads' SQL straight from asyncpg (the user by id; the user by e-mail
   through `identities`) at the same rate: what PostgreSQL itself costs;
4. reads: `GET /v1/channels/{ch}/users/{id}` and `GET …/users?email=…` alternating,
   RATE requests/s in all for SECONDS, random users, against `unifier api --workers N`
   (the read side's deployment) driven by bench/read_load.py in a process of its own;
   CPU per read of the API processes, of the load generator and of PostgreSQL's
   backends serving the API; the p99 of every second and the machine's load average;
5. commands (`_commands`): `PUT …/members/{memberId}?wait=5` (member.upsert of a random
   member) at 5/s (a lone command) and at COMMAND_RATE/s for COMMAND_SECONDS, first to
   `unifier run` (API and projection in one process), then to a `unifier api` process
   of its own (the projection left alone, as production runs them); baseline: the same
   commands through the API's own CommandBus straight from this process (aiokafka
   publish, NOTIFY-driven wait), without HTTP. The service and the API run under
   bench/command_trace.py, which stamps each command along its path (HTTP in →
   published → fetched → batch → committed → seen by the waiter → answered) and sums
   their statements; the bench prints p50/p99 per segment, CPU per command of each
   process (service, API, broker, and the PostgreSQL backends serving them), and the
   statements per command. `--phases commands --users 20000` runs only this (~2 min).

Open loop: request i is due at start + i/rate whatever happened before, and its latency
is counted from that moment, so a slow server cannot hide its queue (no coordinated
omission). Prints p50/p90/p99/max and errors per phase and writes
bench/results/api.json. A benchmark, not a test: nothing here asserts.

    .venv/bin/python bench/api_bench.py                       # the issue's figures (~6 min)
    .venv/bin/python bench/api_bench.py --users 100000 --seconds 20 --command-seconds 10
    .venv/bin/python bench/api_bench.py --schema bench_api_reads --phases reads --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import orjson  # noqa: E402
import psutil  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402

from contracts.topics import Topics  # noqa: E402
from services.api.commands import CommandBus  # noqa: E402
from services.domain.ids import member_user_id  # noqa: E402
from services.domain.user import User  # noqa: E402
from services.platform.embedded import EmbeddedBroker, free_port  # noqa: E402
from services.platform.topics import ensure_topics  # noqa: E402
from services.store import api_keys  # noqa: E402
from services.store.pool import create_pool  # noqa: E402
from services.store.repository import USER_COLUMNS  # noqa: E402

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
RESULTS = ROOT / "bench" / "results" / "api.json"
CHANNEL = "bench"
_CHUNK = 20_000
_T0 = 1_700_000_000_000


def _template() -> dict[str, Any]:
    user = User(id="", channel_id=CHANNEL, type="member", created_at=_T0, updated_at=_T0)
    return user.to_json()


_TEMPLATE = _template()


def member_row(i: int) -> tuple[Any, ...]:
    """The `users` row (USER_COLUMNS) of member m{i}, e-mail u{i}@example.com, as
    User.to_json writes it (a template copied, a few keys set: ~50x faster than a User)."""
    at = _T0 + i
    state = dict(_TEMPLATE)
    uid = member_user_id(CHANNEL, f"m{i}")
    state.update(id=uid, member_id=f"m{i}", created_at=at, updated_at=at, last_seen_at=at, fields={
        "name": [f"User {i}", True, True, at], "profile.email": [f"u{i}@example.com", True, True, at],
        "profile.plan": [("free", "basic", "gold")[i % 3], True, True, at],
    })
    # name_key and tags as repository.search_columns makes them: the name lowercased, no tags
    # `state` is stored as text (the sorted JSON User.state_json writes; schema.sql)
    text = orjson.dumps(state, option=orjson.OPT_SORT_KEYS).decode()
    return (uid, CHANNEL, 1, "member", f"m{i}", None, False, False, False, at, at, text, f"user {i}", [])


async def fill(database_url: str, schema: str, users: int) -> float:
    """COPY `users` members and their identities; every index built after. Seconds."""
    started = time.perf_counter()
    pool = await create_pool(database_url, schema, max_size=2)  # creates the tables and indexes
    try:
        async with pool.acquire() as conn:
            # Indexes are faster built once than maintained row by row: drop the
            # secondary ones, COPY, and let the schema script build them again.
            indexes = await conn.fetch(
                """SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename IN ('users', 'identities')
                     AND indexname NOT LIKE '%pkey'""",
                schema,
            )
            for row in indexes:
                await conn.execute(f'DROP INDEX "{schema}"."{row["indexname"]}"')
            for start in range(0, users, _CHUNK):
                rows = [member_row(i) for i in range(start, min(start + _CHUNK, users))]
                keys = [(CHANNEL, kind, value, r[0], True) for r in rows
                        for kind, value in (("member", r[4]), ("email", f"u{r[4][1:]}@example.com"))]
                async with conn.transaction():
                    await conn.copy_records_to_table("users", records=rows, columns=USER_COLUMNS)
                    await conn.copy_records_to_table(
                        "identities", records=keys, columns=("channel_id", "kind", "value", "user_id", "qualified"))
                print(f"\rfill: {start + len(rows):,} users", end="", file=sys.stderr, flush=True)
            print(file=sys.stderr)
        await pool.close()
        pool = await create_pool(database_url, schema, max_size=2)  # builds the dropped indexes again
        async with pool.acquire() as conn:
            await conn.execute("ANALYZE users")
            await conn.execute("ANALYZE identities")
    finally:
        await pool.close()
    return time.perf_counter() - started


async def explain(database_url: str, schema: str, users: int) -> dict[str, Any]:
    """EXPLAIN ANALYZE of the API's reads on the filled table (the statements the API
    runs, from services/store/queries.py): plan shape and server time of each."""
    from services.store.queries import UserFilter, q_matches_sql, search_sql, tag_matches_sql

    n = users // 2
    cases: dict[str, tuple[str, list[Any]]] = {
        "by_id": ("SELECT state FROM users WHERE id = $1 AND channel_id = $2", [member_user_id(CHANNEL, f"m{n}"), CHANNEL]),
        "email": search_sql(CHANNEL, UserFilter(email=f"u{n}@example.com"), limit=50),
        "member_id": search_sql(CHANNEL, UserFilter(member_id=f"m{n}"), limit=50),
        # q: the matching ids first (few), then their page; a broad prefix walks the users.
        "q_matches_name": q_matches_sql(CHANNEL, f"User {n // 10}"),
        "q_matches_email": q_matches_sql(CHANNEL, f"u{n // 10}"),
        "q_page_of_matches": search_sql(CHANNEL, UserFilter(q=f"u{n // 10}"), limit=50,
                                        q_ids=[member_user_id(CHANNEL, f"m{n // 10 * 10 + k}") for k in range(11)]),
        "q_matches_one_letter": q_matches_sql(CHANNEL, "u"),
        "q_one_letter_walk": search_sql(CHANNEL, UserFilter(q="u"), limit=50),
        "q_rare_walk_worst_case": search_sql(CHANNEL, UserFilter(q="zz"), limit=50),
        "list_first_page": search_sql(CHANNEL, UserFilter(), limit=50),
        "list_type_member": search_sql(CHANNEL, UserFilter(type="member"), limit=50),
        "tag_matches": tag_matches_sql(CHANNEL, "vip"),
        "tag_page_of_matches": search_sql(CHANNEL, UserFilter(tag="vip"), limit=50, tag_ids=[]),
        "blocked": search_sql(CHANNEL, UserFilter(blocked=True), limit=50),
        "grade": search_sql(CHANNEL, UserFilter(grade="gold"), limit=50),
    }
    out: dict[str, Any] = {}
    pool = await create_pool(database_url, schema, max_size=1)
    try:
        for name, (sql, params) in cases.items():
            await pool.fetch(sql, *params)  # warm the cache: the steady state is what matters
            lines = [r[0] for r in await pool.fetch("EXPLAIN (ANALYZE, COSTS OFF) " + sql, *params)]
            took = next((float(x.split(":")[1].split()[0]) for x in lines if x.startswith("Execution Time")), None)
            out[name] = {"ms": took, "plan": [x for x in lines if not x.startswith(("Planning", "Execution"))]}
            print(f"explain {name}: {took} ms\n  " + "\n  ".join(out[name]["plan"]), file=sys.stderr)
    finally:
        await pool.close()
    return out


# -- the load generator ----------------------------------------------------------------


class Http:
    """A keep-alive HTTP/1.1 connection that sends prepared requests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Http:
        return cls(*await asyncio.open_connection(host, port))

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def request(method: str, path: str, key: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


class Tally:
    def __init__(self, name: str) -> None:
        self.name, self.latencies, self.errors, self.statuses = name, [], 0, {}  # type: ignore[var-annotated]

    def unanswered(self, n: int) -> None:
        self.errors += n
        self.statuses["not answered 30 s after the phase"] = n

    def add(self, seconds: float, ok: bool, status: int | str) -> None:
        self.latencies.append(seconds)
        self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
        if not ok:
            self.errors += 1

    def summary(self, duration: float) -> dict[str, Any]:
        ms = sorted(x * 1000 for x in self.latencies)

        def pct(p: float) -> float:
            return round(ms[min(len(ms) - 1, int(p * len(ms)))], 2) if ms else 0.0

        return {"answered": len(ms), "per_s": round(len(ms) / duration, 1), "p50_ms": pct(0.50), "p90_ms": pct(0.90),
                "p99_ms": pct(0.99), "max_ms": round(ms[-1], 2) if ms else 0.0, "errors": self.errors,
                "statuses": dict(self.statuses)}


async def open_loop(rate: float, seconds: float, call: Callable[[int], Awaitable[tuple[str, bool, int | str]]],
                    tallies: dict[str, Tally]) -> float:
    """Start call(i) at start + i/rate; record each latency from its due time."""
    total = int(rate * seconds)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int, due: float) -> None:
        try:
            name, ok, status = await call(i)
        except asyncio.CancelledError:
            return  # unanswered at the phase's end: counted by the caller
        except Exception as err:  # a broken connection counts as an error, the run goes on
            name, ok, status = "error", False, type(err).__name__
        tallies.setdefault(name, Tally(name)).add(loop.time() - due, ok, status)

    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    # What is still unanswered 30 s after the last was due counts as an error, and is
    # cancelled so that the next phase does not queue behind it.
    unfinished = list(tasks)
    for task in unfinished:
        task.cancel()
    await asyncio.gather(*unfinished, return_exceptions=True)
    if unfinished:
        tallies.setdefault("unanswered", Tally("unanswered")).unanswered(len(unfinished))
    return loop.time() - start


class Connections:
    """Keep-alive connections, at most `limit` (each carries one request at a time): past
    that a request waits for a free one, and that wait counts in its latency."""

    def __init__(self, host: str, port: int, limit: int = 64) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.idle: asyncio.Queue[Http] = asyncio.Queue()
        self.opened = 0

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        if self.idle.empty() and self.opened < self.limit:
            self.opened += 1
            try:
                conn = await Http.open(self.host, self.port)
            except BaseException:
                self.opened -= 1
                raise
        else:
            conn = await self.idle.get()
        try:
            answer = await conn.send(raw)
        except (asyncio.IncompleteReadError, ConnectionError):
            # The server closed an idle keep-alive connection: once more on a new one.
            conn.close()
            conn = await Http.open(self.host, self.port)
            answer = await conn.send(raw)
        except BaseException:
            conn.close()
            self.opened -= 1
            raise
        self.idle.put_nowait(conn)
        return answer

    def close(self) -> None:
        while not self.idle.empty():
            self.idle.get_nowait().close()


async def filled(database_url: str, schema: str) -> int:
    """How many users `schema` holds (0 when it does not exist)."""
    conn = await asyncpg.connect(database_url)
    try:
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{schema}.users"):
            return 0
        return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".users'))
    finally:
        await conn.close()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    # --schema NAME keeps the filled users for the next run (the 1,000,000-user fill takes
    # minutes): a schema already holding --users users is used as it is, and not dropped.
    schema, prefix = args.schema or f"bench_api_{tag}", f"bapi{tag}."
    keep = args.schema is not None
    rng = random.Random(7)
    result: dict[str, Any] = {"users": args.users, "rate": args.rate, "seconds": args.seconds,
                              "command_rate": args.command_rate, "command_seconds": args.command_seconds}
    with tempfile.TemporaryDirectory(prefix="api-bench-") as tmp:
        work = Path(tmp)
        try:
            if keep and await filled(args.database_url, schema) == args.users:
                print(f"fill: {schema} already holds {args.users:,} users", file=sys.stderr)
            else:
                if keep:
                    await _drop(args.database_url, schema)
                result["fill_seconds"] = round(await fill(args.database_url, schema, args.users), 1)
                print(f"fill: {result['fill_seconds']} s", file=sys.stderr)
            if args.fill_only:
                return result
            if "reads" in args.phases:
                result["explain"] = await explain(args.database_url, schema, args.users)
            async with EmbeddedBroker(work / "broker") as broker:
                await ensure_topics(broker.bootstrap, prefix, 12)
                port = free_port()
                env = {
                    **os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "DATABASE_URL": args.database_url,
                    "UNIFIER_TOPIC_PREFIX": prefix, "UNIFIER_DB_SCHEMA": schema, "UNIFIER_CONSUMER_GROUP": f"g{tag}",
                    "UNIFIER_METRICS_PORT": "0", "UNIFIER_DATA_DIR": str(work / "data"),
                    "UNIFIER_HTTP_ADDR": f"127.0.0.1:{port}",
                }
                RESULTS.parent.mkdir(parents=True, exist_ok=True)
                log = open(RESULTS.with_suffix(".service.log"), "wb")  # noqa: ASYNC230, SIM115
                spawn = CommandSpawn(env, work, broker.pid)
                service = await asyncio.create_subprocess_exec(
                    *spawn.service_argv(), env=env, cwd=ROOT,
                    stdout=subprocess.DEVNULL, stderr=log,
                )
                pool = await create_pool(args.database_url, schema, max_size=10)
                try:
                    key, _ = await api_keys.create_key(pool, "admin", None, f"bench-{tag}")
                    conns = Connections("127.0.0.1", port)
                    await _until_serving(conns, key, service)
                    proc = psutil.Process(service.pid)
                    if "reads" in args.phases:
                        result.update(await _reads(args, pool, conns, key, rng, proc, env))
                    if "commands" in args.phases:
                        result.update(await _commands(args, pool, conns, key, broker.bootstrap, prefix, rng, proc, spawn))
                    conns.close()
                finally:
                    await pool.close()
                    service.terminate()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(service.wait(), 30)
                    log.close()
        finally:
            if not keep:
                await _drop(args.database_url, schema)
    return result


async def _drop(database_url: str, schema: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def _until_serving(conns: Connections, key: str, service: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if service.returncode is not None:
            raise RuntimeError("the service exited while starting")
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            status, _ = await conns.send(request("GET", f"/v1/channels/{CHANNEL}/users/u_none", key))
            if status == 404:
                return
        await asyncio.sleep(0.2)
    raise RuntimeError("the API did not answer within 120 s")


class _Backends:
    """The PostgreSQL backends of the traced processes' pools (bench/command_trace.py
    notes their pids), as one process for _cpu: what PostgreSQL spends serving us."""

    def __init__(self, traces: list[Path]) -> None:
        self.procs: list[psutil.Process] = []
        for trace in traces:
            for line in trace.read_bytes().splitlines() if trace.exists() else []:
                if b'"backend"' in line:
                    with contextlib.suppress(psutil.Error):
                        self.procs.append(psutil.Process(orjson.loads(line)["backend"]))

    def cpu_times(self) -> _Times:
        user = system = 0.0
        for proc in self.procs:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                user, system = user + times.user, system + times.system
        return _Times(user, system)


class _Times(NamedTuple):
    user: float
    system: float


def _projection_sql(trace: Path, windows: dict[str, tuple[float, float, int]]) -> dict[str, Any]:
    """Per phase: the service's statements (projection and relay; with the API inside,
    its reads too): count and wall ms per command, from the
    half-second snapshots of bench/command_trace.py diffed over the phase."""
    snaps = [row for line in (trace.read_bytes().splitlines() if trace.exists() else [])
             if b'"sql"' in line for row in [orjson.loads(line)]]
    out: dict[str, Any] = {}
    for name, (start, end, answered) in windows.items():
        before = max((r for r in snaps if r["at"] <= start), key=lambda r: r["at"], default=None)
        after = max((r for r in snaps if r["at"] <= end), key=lambda r: r["at"], default=None)
        if after is None:
            continue
        was = before["sql"] if before else {}
        diff = {k: (n - was.get(k, [0, 0.0])[0], ms - was.get(k, [0, 0.0])[1]) for k, (n, ms) in after["sql"].items()}
        diff = {k: v for k, v in diff.items() if v[0] > 0}
        total = sum(ms for _n, ms in diff.values())
        out[name] = {
            "statements_per_command": round(sum(n for n, _ms in diff.values()) / answered, 2),
            "ms_per_command": round(total / answered, 3),
            "top": {k: [n, round(ms / answered, 3)] for k, (n, ms) in sorted(diff.items(), key=lambda kv: -kv[1][1])},
        }
    return out


def _cpu(proc: psutil.Process | _Backends) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def _reads(
    args: argparse.Namespace, pool: asyncpg.Pool, conns: Connections, key: str, rng: random.Random, proc: psutil.Process,
    env: dict[str, str],
) -> dict[str, Any]:
    """Reads against `unifier api --workers N` (the read side's deployment: stateless
    processes beside the service), driven by bench/read_load.py in a process of its own;
    CPU per request of the API processes, of the load generator and of PostgreSQL (every
    postgres process on the machine: an upper bound while others run)."""
    picks = [rng.randrange(args.users) for _ in range(int(args.rate * args.seconds) + 1)]

    # Baseline: the rows the API reads, straight from asyncpg at the same rate.
    base: dict[str, Tally] = {}

    async def sql(i: int) -> tuple[str, bool, int | str]:
        n = picks[i]
        if i % 2 == 0:
            row = await pool.fetchrow("SELECT state FROM users WHERE id = $1 AND channel_id = $2",
                                      member_user_id(CHANNEL, f"m{n}"), CHANNEL)
            return "sql_by_id", row is not None, "row"
        row = await pool.fetchrow(
            """SELECT u.state FROM identities i JOIN users u ON u.id = i.user_id
                WHERE i.channel_id = $1 AND i.kind = 'email' AND i.value = $2 LIMIT 1""",
            CHANNEL, f"u{n}@example.com")
        return "sql_by_email", row is not None, "row"

    await pool.fetchval("SELECT 1")
    own = await _backends(pool, [psutil.Process()], args.database_url)
    base_pg = _cpu_of(own)
    base_duration = await open_loop(args.rate, min(args.seconds, args.baseline_seconds), sql, base)
    base_pg_us = (_cpu_of(own) - base_pg) * 1e6 / max(1, sum(len(t.latencies) for t in base.values()))
    print(f"baseline (asyncpg): {json.dumps({k: t.summary(base_duration) for k, t in base.items()})}", file=sys.stderr)
    print(f"baseline: PostgreSQL CPU per read {base_pg_us:.0f} µs", file=sys.stderr)

    port = free_port()
    api = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.runtime.cli", "api", "--workers", str(args.api_workers),
        env={**env, "UNIFIER_HTTP_ADDR": f"127.0.0.1:{port}"}, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=open(RESULTS.with_suffix(".api.log"), "wb"),  # noqa: ASYNC230, SIM115
    )
    try:
        api_conns = Connections("127.0.0.1", port)
        await _until_serving(api_conns, key, api)
        api_conns.close()
        requests = []
        for n in picks:
            requests.append(["get_by_id", f"/v1/channels/{CHANNEL}/users/{member_user_id(CHANNEL, f'm{n}')}"])
            requests.append(["lookup_by_email", f"/v1/channels/{CHANNEL}/users?email=u{n}%40example.com"])
        spec = {"host": "127.0.0.1", "port": port, "key": key, "connections": args.connections, "requests": requests}
        await _load({**spec, "rate": 200, "seconds": 3})  # warm-up (connections, caches), not measured
        processes = [psutil.Process(api.pid), *psutil.Process(api.pid).children(recursive=True)]
        backends = await _backends(pool, processes, args.database_url)
        before, pg_before = _cpu_of(processes), _cpu_of(backends)
        load_average = os.getloadavg()[0]
        load = await _load({**spec, "rate": args.rate, "seconds": args.seconds})
        load_average = max(load_average, os.getloadavg()[0])
        api_cpu, pg_cpu = _cpu_of(processes) - before, _cpu_of(backends) - pg_before
    finally:
        api.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(api.wait(), 30)
    duration = load["duration_s"]
    reads = {}
    for name in ("get_by_id", "lookup_by_email"):
        tally = Tally(name)
        for ms in load.get(name, {}).get("latencies_ms", []):
            tally.latencies.append(ms / 1000)
        tally.statuses = load.get(name, {}).get("statuses", {})
        tally.errors = load.get(name, {}).get("errors", 0)
        reads[name] = tally.summary(duration)
    answered = max(1, sum(r["answered"] for r in reads.values()))
    per_read = {"api_us": round(api_cpu * 1e6 / answered), "load_generator_us": round(load["cpu_s"] * 1e6 / answered),
                "postgres_us": round(pg_cpu * 1e6 / answered), "baseline_postgres_us": round(base_pg_us),
                "api_backends": len(backends)}
    seconds = _per_second_p99(load)
    print(f"API reads ({args.api_workers} workers): {json.dumps(reads)}", file=sys.stderr)
    print(f"per second of the run: {json.dumps(seconds)}; machine load average {load_average:.1f} on "
          f"{os.cpu_count()} cores", file=sys.stderr)
    print(f"CPU per read: {json.dumps(per_read)}; unanswered {load['unanswered']}", file=sys.stderr)
    return {"read_baseline": {k: t.summary(base_duration) for k, t in base.items()}, "reads": reads,
            "read_unanswered": load["unanswered"], "api_workers": args.api_workers, "connections": load["connections"],
            "read_seconds": seconds, "load_average": round(load_average, 1),
            "cpu_us_per_read": per_read}


def _per_second_p99(load: dict[str, Any]) -> dict[str, Any]:
    """The run cut into seconds (by when each request was due): how many seconds kept
    their p99 under 20 ms, and the p99 of the median and the worst second. A machine
    shared with others' work shows here as bad seconds among good ones."""
    by_second: dict[int, list[float]] = {}
    for name in ("get_by_id", "lookup_by_email"):
        for due, ms in zip(load.get(name, {}).get("due_s", []), load.get(name, {}).get("latencies_ms", []), strict=True):
            by_second.setdefault(int(due), []).append(ms)
    p99s = sorted(sorted(v)[min(len(v) - 1, int(0.99 * len(v)))] for v in by_second.values())
    if not p99s:
        return {}
    return {"seconds": len(p99s), "seconds_p99_under_20ms": sum(1 for p in p99s if p < 20),
            "median_second_p99_ms": round(p99s[len(p99s) // 2], 1), "worst_second_p99_ms": round(p99s[-1], 1)}


async def _load(spec: dict[str, Any]) -> dict[str, Any]:
    """bench/read_load.py with `spec`: its result (latencies, statuses, its own CPU)."""
    gen = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bench" / "read_load.py"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
    )
    out, _ = await gen.communicate(json.dumps(spec).encode())
    if gen.returncode != 0:
        raise RuntimeError(f"the load generator failed ({gen.returncode})")
    result: dict[str, Any] = json.loads(out)
    return result


def _cpu_of(processes: list[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        with contextlib.suppress(psutil.Error):
            total += _cpu(p)
    return total


async def _backends(pool: asyncpg.Pool, processes: list[psutil.Process], database_url: str) -> list[psutil.Process]:
    """The PostgreSQL backends serving `processes`' connections (found by their client
    ports; PostgreSQL on this machine), so that their CPU is counted and nobody else's."""
    server = urlsplit(database_url).port or 5432
    ports = [c.laddr.port for p in processes for c in p.net_connections(kind="tcp")
             if c.raddr and c.raddr.port == server]
    pids = await pool.fetch("SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1::int[])", ports)
    return [psutil.Process(r["pid"]) for r in pids]


async def _get(conns: Connections, key: str, picks: list[int], i: int) -> tuple[str, bool, int | str]:
    n = picks[i]
    if i % 2 == 0:
        status, body = await conns.send(request("GET", f"/v1/channels/{CHANNEL}/users/{member_user_id(CHANNEL, f'm{n}')}", key))
        return "get_by_id", status == 200 and b'"memberId"' in body, status
    status, body = await conns.send(request("GET", f"/v1/channels/{CHANNEL}/users?email=u{n}%40example.com", key))
    return "lookup_by_email", status == 200 and b'"memberId"' in body, status


async def _commands(
    args: argparse.Namespace, pool: asyncpg.Pool, conns: Connections, key: str, bootstrap: str, prefix: str,
    rng: random.Random, proc: psutil.Process, spawn: CommandSpawn,
) -> dict[str, Any]:
    """The commands phases (issue 12, item 7), each traced end to end (bench/command_trace.py):

    - `lone`: 5 commands/s over HTTP, the latency of a command that meets no queue;
    - `bus`: the baseline, COMMAND_RATE/s through the API's CommandBus from this
      process (no HTTP), against the same projection;
    - `together`: COMMAND_RATE/s over HTTP to `unifier run` (API, projection and relay
      in one process, as `make run` runs them);
    - `apart`: the same to a `unifier api` process of its own, the projection left
      alone in `unifier run` (as production would run them).
    """
    picks = [rng.randrange(args.users) for _ in range(int(args.command_rate * max(args.command_seconds, 10)) + 1)]
    topic = Topics(prefix).commands
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=1)
    await producer.start()

    async def publish(value: bytes, k: bytes) -> None:
        await producer.send_and_wait(topic, value, key=k)

    bus = CommandBus(pool, publish)
    stamps: dict[str, dict[str, float]] = {}  # eventId -> the client's wall-clock stamps
    windows: dict[str, tuple[float, float, int]] = {}  # phase -> (start, end, answered)
    out: dict[str, Any] = {}

    def straight(phase: str) -> Callable[[int], Awaitable[tuple[str, bool, int | str]]]:
        async def call(i: int) -> tuple[str, bool, int | str]:
            event_id, begun = f"{phase}-{i}", time.time() * 1000
            await bus.submit(CHANNEL, {"type": "member.upsert", "memberId": f"m{picks[i]}",
                                       "profile": {"plan": "basic"}, "name": f"Base {i}"}, actor="bench", event_id=event_id)
            published = time.time() * 1000
            outcome = await bus.wait(CHANNEL, event_id, 5)
            seen = time.time() * 1000
            stamps[event_id] = {"sent": begun, "submit": begun, "published": published, "seen": seen, "answered": seen}
            return "bus_command_wait", outcome.state == "applied", outcome.state
        return call

    def http(phase: str, via: Connections) -> Callable[[int], Awaitable[tuple[str, bool, int | str]]]:
        async def call(i: int) -> tuple[str, bool, int | str]:
            event_id = f"{phase}-{i}"
            body = orjson.dumps({"profile": {"plan": "gold"}, "name": f"Api {i}"})
            raw = (f"PUT /v1/channels/{CHANNEL}/members/m{picks[i]}?wait=5 HTTP/1.1\r\nHost: bench\r\n"
                   f"Authorization: Bearer {key}\r\nIdempotency-Key: {event_id}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
            begun = time.time() * 1000
            status, answer = await via.send(raw)
            stamps[event_id] = {"sent": begun, "answered": time.time() * 1000}
            return "put_member_wait", status == 200 and b'"memberId"' in answer, status
        return call

    async def phase(name: str, rate: float, seconds: float,
                    call: Callable[[int], Awaitable[tuple[str, bool, int | str]]], procs: dict[str, psutil.Process]) -> None:
        tallies: dict[str, Tally] = {}
        procs = {**procs, "postgres": _Backends(spawn.traces)}
        cpu = {who: _cpu(p) for who, p in procs.items()}
        begun = time.time() * 1000
        duration = await open_loop(rate, seconds, call, tallies)
        answered = max(1, sum(len(t.latencies) for t in tallies.values()))
        out[name] = {
            "rate": rate, "seconds": seconds, **{k: t.summary(duration) for k, t in tallies.items()},
            "cpu_ms_per_command": {who: round((_cpu(p) - cpu[who]) * 1000 / answered, 3) for who, p in procs.items()},
        }
        windows[name] = (begun, time.time() * 1000, answered)
        print(f"commands {name}: {json.dumps(out[name])}", file=sys.stderr)

    # A `?wait=` request holds its connection until answered: 200/s at 0.5 s each is 100
    # at once. The reads' 64 would queue commands in the client, so the commands get
    # their own connections, as many callers would open.
    conns = Connections("127.0.0.1", conns.port, limit=_COMMAND_CONNECTIONS)
    broker_proc = psutil.Process(spawn.broker_pid) if spawn.broker_pid else None
    together = {"service": proc, **({"broker": broker_proc} if broker_proc else {})}
    apart_conns: Connections | None = None
    api_proc: asyncio.subprocess.Process | None = None
    try:
        await open_loop(20, 3, http("warm", conns), {})  # the projection's first batches, not measured
        await phase("lone", 5, min(6, args.command_seconds), http("lone", conns), together)
        await phase("bus", args.command_rate, min(args.command_seconds, args.baseline_seconds), straight("bus"), together)
        await phase("together", args.command_rate, args.command_seconds, http("together", conns), together)
        if args.command_apart:
            api_proc, port = await spawn.api()
            apart_conns = Connections("127.0.0.1", port, limit=_COMMAND_CONNECTIONS)
            await _until_serving(apart_conns, key, api_proc)
            apart = {"api": psutil.Process(api_proc.pid), **together}
            await open_loop(20, 2, http("warm2", apart_conns), {})
            await phase("apart_lone", 5, min(6, args.command_seconds), http("apart_lone", apart_conns), apart)
            await phase("apart", args.command_rate, args.command_seconds, http("apart", apart_conns), apart)
    finally:
        await bus.close()
        await producer.stop()
        conns.close()
        if apart_conns is not None:
            apart_conns.close()
        if api_proc is not None:
            api_proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(api_proc.wait(), 30)
    await asyncio.sleep(1.5)  # the services flush their traces with each batch
    out["where_the_time_goes"] = _command_segments(spawn.traces, stamps)
    out["service_sql_ms_per_command"] = _projection_sql(spawn.traces[0], windows)
    if len(spawn.traces) > 1:  # the API process's statements over its life (dumped at its exit)
        answered = sum(w[2] for name, w in windows.items() if name.startswith("apart"))
        out["api_sql_per_command"] = _projection_sql(spawn.traces[1], {"apart_lone+apart": (0.0, float("inf"), answered)})
    for name, segments in out["where_the_time_goes"].items():
        print(f"where the time goes, {name} (ms, p50 / p99): "
              + ", ".join(f"{k} {v['p50']}/{v['p99']}" for k, v in segments.items()), file=sys.stderr)
    return {"commands": out}


_COMMAND_CONNECTIONS = 400


class CommandSpawn:
    """What the commands phases need of main(): the trace files and a way to start a
    `unifier api` of its own beside the running service."""

    def __init__(self, env: dict[str, str], work: Path, broker_pid: int | None) -> None:
        self.env, self.work, self.broker_pid = env, work, broker_pid
        self.traces = [work / "trace-service.jsonl"]

    def service_argv(self) -> list[str]:
        """`unifier run` under bench/command_trace.py (the timestamps of each command)."""
        return [sys.executable, str(ROOT / "bench" / "command_trace.py"), str(self.traces[0]), "run"]

    async def api(self) -> tuple[asyncio.subprocess.Process, int]:
        port = free_port()
        trace = self.work / "trace-api.jsonl"
        self.traces.append(trace)
        log = open(RESULTS.with_suffix(".api.log"), "wb")  # noqa: ASYNC230, SIM115
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "bench" / "command_trace.py"), str(trace), "api",
            env={**self.env, "UNIFIER_HTTP_ADDR": f"127.0.0.1:{port}"}, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=log,
        )
        return process, port


# The segments of a command's path, in order: (name, from stamp, to stamp).
_SEGMENTS = (
    ("http_to_bus", "sent", "submit"),  # HTTP parsing, routing, auth, body validation
    ("publish", "submit", "published"),  # the contract's parser, the producer and the broker's ack
    ("to_consumer", "published", "fetched"),  # the projection's fetch
    ("in_merge", "fetched", "applying"),  # held for co-partitions or the batch before
    ("batch", "applying", "committed"),  # the batch's transaction
    ("to_waiter", "committed", "seen"),  # the waiter learns the outcome
    ("answer", "seen", "answered"),  # the user read back, the response, the client
    ("total", "sent", "answered"),
)


def _command_segments(traces: list[Path], stamps: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Per phase: p50/p99 of each segment's milliseconds, joining the stamps of every
    process by eventId (wall clock: one machine)."""
    joined: dict[str, dict[str, float]] = {e: dict(s) for e, s in stamps.items()}
    for trace in traces:
        if not trace.exists():
            continue
        for line in trace.read_bytes().splitlines():
            row = orjson.loads(line)
            event_id = row.pop("e")
            if event_id in joined:
                for k, v in row.items():
                    joined[event_id].setdefault(k, v)  # the first fetch and batch of an eventId
    phases: dict[str, dict[str, list[float]]] = {}
    for event_id, s in joined.items():
        name = event_id.rsplit("-", 1)[0]
        for seg, a, b in _SEGMENTS:
            if a in s and b in s:
                phases.setdefault(name, {}).setdefault(seg, []).append(s[b] - s[a])
        if "batch" in s:
            phases.setdefault(name, {}).setdefault("batch_size", []).append(s["batch"])

    def pct(xs: list[float], p: float) -> float:
        xs = sorted(xs)
        return round(xs[min(len(xs) - 1, int(p * len(xs)))], 1)

    return {name: {seg: {"p50": pct(xs, 0.5), "p99": pct(xs, 0.99), "n": len(xs)} for seg, xs in segs.items()}
            for name, segs in phases.items() if not name.startswith("warm")}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or LOCAL_POSTGRES)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="reads per second (default 1000)")
    parser.add_argument("--seconds", type=float, default=60.0, help="read phase length (default 60)")
    parser.add_argument("--command-rate", type=float, default=200.0)
    parser.add_argument("--command-seconds", type=float, default=30.0)
    parser.add_argument("--api-workers", type=int, default=2, help="`unifier api --workers N` for the reads (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections of the reads (default 32)")
    parser.add_argument("--schema", help="keep the filled users in this schema and reuse them in later runs")
    parser.add_argument("--fill-only", action="store_true", help="only fill (with --schema: for later runs)")
    parser.add_argument("--baseline-seconds", type=float, default=20.0, help="length of each baseline (default 20)")
    parser.add_argument("--phases", type=lambda v: set(v.split(",")), default={"reads", "commands"},
                        help="which phases to run: reads,commands (default both)")
    parser.add_argument("--no-command-apart", dest="command_apart", action="store_false",
                        help="skip the commands phases against a `unifier api` process of its own")
    figures = asyncio.run(main(parser.parse_args()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
