"""What an `activities` row costs PostgreSQL, layout by layout (issue 14, session 14): the
live batch's statement (repository.save_activities: INSERT … SELECT unnest … ON CONFLICT DO
NOTHING) with the schema's indexes, without `activities_user` (its column is the first of
`activities_user_recent`), and by binary COPY. A table prefilled with --held rows, then
--batches batches of --per-batch chat rows (bodies as the SDK's chats), the variants
alternated round by round; backend CPU read around each statement from
/proc/<pid>/schedstat (run it on the database's machine) and WAL bytes by the LSN (only
meaningful on a server nobody else writes to).

    .venv/bin/python bench/activities_cost.py --database-url postgresql://postgres@127.0.0.1:55432/postgres
    cd ../base && .venv/bin/python ../writes/bench/activities_cost.py --variants repo   # another tree's

A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path.cwd()  # the tree measured (variant repo): run it from there
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


from services.domain.core import Activity  # noqa: E402
from services.store import repository as repo  # noqa: E402
from services.store.pool import create_pool  # noqa: E402

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
TABLE = """CREATE TABLE activities (
    channel_id  text NOT NULL, event_id text NOT NULL, user_id text NOT NULL, kind text NOT NULL,
    occurred_at bigint NOT NULL, body jsonb NOT NULL, PRIMARY KEY (channel_id, event_id));
CREATE INDEX activities_user_recent ON activities (user_id, occurred_at DESC, event_id DESC);"""
INSERT = """INSERT INTO activities (channel_id, event_id, user_id, kind, occurred_at, body)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[])
            ON CONFLICT DO NOTHING"""
VARIANTS = {"insert": True, "insert_noidx": False, "copy_noidx": False, "json_noidx": False, "repo": False}  # name: with activities_user; repo: the tree's statement and indexes


def _rows(rng: random.Random, start: int, n: int) -> list[tuple[Any, ...]]:
    out = []
    for i in range(start, start + n):
        ch = f"ch_{rng.randrange(100):03d}"
        body = {"medium": rng.choice(["web", "line", "mobile"]), "direction": "in",
                "text": "こんにちは、注文の件で質問があります " + str(i), "authorName": "山田 太郎"}
        out.append((ch, f"e{rng.getrandbits(64):016x}", f"u{rng.randrange(100_000):06d}", "chat", 1_767_225_600_000 + i * 500, body))
    return out


async def one(url: str, variant: str, held: int, per_batch: int, batches: int, seed: int) -> tuple[float, float]:
    schema = f"bench_act_{variant}_{os.getpid()}"
    pool = await create_pool(url, schema, max_size=1)
    rng = random.Random(seed)
    try:
        async with pool.acquire() as conn:
            if variant != "repo":  # else the tree's own table and indexes
                await conn.execute("DROP TABLE activities CASCADE")
                await conn.execute(TABLE)
            if variant.startswith("json"):  # the body as json (text kept as sent) instead of jsonb
                await conn.execute("ALTER TABLE activities ALTER COLUMN body TYPE json")
            if VARIANTS[variant]:
                await conn.execute("CREATE INDEX activities_user ON activities (user_id)")
            cols = ("channel_id", "event_id", "user_id", "kind", "occurred_at", "body")
            done = 0
            while done < held:
                rows = _rows(rng, done, min(10_000, held - done))
                await conn.copy_records_to_table("activities", records=rows, columns=cols)
                done += len(rows)
            await conn.execute("VACUUM ANALYZE activities")
            pid = conn.get_server_pid()
            ns = 0
            lsn0 = await conn.fetchval("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
            for b in range(batches):
                rows = _rows(rng, held + b * per_batch, per_batch)
                t = _ns(pid)
                async with conn.transaction():
                    if variant == "repo":  # this tree's repository.save_activities
                        await repo.save_activities(conn, [Activity(c, u, k, e, at, body) for c, e, u, k, at, body in rows])
                    elif variant.startswith("copy"):
                        await conn.copy_records_to_table("activities", records=rows, columns=cols)
                    else:
                        sql = INSERT.replace("$6::jsonb[]", "$6::json[]") if variant.startswith("json") else INSERT
                        await conn.execute(sql, *[list(c) for c in zip(*rows, strict=True)])
                ns += _ns(pid) - t
            lsn1 = await conn.fetchval("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
        n = per_batch * batches
        return ns / n / 1000, float(lsn1 - lsn0) / n
    finally:
        await pool.execute(f"DROP SCHEMA {schema} CASCADE")
        await pool.close()


def _ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--held", type=int, default=200_000)
    p.add_argument("--per-batch", type=int, default=1_000)
    p.add_argument("--batches", type=int, default=60)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or LOCAL_POSTGRES)
    a = p.parse_args()
    got: dict[str, list[tuple[float, float]]] = {v: [] for v in a.variants.split(",")}
    print(f"activities: {a.held:,} held, {a.batches} batches of {a.per_batch} (load {os.getloadavg()[0]:.1f})")
    for r in range(a.rounds):
        for v in got:
            got[v].append(await one(a.database_url, v, a.held, a.per_batch, a.batches, seed=r))
            print(f"  round {r + 1} {v}: {got[v][-1][0]:.2f} µs/row backend, WAL {got[v][-1][1]:,.0f} B/row")
    for v, xs in got.items():
        print(f"{v}: median {statistics.median(x[0] for x in xs):.2f} µs/row, WAL {statistics.median(x[1] for x in xs):,.0f} B/row")


if __name__ == "__main__":
    asyncio.run(main())
