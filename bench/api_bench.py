"""HTTP API benchmark (issue 12, item 7): reads at 1,000 requests/s against 1,000,000
users, commands with `?wait=5` at 200/s, each beside a baseline measured in the same run.

In one run, on the embedded tansu broker and the PostgreSQL of DATABASE_URL (default:
the local server on 127.0.0.1:5432), in a schema of its own that is dropped at the end:

1. fill: N members in one channel (the worst case for per-channel indexes), written
   with COPY (services/store/bulk.py, as a replay writes), not through the service;
   every index of services/store/schema.sql built, then ANALYZE;
2. the service (`python -m services.runtime.cli run`: projection, relay and the HTTP
   API) in a child process, so the load generator does not share its core;
3. baseline: the reads' SQL straight from asyncpg (the user by id; the user by e-mail
   through `identities`) at the same rate: what PostgreSQL itself costs;
4. reads: `GET /v1/channels/{ch}/users/{id}` and `GET …/users?email=…` alternating,
   RATE requests/s in all for SECONDS, random users;
5. commands: `PUT …/members/{memberId}?wait=5` (member.upsert of a random member),
   COMMAND_RATE/s for COMMAND_SECONDS; baseline: the same commands through the API's
   own CommandBus straight from this process (aiokafka publish + outcome polled from
   PostgreSQL), without HTTP.

Open loop: request i is due at start + i/rate whatever happened before, and its latency
is counted from that moment, so a slow server cannot hide its queue (no coordinated
omission). The client is a few lines of asyncio on keep-alive connections, cheap enough
not to be what is measured. Prints p50/p90/p99/max and errors per phase and writes
bench/results/api.json. A benchmark, not a test: nothing here asserts.

    .venv/bin/python bench/api_bench.py                       # the issue's figures (~6 min)
    .venv/bin/python bench/api_bench.py --users 100000 --seconds 20 --command-seconds 10
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
from typing import Any

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
from services.store.repository import USER_COLUMNS, search_columns  # noqa: E402

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
    return (uid, CHANNEL, 1, "member", f"m{i}", None, False, False, False, at, at, state, *search_columns(state))


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
                        for kind, value in (("member", r[4]), ("email", r[11]["fields"]["profile.email"][0]))]
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


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    schema, prefix = f"bench_api_{tag}", f"bapi{tag}."
    rng = random.Random(7)
    result: dict[str, Any] = {"users": args.users, "rate": args.rate, "seconds": args.seconds,
                              "command_rate": args.command_rate, "command_seconds": args.command_seconds}
    with tempfile.TemporaryDirectory(prefix="api-bench-") as tmp:
        work = Path(tmp)
        try:
            result["fill_seconds"] = round(await fill(args.database_url, schema, args.users), 1)
            print(f"fill: {result['fill_seconds']} s", file=sys.stderr)
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
                service = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "services.runtime.cli", "run", env=env, cwd=ROOT,
                    stdout=subprocess.DEVNULL, stderr=log,
                )
                pool = await create_pool(args.database_url, schema, max_size=10)
                try:
                    key, _ = await api_keys.create_key(pool, "admin", None, "bench")
                    conns = Connections("127.0.0.1", port)
                    await _until_serving(conns, key, service)
                    proc = psutil.Process(service.pid)
                    result.update(await _reads(args, pool, conns, key, rng, proc))
                    result.update(await _commands(args, pool, conns, key, broker.bootstrap, prefix, rng, proc))
                    conns.close()
                finally:
                    await pool.close()
                    service.terminate()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(service.wait(), 30)
                    log.close()
        finally:
            conn = await asyncpg.connect(args.database_url)
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await conn.close()
    return result


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


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def _reads(
    args: argparse.Namespace, pool: asyncpg.Pool, conns: Connections, key: str, rng: random.Random, proc: psutil.Process,
) -> dict[str, Any]:
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

    # A short warm-up (connections, caches of the service), not measured.
    warm: dict[str, Tally] = {}
    await open_loop(200, 3, lambda i: _get(conns, key, picks, i), warm)
    duration = await open_loop(args.rate, min(args.seconds, args.baseline_seconds), sql, base)
    base_duration = duration
    print(f"baseline (asyncpg): {json.dumps({k: t.summary(duration) for k, t in base.items()})}", file=sys.stderr)

    api: dict[str, Tally] = {}
    cpu = _cpu(proc)
    duration = await open_loop(args.rate, args.seconds, lambda i: _get(conns, key, picks, i), api)
    cpu_ms = (_cpu(proc) - cpu) * 1000 / max(1, sum(len(t.latencies) for t in api.values()))  # per answered
    print(f"API reads: {json.dumps({k: t.summary(duration) for k, t in api.items()})}", file=sys.stderr)
    print(f"service CPU per read: {cpu_ms:.2f} ms", file=sys.stderr)
    return {"read_baseline": {k: t.summary(base_duration) for k, t in base.items()},
            "reads": {k: t.summary(duration) for k, t in api.items()}, "connections": conns.opened,
            "service_cpu_ms_per_read": round(cpu_ms, 3)}


async def _get(conns: Connections, key: str, picks: list[int], i: int) -> tuple[str, bool, int | str]:
    n = picks[i]
    if i % 2 == 0:
        status, body = await conns.send(request("GET", f"/v1/channels/{CHANNEL}/users/{member_user_id(CHANNEL, f'm{n}')}", key))
        return "get_by_id", status == 200 and b'"memberId"' in body, status
    status, body = await conns.send(request("GET", f"/v1/channels/{CHANNEL}/users?email=u{n}%40example.com", key))
    return "lookup_by_email", status == 200 and b'"memberId"' in body, status


async def _commands(
    args: argparse.Namespace, pool: asyncpg.Pool, conns: Connections, key: str, bootstrap: str, prefix: str,
    rng: random.Random, proc: psutil.Process,
) -> dict[str, Any]:
    picks = [rng.randrange(args.users) for _ in range(int(args.command_rate * args.command_seconds) + 1)]
    topic = Topics(prefix).commands
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=1)
    await producer.start()

    async def publish(value: bytes, k: bytes) -> None:
        await producer.send_and_wait(topic, value, key=k)

    bus = CommandBus(pool, publish)
    base: dict[str, Tally] = {}

    async def straight(i: int) -> tuple[str, bool, int | str]:
        event_id = await bus.submit(CHANNEL, {"type": "member.upsert", "memberId": f"m{picks[i]}",
                                              "profile": {"plan": "basic"}, "name": f"Base {i}"}, actor="bench")
        outcome = await bus.wait(CHANNEL, event_id, 5)
        return "bus_command_wait", outcome.state == "applied", outcome.state

    async def http(i: int) -> tuple[str, bool, int | str]:
        body = orjson.dumps({"profile": {"plan": "gold"}, "name": f"Api {i}"})
        status, answer = await conns.send(request("PUT", f"/v1/channels/{CHANNEL}/members/m{picks[i]}?wait=5", key, body))
        return "put_member_wait", status == 200 and b'"memberId"' in answer, status

    try:
        warm: dict[str, Tally] = {}
        await open_loop(20, 3, http, warm)  # the projection's first batches, not measured
        base_duration = await open_loop(args.command_rate, min(args.command_seconds, args.baseline_seconds), straight, base)
        print(f"baseline (CommandBus, no HTTP): {json.dumps({k: t.summary(base_duration) for k, t in base.items()})}", file=sys.stderr)
        api: dict[str, Tally] = {}
        cpu = _cpu(proc)
        duration = await open_loop(args.command_rate, args.command_seconds, http, api)
        cpu_ms = (_cpu(proc) - cpu) * 1000 / max(1, sum(len(t.latencies) for t in api.values()))
        print(f"API commands: {json.dumps({k: t.summary(duration) for k, t in api.items()})}", file=sys.stderr)
        print(f"service CPU per command (API + projection + relay): {cpu_ms:.2f} ms", file=sys.stderr)
    finally:
        await bus.close()
        await producer.stop()
    return {"command_baseline": {k: t.summary(base_duration) for k, t in base.items()},
            "commands": {k: t.summary(duration) for k, t in api.items()}, "service_cpu_ms_per_command": round(cpu_ms, 3)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or LOCAL_POSTGRES)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="reads per second (default 1000)")
    parser.add_argument("--seconds", type=float, default=60.0, help="read phase length (default 60)")
    parser.add_argument("--command-rate", type=float, default=200.0)
    parser.add_argument("--command-seconds", type=float, default=30.0)
    parser.add_argument("--baseline-seconds", type=float, default=20.0, help="length of each baseline (default 20)")
    figures = asyncio.run(main(parser.parse_args()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
