"""The plans of the reads that use the indexes issue 14, session 14 changed (users_channel
and activities_user dropped; users_name_key_prefix and users_tag_list only for users with
a name, with tags): bench/api_bench.py's fill (N members of one channel, COPY, indexes
built after), then N/2 anonymous users without name or tags, 1 % of the members tagged,
2 activities per member; then EXPLAIN ANALYZE of api_bench's reads and of the others that
read users by channel or activities by user (staff.mu_count, the I17 count of
import_log, retention, the activity list, the merge's re-pointing, erasure). Run it in
two trees (base, branch) and compare the plans and times.

    .venv/bin/python bench/read_plans.py --users 200000 --database-url postgresql://…

A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path.cwd()  # the tree measured: run it from there
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import api_bench  # noqa: E402

from services.store.pool import create_pool  # noqa: E402


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--schema", default=f"bench_plans_{os.getpid()}")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or api_bench.LOCAL_POSTGRES)
    a = p.parse_args()
    ch, n = api_bench.CHANNEL, a.users
    await api_bench.fill(a.database_url, a.schema, n)
    pool = await create_pool(a.database_url, a.schema, max_size=1)
    try:
        await pool.execute(
            """INSERT INTO users (id, channel_id, rev, type, deleted, blocked, masked, last_seen_at, updated_at, state)
               SELECT 'anon' || g, $1, 1, 'anonymous', false, false, false, g, g, '{}'::json
                 FROM generate_series(1, $2::int) g""", ch, n // 2)
        await pool.execute("UPDATE users SET tags = '{vip}' WHERE type = 'member' AND hashtext(id) % 100 = 0")
        await pool.execute(
            """INSERT INTO activities (channel_id, event_id, user_id, kind, occurred_at, body)
               SELECT $1, 'a' || u.id || '-' || k, u.id, 'chat', k, '{"text": "hi"}'::jsonb
                 FROM users u, generate_series(1, 2) k WHERE u.type = 'member'""", ch)
        await pool.execute("VACUUM ANALYZE users")
        await pool.execute("VACUUM ANALYZE activities")
        await pool.execute("VACUUM ANALYZE identities")
        m = api_bench.member_user_id(ch, f"m{n // 2}")
        cases: dict[str, tuple[str, list[Any]]] = {}
        out = await api_bench.explain(a.database_url, a.schema, n)  # prints its plans
        cases.update({
            "mu_count": ("""SELECT count(*) FROM users WHERE channel_id = $1 AND NOT deleted AND merged_into IS NULL
                              AND NOT blocked AND type IN ('lead', 'member')""", [ch]),
            "visible_mu": ("""SELECT channel_id, count(*) FROM users WHERE channel_id = ANY($1::text[])
                                AND type <> 'anonymous' AND NOT deleted AND merged_into IS NULL AND NOT blocked
                                AND NOT masked GROUP BY channel_id""", [[ch]]),
            "retention": ("""SELECT channel_id, id FROM users WHERE type IN ('lead', 'member') AND NOT deleted
                               AND merged_into IS NULL AND coalesce((state::json->>'last_contact_at')::bigint,
                               (state::json->>'created_at')::bigint) < $1 ORDER BY channel_id, id""", [0]),
            "activities_page": ("""SELECT event_id, kind, occurred_at, body FROM activities WHERE user_id = $2
                                     AND channel_id = $1 ORDER BY occurred_at DESC, event_id DESC LIMIT 51""", [ch, m]),
            "merge_repoint": ("""UPDATE activities a SET user_id = x.t FROM unnest($1::text[], $2::text[]) AS x(s, t)
                                  WHERE a.user_id = x.s""", [[m], ["x"]]),
            "erase_events": ("DELETE FROM activities WHERE user_id = ANY($1::text[]) AND kind = 'event'", [[m]]),
            "erase_names": ("""UPDATE activities SET body = body - 'authorName' WHERE user_id = ANY($1::text[])
                                 AND body ? 'authorName'""", [[m]]),
        })
        async with pool.acquire() as conn:
            for name, (sql, params) in cases.items():
                tr = conn.transaction()  # the writes among them are rolled back
                await tr.start()
                await conn.fetch(sql.replace("UPDATE", "EXPLAIN UPDATE").replace("DELETE", "EXPLAIN DELETE")
                                 if sql.startswith(("UPDATE", "DELETE")) else sql, *params)  # warm
                lines = [r[0] for r in await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF) " + sql, *params)]
                await tr.rollback()
                took = next((x for x in lines if x.startswith("Execution Time")), "")
                print(f"explain {name}: {took}\n  " + "\n  ".join(x for x in lines if not x.startswith(("Planning", "Execution"))))
        sizes = await pool.fetch(
            """SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
                WHERE s.nspname = $1 AND c.relkind = 'i' AND c.relname ~ '^(users|identities|activities)' ORDER BY 1""",
            a.schema)
        print("index sizes: " + ", ".join(f"{r[0]} {r[1] / 1e6:.1f} MB" for r in sizes))
        del out
    finally:
        if not a.keep:
            await pool.execute(f"DROP SCHEMA {a.schema} CASCADE")
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
