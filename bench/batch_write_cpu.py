"""What a live batch's write transaction costs, per event: the service's CPU (asyncpg's
encoding of the statements, the round trips' event-loop turns) and PostgreSQL's (its
backend's CPU from /proc/<pid>/schedstat: run it on the database's machine), apart from
the preparation in memory. Issue 14, session 15 (helper "batchsql").

The bench stream (projection_bench.Stream) on one partition, cut into batches of
`--batch` records, each prepared by the pipelined path (`Pipeline._prepare`) and then
written alone (`Pipeline._write`, awaited with nothing else on the event loop), on a
pool of one connection: the process CPU and the backend CPU between the write's start and
its end are the write's. Statements (round trips; a COPY counts two) are counted on
the connection. `--by-function` adds each store function's share.

    UNIFIER_CORE=compiled .venv/bin/python bench/batch_write_cpu.py --events 40000 --batch 500
    cd ../batchsql-base && UNIFIER_CORE=compiled .venv/bin/python ../batchsql/bench/batch_write_cpu.py …

The tree measured is the working directory's (as writes_live_cpu.py). Each run has a schema
of its own on DATABASE_URL (default the local server), dropped at the end. The first
`--warm` events are written but not counted. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path.cwd()  # the tree measured: run it from there
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from bench.projection_bench import Stream  # noqa: E402
from contracts.topics import Topics  # noqa: E402
from services.platform import gc_tuning  # noqa: E402
from services.platform.gc_tuning import paused as gc_paused  # noqa: E402
from services.projection.batch import BatchResult  # noqa: E402
from services.projection.pipeline import Pipeline, serial_only  # noqa: E402
from services.projection.records import Record  # noqa: E402
from services.projection.resident import ResidentUsers  # noqa: E402
from services.store import import_log, outcomes  # noqa: E402
from services.store import lookups as lookup_store  # noqa: E402
from services.store import repository as repo  # noqa: E402
from services.store.pool import create_pool  # noqa: E402

LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"
WRITE_FUNCTIONS: dict[Any, tuple[str, ...]] = {
    repo: ("copy_new_users", "save_user_columns", "save_user_rows", "save_identities", "save_activities", "save_merges",
           "erase_personal_data", "save_grade_changes", "save_applied", "raise_clocks", "save_outbox",
           "lock_offsets", "lock_channels_held", "save_positions", "lock_batch", "finish_batch"),
    lookup_store: ("save_changes", "erase", "enqueue_chats"),
    outcomes: ("save", "forget_and_announce"),
    import_log: ("save",),
}


def backend_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


class Meter:
    """Process and backend CPU, and round trips, while `on`."""

    def __init__(self) -> None:
        self.on = False
        self.pid = 0
        self.trips = 0
        self.by: dict[str, list[float]] = {}  # label -> [process s, backend ns, calls]
        self.statements: dict[str, list[float]] = {}  # by statement (its first words), likewise

    def count_statements(self) -> None:
        conn_cls = asyncpg.connection.Connection
        for name, trips in (("execute", 1), ("fetch", 1), ("fetchval", 1), ("fetchrow", 1), ("executemany", 1),
                            ("copy_records_to_table", 2), ("copy_to_table", 2)):
            orig = getattr(conn_cls, name)

            def make(orig: Any, trips: int) -> Any:
                @functools.wraps(orig)
                async def counted(conn: Any, *args: Any, **kwargs: Any) -> Any:
                    if not self.on:
                        return await orig(conn, *args, **kwargs)
                    self.trips += trips
                    what = args[0] if args and isinstance(args[0], str) else ""
                    if orig.__name__ == "copy_to_table":  # a payload: its table (session 17)
                        what = f"{kwargs.get('schema_name') or ''}.{what}"
                    label = f"{orig.__name__}: {' '.join(what.split())[:80]}"
                    t, b = time.process_time(), backend_ns(self.pid)
                    try:
                        return await orig(conn, *args, **kwargs)
                    finally:
                        by = self.statements.setdefault(label, [0.0, 0.0, 0.0])
                        by[0] += time.process_time() - t
                        by[1] += backend_ns(self.pid) - b
                        by[2] += 1
                return counted

            setattr(conn_cls, name, make(orig, trips))

    def wrap(self, module: Any, name: str) -> None:
        orig: Callable[..., Awaitable[Any]] | None = getattr(module, name, None)
        if orig is None:
            return
        label = f"{module.__name__.rsplit('.', 1)[-1]}.{name}"
        by = self.by.setdefault(label, [0.0, 0.0, 0.0])

        @functools.wraps(orig)
        async def measured(*args: Any, **kwargs: Any) -> Any:
            if not self.on:
                return await orig(*args, **kwargs)
            t, b = time.process_time(), backend_ns(self.pid)
            try:
                return await orig(*args, **kwargs)
            finally:
                by[0] += time.process_time() - t
                by[1] += backend_ns(self.pid) - b
                by[2] += 1

        setattr(module, name, measured)


async def run(args: argparse.Namespace) -> None:
    meter = Meter()
    meter.count_statements()
    if args.by_function:
        for module, names in WRITE_FUNCTIONS.items():
            for name in names:
                meter.wrap(module, name)
        # pipeline.py and batch.py hold the names they imported: wrap theirs too
        from services.projection import batch as batch_mod
        from services.projection import pipeline as pipe_mod
        for mod in (pipe_mod, batch_mod):
            for name in ("write_rest",):
                if hasattr(mod, name):
                    meter.wrap(mod, name)
    topics = Topics("")
    schema = f"bench_bw_{uuid.uuid4().hex[:8]}"
    url = args.database_url
    pool = await create_pool(url, schema, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            meter.pid = await conn.fetchval("SELECT pg_backend_pid()")
            if args.plan_mode:  # an experiment: the session's plan cache mode (reads included)
                await conn.execute(f"SET plan_cache_mode = {args.plan_mode}")
        resident = ResidentUsers(10**7)

        async def serial(records: list[Record]) -> BatchResult:
            raise AssertionError("the bench's batches must all go pipelined")

        pipe = Pipeline(pool, topics, resident, serial, lambda _r, _res, _e: None, outbox=True)
        events = list(Stream(args.seed).events(args.warm + args.events))
        recs = [Record(topics.sdk_events, 0, i, 1_767_225_600_000 + 10 * i, c.encode(), v)
                for i, (c, _e, v) in enumerate(events)]
        gc_tuning.tune()
        proc = back = wall = 0.0
        trips = batches = counted = 0
        rows: Counter[str] = Counter()
        for i in range(0, len(recs), args.batch):
            chunk = recs[i : i + args.batch]
            measured = i >= args.warm
            with gc_paused():
                parsed = await pipe._parse(chunk)
                assert not serial_only(parsed)
                prepared = await pipe._prepare(chunk, parsed, time.perf_counter(), resident.drops)
                meter.on = measured
                meter.trips = 0
                w, t, b = time.perf_counter(), time.process_time(), backend_ns(meter.pid)
                task = asyncio.create_task(pipe._write(prepared))
                await asyncio.wait([task])
                dp, db, dw = time.process_time() - t, backend_ns(meter.pid) - b, time.perf_counter() - w
                meter.on = False
                pipe._inflight = (prepared, task)
                assert await pipe.drain()
            if measured:
                # a payload and its count since session 17 ("rowcodec"), columns and rows before
                updated = getattr(prepared, "updated", None)
                rows["users updated"] += updated if updated is not None else len(prepared.users[0]) if prepared.users else 0
                copied = getattr(prepared, "copied", None)
                rows["users copied"] += copied if copied is not None else len(prepared.new_users)
                rows["identity changes"] += len(prepared.identities)
                rows["of stored users"] += sum(1 for _u, old, _n in prepared.identities if old is not None)
                rows["losing a row"] += sum(1 for _u, old, new in prepared.identities if old is not None and old - new)
                rows["activities"] += len(prepared.fx.activities)
                rows["messages"] += len(prepared.fx.messages)
                rows["merges"] += len(prepared.fx.merges)
                proc += dp
                wall += dw
                back += db
                trips += meter.trips
                batches += 1
                counted += len(chunk)
        from services.replay.digest import state_digest
        digest = await state_digest(pool)
        outbox = await pool.fetchval("SELECT coalesce(sum(n), 0) FROM outbox")
        print(f"tree {ROOT.name}: {counted:,} events in {batches} batches of {args.batch}; "
              f"load {os.getloadavg()[0]:.1f}")
        print(f"  write, µs an event: service {proc * 1e6 / counted:.2f}, PostgreSQL {back / 1e3 / counted:.2f}; "
              f"round trips a batch {trips / batches:.1f}; wall {wall * 1e3 / batches:.2f} ms a batch")
        print("  rows an event: " + ", ".join(f"{k} {v / counted:.3f}" for k, v in rows.items()))
        print(f"  digest {digest[:16]}…, outbox messages {outbox}")
        if args.by_function:
            for label, (p, b, calls) in sorted(meter.by.items(), key=lambda kv: -(kv[1][0] * 1e9 + kv[1][1])):
                if calls:
                    print(f"    {p * 1e6 / counted:6.2f} {b / 1e3 / counted:6.2f}  {int(calls):5d}  {label}")
        if args.by_statement:
            print("  by statement (service, PostgreSQL µs an event; calls):")
            for label, (p, b, calls) in sorted(meter.statements.items(), key=lambda kv: -kv[1][1])[:20]:
                print(f"    {p * 1e6 / counted:6.2f} {b / 1e3 / counted:6.2f}  {int(calls):5d}  {label}")
    finally:
        await pool.close()
        conn = await asyncpg.connect(url)
        try:
            if args.keep:
                print(f"  schema kept: {schema}")
            else:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=40_000)
    p.add_argument("--warm", type=int, default=5_000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--seed", type=int, default=20260101)
    p.add_argument("--by-function", action="store_true", help="each store function's service and backend µs an event")
    p.add_argument("--by-statement", action="store_true", help="each statement's service and backend µs an event")
    p.add_argument("--keep", action="store_true", help="keep the schema (user_update_cost.py reads it)")
    p.add_argument("--plan-mode", default="", help="experiment: SET plan_cache_mode for the whole session")
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or LOCAL)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
