"""An import batch's key probe (`repository.load_users`) against the forms tried in
issue 14 session 10 (docs/decisions.md, "what an import row costs PostgreSQL and the
write path"): a store of `--users` members (each with a member and an e-mail identity),
then batches of 5,000 new rows' ids and keys (none stored, ten that are), each form in
turn, three rounds. Prints the backend's CPU (from /proc/<pid>/schedstat: run it on the
database's machine) and the wall time per row.

- `current`: `load_users` as it is: `id IN (ids UNION identity probe)`; the planner
  hashes the batch's ids and keys and scans the tables at these sizes;
- `any`: `id = ANY(ids || ARRAY(identity probe))`: users by index;
- `lateral`: one index probe per id and per key (LATERAL subqueries kept from
  flattening by `OFFSET 0`).

    .venv/bin/python bench/import_probe.py --users 100000

A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from services.store.pool import create_pool  # noqa: E402

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
ROWS = 5_000

FORMS = {
    "current": """SELECT u.rev, u.state FROM users u WHERE u.id IN (
               SELECT unnest($1::text[])
               UNION
               SELECT i.user_id FROM identities i
                WHERE (i.channel_id, i.kind, i.value) IN (
                      SELECT * FROM unnest($2::text[], $3::text[], $4::text[])))""",
    "any": """SELECT u.rev, u.state FROM users u WHERE u.id = ANY($1::text[] || ARRAY(
               SELECT i.user_id FROM identities i
                WHERE (i.channel_id, i.kind, i.value) IN (SELECT * FROM unnest($2::text[], $3::text[], $4::text[]))))""",
    "lateral": """SELECT u.rev, u.state FROM (
               SELECT x.id FROM unnest($1::text[]) AS x(id)
               UNION
               SELECT i.user_id FROM unnest($2::text[], $3::text[], $4::text[]) AS k(c, kind, v)
                 CROSS JOIN LATERAL (SELECT i.user_id FROM identities i
                      WHERE i.channel_id = k.c AND i.kind = k.kind AND i.value = k.v OFFSET 0) i) w
             CROSS JOIN LATERAL (SELECT u.rev, u.state FROM users u WHERE u.id = w.id OFFSET 0) u""",
}


def _uid(n: int) -> str:
    return "u_" + hashlib.md5(str(n).encode()).hexdigest()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=100_000, help="members in the store")
    p.add_argument("--batches", type=int, default=5, help="batches of 5,000 rows per form and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or LOCAL_POSTGRES)
    args = p.parse_args()
    n = args.users
    schema = f"bench_probe_{secrets.token_hex(3)}"
    pool = await create_pool(args.database_url, schema, min_size=1, max_size=1)
    try:
        state = '{"x":"' + "a" * 900 + '"}'  # about a stored member's size
        await pool.execute(f"""INSERT INTO users (id, channel_id, rev, type, member_id, deleted, blocked, masked, updated_at, state)
            SELECT 'u_' || md5(g::text), 'ch', 1, 'member', 'M' || g, false, false, false, 0, '{state}'::json
              FROM generate_series(1, {n}) g""")
        await pool.execute(f"""INSERT INTO identities SELECT 'ch', 'member', 'M' || g, 'u_' || md5(g::text), true
                                 FROM generate_series(1, {n}) g""")
        await pool.execute(f"""INSERT INTO identities SELECT 'ch', 'email', 'user' || g || '@example.com', 'u_' || md5(g::text), true
                                 FROM generate_series(1, {n}) g""")
        await pool.execute("ANALYZE users; ANALYZE identities")
        stored = [_uid(g) for g in range(1, 11)]
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")

            def cpu_ns() -> int:
                return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])

            print(f"{n:,} members stored; batches of {ROWS:,} new rows (load {os.getloadavg()[0]:.1f})")
            for r in range(args.rounds):
                for name, query in FORMS.items():
                    ns = wall = 0.0
                    for b in range(args.batches):
                        base = n + 1 + (r * args.batches + b) * ROWS
                        ids = ["u_" + secrets.token_hex(16) for _ in range(ROWS)] + stored
                        keys = [("ch", "member", f"M{g}") for g in range(base, base + ROWS)]
                        keys += [("ch", "email", f"user{g}@example.com") for g in range(base, base + ROWS)]
                        keys.append(("ch", "email", "user5@example.com"))
                        c, t = cpu_ns(), time.perf_counter()
                        rows = await conn.fetch(query, ids, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])
                        wall += time.perf_counter() - t
                        ns += cpu_ns() - c
                        assert len(rows) == len(stored), (name, len(rows))
                    total = args.batches * ROWS
                    print(f"  round {r + 1} {name:<8} backend {ns / 1e3 / total:6.2f} µs/row  wall {wall * 1e6 / total:6.2f} µs/row")
    finally:
        await pool.execute(f"DROP SCHEMA {schema} CASCADE")
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
