"""An import's CPU per row in the projection's batch path, without the broker: member
rows (import_bench.py's file) through `apply_batch` against PostgreSQL with resident
users, as `unifier run` applies them. Prints CPU µs per row of this process and of its
PostgreSQL backend (read from /proc: run it on the database's machine), for the code as
it is and, in the same run, with session 8's changes undone (docs/decisions.md, "Issue
14, session 8: import rows"), each and both — the last being the code before them:

- `handler, no plain path`: `imports.plain_new_row` not registered in `core.PLAIN`;
- `new users by INSERT`: `repository.COPY_NEW_FROM` out of reach (no binary COPY);
- `session 7`: both.

Since session 9 the rows go in `import.rows` chunks of CHUNK_ROWS, as `unifier import`
publishes them; `one-row records` applies the same rows as one `import.row` record each
(contract 1.2.0's records). The default runs `now` and `one-row records`; `--variants`
picks others (session 8's, which the variants' names after "now" undo, run in chunks too).

`pipelined` (session 11) feeds the same chunks to the pipelined projection
(projection/pipeline.py: batch N+1 prepared while N commits, on a second connection),
as `unifier run` does since import rows are prepared ahead; `now` is apply_batch, one
batch after the other. Beside CPU per row, each run's rows/s (wall clock, the timed
batches only) shows the overlap; PostgreSQL's CPU is then both backends'.

(Session 7's own variants — the collector not paused, imported users kept — are in its
commit; `git log bench/import_cpu.py`.)

Runs alternate (now, variant, now, …) so that a shared machine's load falls on all of
them; compare figures of one run. A benchmark, not a test.

    .venv/bin/python bench/import_cpu.py                       # 8 batches of 5,000 rows, 3 rounds
    .venv/bin/python bench/import_cpu.py --rows 500 --batches 40   # paced-size batches
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from contracts.topics import Topics  # noqa: E402
from services.domain import core as core_mod  # noqa: E402
from services.domain import imports as imports_mod  # noqa: E402
from services.importer.run import CHUNK_ROWS  # noqa: E402
from services.platform import gc_tuning  # noqa: E402
from services.projection import batch as batch_mod  # noqa: E402
from services.projection.pipeline import Pipeline  # noqa: E402
from services.projection.records import Record  # noqa: E402
from services.projection.resident import ResidentUsers  # noqa: E402
from services.store import repository as repo_mod  # noqa: E402
from services.store.pool import create_pool  # noqa: E402

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
CH, IMP, T0 = "bench_ch", "imp_bench", 1_767_225_600_000
COLUMNS = [
    {"column": "memberId", "key": "memberId", "type": None}, {"column": "name", "key": "name", "type": None},
    {"column": "email", "key": "profile.email", "type": None},
    {"column": "unsubscribeEmail", "key": "unsubscribeEmail", "type": None},
    {"column": "unsubscribeTexting", "key": "unsubscribeTexting", "type": None},
    {"column": "plan", "key": "profile.plan", "type": "string"}, {"column": "points", "key": "profile.points", "type": "number"},
    {"column": "birthday", "key": "profile.birthday", "type": "date"}, {"column": "note", "key": "profile.note", "type": "string"},
]


@contextlib.contextmanager
def _undone(variant: str) -> Iterator[None]:
    """Session 8's changes undone for the variant's run."""
    copy_from = repo_mod.COPY_NEW_FROM
    if variant in ("handler, no plain path", "session 7"):
        del core_mod.PLAIN["import.row"]
    if variant in ("new users by INSERT", "session 7"):
        repo_mod.COPY_NEW_FROM = 1 << 62
    try:
        yield
    finally:
        core_mod.PLAIN["import.row"] = imports_mod.plain_new_row
        repo_mod.COPY_NEW_FROM = copy_from


def _backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one(database_url: str, variant: str, rows: int, batches: int) -> tuple[float, float, float]:
    """(process, backend) CPU µs per row over `batches` batches after a warm-up one, and rows/s."""
    with _undone(variant):
        return await _one(database_url, rows, batches, chunk=0 if variant == ONE_ROW else CHUNK_ROWS,
                          piped=variant == PIPELINED)


ONE_ROW = "one-row records"  # contract 1.2.0's import.row, one record a row (session 9 undone)
PIPELINED = "pipelined"  # through projection/pipeline.py, as `unifier run` (session 11)


async def _one(
    database_url: str, rows: int, batches: int, chunk: int = CHUNK_ROWS, piped: bool = False,
) -> tuple[float, float, float]:
    schema = f"bench_impcpu_{secrets.token_hex(3)}"
    size = 2 if piped else 1  # the pipeline prepares on one connection while it writes on the other
    pool = await create_pool(database_url, schema, min_size=size, max_size=size)
    topics = Topics("t.")
    resident = ResidentUsers(200_000)
    offset = 0

    async def serial(records: list[Record]) -> batch_mod.BatchResult:
        return await batch_mod.apply_batch(pool, topics, records, now_ms=T0, resident=resident)

    pipe = Pipeline(pool, topics, resident, serial, lambda _r, _res, _e: None) if piped else None

    def record(body: dict[str, Any]) -> Record:
        nonlocal offset
        offset += 1
        return Record(topics.import_rows, 0, offset - 1, T0, CH.encode(), orjson.dumps({"channelId": CH, "occurredAt": T0, **body}))

    try:
        async with contextlib.AsyncExitStack() as held:  # every connection of the pool: its backend
            conns = [await held.enter_async_context(pool.acquire()) for _ in range(size)]
            backends = [await c.fetchval("SELECT pg_backend_pid()") for c in conns]
        await batch_mod.apply_batch(pool, topics, [record({
            "eventId": f"{IMP}:started:1", "type": "import.started", "importId": IMP, "mode": "member", "key": "memberId",
            "blank": "keep", "tag": "bench", "actor": "bench", "fileName": "m.csv", "columns": COLUMNS,
        })], now_ms=T0, resident=resident)
        prepared: list[list[Record]] = []  # built before the clock starts
        for b in range(batches + 1):
            records = []
            rows_of = [{
                "rowNumber": n,
                "cells": {"memberId": f"M{n:08d}", "name": "山田 太郎", "profile.email": f"user{n}@example.com",
                          "unsubscribeEmail": "false", "unsubscribeTexting": "true", "profile.plan": "gold",
                          "profile.points": str(n % 1000), "profile.birthday": "1990-05-17",
                          "profile.note": "a note about this member"},
            } for n in range(b * rows + 2, b * rows + rows + 2)]
            if chunk:  # import.rows, as `unifier import` publishes them since contract 1.3.0
                for i in range(0, rows, chunk):
                    part = rows_of[i:i + chunk]
                    records.append(record({"eventId": f"{IMP}:rows:{part[0]['rowNumber']}", "type": "import.rows",
                                           "importId": IMP, "rows": part}))
            else:
                for r in rows_of:
                    records.append(record({"eventId": f"{IMP}:{r['rowNumber']}", "type": "import.row", "importId": IMP, **r}))
            prepared.append(records)
        t = d = w = 0.0
        for b, records in enumerate(prepared):
            if b == 1:  # the first batch warms up: timed from the second on
                if pipe is not None:
                    await pipe.drain()
                t, d, w = time.process_time(), sum(map(_backend_cpu, backends)), time.perf_counter()
            if pipe is not None:
                await pipe.feed(records)
            else:
                await batch_mod.apply_batch(pool, topics, records, now_ms=T0, resident=resident)
        if pipe is not None:
            await pipe.drain()
            assert pipe.redone == 0 and pipe.pipelined == batches + 1, (pipe.redone, pipe.pipelined)
        cpu, db, wall = time.process_time() - t, sum(map(_backend_cpu, backends)) - d, time.perf_counter() - w
        n_rows = batches * rows
        return cpu / n_rows * 1e6, db / n_rows * 1e6, n_rows / wall
    finally:
        await pool.execute(f"DROP SCHEMA {schema} CASCADE")
        await pool.close()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=5_000, help="rows per batch")
    p.add_argument("--batches", type=int, default=8, help="timed batches per run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or LOCAL_POSTGRES)
    gc_tuning.tune()  # as `unifier run`
    p.add_argument("--variants", default=f"now/{ONE_ROW}",
                   help=f"separated by '/': now, {PIPELINED}, {ONE_ROW}, handler, no plain path, new users by INSERT, session 7")
    args = p.parse_args()
    variants = tuple(args.variants.split("/"))
    seen: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            seen[v].append(await one(args.database_url, v, args.rows, args.batches))
    print(f"import rows through apply_batch: {args.batches} x {args.rows} rows per run, CPU µs per row (load {os.getloadavg()[0]:.1f})")
    for v, runs in seen.items():
        process = " / ".join(f"{c:.1f}" for c, _, _ in runs)
        backend = " / ".join(f"{d:.1f}" for _, d, _ in runs)
        rate = " / ".join(f"{r:,.0f}" for _, _, r in runs)
        print(f"  {v:<22} service {process:<24} PostgreSQL backend {backend:<24} rows/s {rate}")


if __name__ == "__main__":
    asyncio.run(main())
