"""What an imported member's two identity rows (memberId, e-mail) cost PostgreSQL: COPY
into a table prefilled with --held members' rows (random values, as real ones are),
batches of 5,000 members, backend CPU read around each COPY from /proc/<pid>/schedstat
and WAL bytes by the LSN (meaningful only on a server nobody else writes to). Variants:
`now` (the tree's own schema: run it from the tree measured), `noprefix` (without
identities_contact_prefix), `c` (that, and `value` collating as "C"), `c_all` (every text
column "C"). Issue 14, session 14.

    .venv/bin/python bench/identities_cost.py now,noprefix,c 3 [database-url]
    cd ../base && .venv/bin/python ../writes/bench/identities_cost.py now 1   # another tree

A benchmark, not a test.
"""

import asyncio
import os
import random
import statistics
import sys

sys.path.insert(0, os.getcwd())
from services.store.pool import create_pool  # noqa: E402

URL = sys.argv[3] if len(sys.argv) > 3 else os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
COLS = ("channel_id", "kind", "value", "user_id", "qualified")
C_VALUE = 'DROP INDEX IF EXISTS identities_contact_prefix; ALTER TABLE identities ALTER COLUMN value TYPE text COLLATE "C"'
SETUP = {
    "now": "",
    "noprefix": "DROP INDEX IF EXISTS identities_contact_prefix",
    "c": C_VALUE,
    "c_all": C_VALUE + ', ALTER COLUMN channel_id TYPE text COLLATE "C", ALTER COLUMN kind TYPE text COLLATE "C",'
                       ' ALTER COLUMN user_id TYPE text COLLATE "C"',
}


def rows(rng: random.Random, n: int) -> list[tuple[str, str, str, str, bool]]:
    out = []
    for _ in range(n):
        uid = f"u_{rng.getrandbits(128):032x}"
        out.append(("ch", "member", f"M{rng.getrandbits(40):012d}", uid, True))
        out.append(("ch", "email", f"user{rng.getrandbits(40)}@example.com", uid, True))
    return out


def backend_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:  # noqa: ASYNC230 (procfs: never blocks)
        return int(f.read().split()[0])


async def one(variant: str, held: int = 200_000, per: int = 5000, batches: int = 8, seed: int = 0) -> tuple[float, float]:
    schema = f"bench_id_{variant}_{os.getpid()}"
    pool = await create_pool(URL, schema, max_size=1)
    rng = random.Random(seed)
    try:
        async with pool.acquire() as conn:
            if SETUP[variant]:
                await conn.execute(SETUP[variant])
            for _ in range(0, held, 10_000):
                await conn.copy_records_to_table("identities", records=rows(rng, 10_000), columns=COLS)
            await conn.execute("VACUUM ANALYZE identities")
            pid, ns = conn.get_server_pid(), 0
            lsn0 = await conn.fetchval("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
            for _ in range(batches):
                batch = rows(rng, per)
                t = backend_ns(pid)
                async with conn.transaction():
                    await conn.copy_records_to_table("identities", records=batch, columns=COLS)
                ns += backend_ns(pid) - t
            lsn1 = await conn.fetchval("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
            n = per * batches
            return ns / n / 1000, float(lsn1 - lsn0) / n
    finally:
        await pool.execute(f"DROP SCHEMA {schema} CASCADE")
        await pool.close()


async def main() -> None:
    got: dict[str, list[tuple[float, float]]] = {v: [] for v in sys.argv[1].split(",")}
    for r in range(int(sys.argv[2])):
        for v in got:
            got[v].append(await one(v, seed=r))
            print(v, got[v][-1], flush=True)
    for v, xs in got.items():
        print(f"{v}: median {statistics.median(x[0] for x in xs):.2f} µs per member (2 rows), "
              f"WAL {statistics.median(x[1] for x in xs):,.0f} B")


if __name__ == "__main__":
    asyncio.run(main())
