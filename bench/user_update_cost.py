"""PostgreSQL's and the service's CPU a user update, by statement form (issue 14, session
15, helper "batchsql"): `repository.save_user_columns`' INSERT … ON CONFLICT DO UPDATE
("unnest"), as session 14 left it ("before": the tags' subquery for every row), a plain
UPDATE tried instead ("update") and session 17's COPY into `users_staged` then INSERT …
SELECT ("staged": `repository.save_user_rows`, the rows' encoding timed with it), on the users of a schema that batch_write_cpu.py
`--keep` left (real states, ~1 KB each). Each round updates `--users` random users at
their next revision (last_seen_at moved: a boot), alternating the forms.

    .venv/bin/python bench/batch_write_cpu.py --events 30000 --batch 500 --keep   # prints the schema
    .venv/bin/python bench/user_update_cost.py --schema bench_bw_… --users 330 --rounds 30

A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path.cwd()
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from services.store import repository as repo  # noqa: E402
from services.store import rowcodec  # noqa: E402
from services.store.pool import create_pool  # noqa: E402

LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"

async def save_user_columns_before(conn: Any, cols: list[list[Any]]) -> None:
    """`repository.save_user_columns` as session 14 left it (the tags' subquery for every row)."""
    if not cols or not cols[0]:
        return
    count = len(cols[0])
    written = await conn.fetchval(
        """
        WITH w AS (
          INSERT INTO users AS u (id, channel_id, rev, type, member_id, merged_into, deleted,
                                  blocked, masked, last_seen_at, updated_at, state, name_key, tags)
          SELECT x.id, x.channel_id, x.rev, x.type, x.member_id, x.merged_into, x.deleted,
                 x.blocked, x.masked, x.last_seen_at, x.updated_at, x.state, x.name_key,
                 ARRAY(SELECT json_array_elements_text(x.tags::json))
          FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                      $6::text[], $7::bool[], $8::bool[], $9::bool[], $10::bigint[],
                      $11::bigint[], $12::json[], $13::text[], $14::text[])
               AS x(id, channel_id, rev, type, member_id, merged_into, deleted, blocked, masked,
                    last_seen_at, updated_at, state, name_key, tags)
          ON CONFLICT (id) DO UPDATE SET
              rev = EXCLUDED.rev, type = EXCLUDED.type, member_id = EXCLUDED.member_id,
              merged_into = EXCLUDED.merged_into, deleted = EXCLUDED.deleted,
              blocked = EXCLUDED.blocked, masked = EXCLUDED.masked,
              last_seen_at = EXCLUDED.last_seen_at, updated_at = EXCLUDED.updated_at,
              state = EXCLUDED.state, name_key = EXCLUDED.name_key, tags = EXCLUDED.tags
          WHERE u.rev = EXCLUDED.rev - 1
          RETURNING 1)
        SELECT count(*) FROM w
        """,
        *cols,
    )
    if written != count:
        raise repo.Conflict(f"{count - written} of {count} users changed under this batch")


async def save_user_columns_unnest(conn: Any, cols: list[list[Any]]) -> None:
    """`repository.save_user_columns` as session 15 left it (fourteen arrays of
    `unnest`, the empty tags by a constant), replaced in session 17 by `save_user_rows`."""
    if not cols or not cols[0]:
        return
    count = len(cols[0])
    written = await conn.fetchval(
        """
        WITH w AS (
          INSERT INTO users AS u (id, channel_id, rev, type, member_id, merged_into, deleted,
                                  blocked, masked, last_seen_at, updated_at, state, name_key, tags)
          SELECT x.id, x.channel_id, x.rev, x.type, x.member_id, x.merged_into, x.deleted,
                 x.blocked, x.masked, x.last_seen_at, x.updated_at, x.state, x.name_key,
                 CASE WHEN x.tags = '[]' THEN '{}' ELSE ARRAY(SELECT json_array_elements_text(x.tags::json)) END
          FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                      $6::text[], $7::bool[], $8::bool[], $9::bool[], $10::bigint[],
                      $11::bigint[], $12::json[], $13::text[], $14::text[])
               AS x(id, channel_id, rev, type, member_id, merged_into, deleted, blocked, masked,
                    last_seen_at, updated_at, state, name_key, tags)
          ON CONFLICT (id) DO UPDATE SET
              rev = EXCLUDED.rev, type = EXCLUDED.type, member_id = EXCLUDED.member_id,
              merged_into = EXCLUDED.merged_into, deleted = EXCLUDED.deleted,
              blocked = EXCLUDED.blocked, masked = EXCLUDED.masked,
              last_seen_at = EXCLUDED.last_seen_at, updated_at = EXCLUDED.updated_at,
              state = EXCLUDED.state, name_key = EXCLUDED.name_key, tags = EXCLUDED.tags
          WHERE u.rev = EXCLUDED.rev - 1
          RETURNING 1)
        SELECT count(*) FROM w
        """,
        *cols,
    )
    if written != count:
        raise repo.Conflict(f"{count - written} of {count} users changed under this batch")


async def save_user_rows_staged(conn: Any, cols: list[list[Any]]) -> None:
    """This tree's `repository.save_user_rows` (issue 14, session 17): the rows encoded
    (timed with it; the tags' JSON turned back into lists too) and copied into the
    session's `users_staged`, then one INSERT … SELECT."""
    if not cols or not cols[0]:
        return
    rows = [(*r[:11], r[11], r[12], orjson.loads(r[13])) for r in zip(*cols, strict=True)]  # the state's bytes: below
    await repo.save_user_rows(conn, rowcodec.encode(rows, repo.USER_TYPES), len(rows))


async def save_user_rows_taken(conn: Any, cols: list[list[Any]]) -> None:
    """`save_user_rows_staged` taking the rows out of `users_staged` as it reads them (a
    DELETE … RETURNING, the form first written; the commit empties it anyway): what
    that costs."""
    if not cols or not cols[0]:
        return
    rows = [(*r[:11], r[11], r[12], orjson.loads(r[13])) for r in zip(*cols, strict=True)]
    await repo.copy_rows(conn, "users_staged", repo.USER_COLUMNS, rowcodec.encode(rows, repo.USER_TYPES), schema="pg_temp")
    sql = repo._SAVE_STAGED.replace("FROM pg_temp.users_staged x", "FROM x").replace(
        "WITH w AS (", "WITH x AS (DELETE FROM pg_temp.users_staged RETURNING *), w AS (")
    assert sql != repo._SAVE_STAGED
    if await conn.fetchval(sql) != len(rows):
        raise repo.Conflict("users changed under this batch")


async def update_user_columns(conn: Any, cols: list[list[Any]]) -> None:
    """The form tried instead: `save_user_columns` for users that are all stored already
    (revision > 0), a plain UPDATE fenced on the revision (no speculative insertion)."""
    if not cols or not cols[0]:
        return
    count = len(cols[0])
    written = await conn.fetchval(
        """
        WITH w AS (
          UPDATE users AS u SET
              rev = x.rev, type = x.type, member_id = x.member_id,
              merged_into = x.merged_into, deleted = x.deleted,
              blocked = x.blocked, masked = x.masked,
              last_seen_at = x.last_seen_at, updated_at = x.updated_at,
              state = x.state, name_key = x.name_key,
              tags = ARRAY(SELECT json_array_elements_text(x.tags::json))
          FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                      $6::text[], $7::bool[], $8::bool[], $9::bool[], $10::bigint[],
                      $11::bigint[], $12::json[], $13::text[], $14::text[])
               AS x(id, channel_id, rev, type, member_id, merged_into, deleted, blocked, masked,
                    last_seen_at, updated_at, state, name_key, tags)
          WHERE u.id = x.id AND u.rev = x.rev - 1
          RETURNING 1)
        SELECT count(*) FROM w
        """,
        *cols,
    )
    if written != count:
        raise repo.Conflict(f"{count - written} of {count} users changed under this batch")


def backend_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--schema", required=True)
    p.add_argument("--users", type=int, default=330)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or LOCAL)
    args = p.parse_args()
    pool = await create_pool(args.database_url, args.schema, min_size=1, max_size=1, migrate=False)
    forms = {"before": save_user_columns_before, "unnest": save_user_columns_unnest, "update": update_user_columns,
             "staged": save_user_rows_staged, "taken": save_user_rows_taken}
    spent: dict[str, list[float]] = {k: [0.0, 0.0] for k in forms}
    rng = random.Random(7)
    async with pool.acquire() as conn:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        ids = [r[0] for r in await conn.fetch("SELECT id FROM users WHERE rev > 0")]
        for rnd in range(args.rounds + 2):
            for name, fn in forms.items():
                some = rng.sample(ids, min(args.users, len(ids)))
                rows = await conn.fetch(
                    "SELECT id, channel_id, rev, type, member_id, merged_into, deleted, blocked, masked, last_seen_at,"
                    " updated_at, state::text, name_key, tags FROM users WHERE id = ANY($1::text[])", some)
                cols: list[list[Any]] = [[] for _ in range(14)]
                for r in rows:
                    vals = list(r)
                    vals[2] += 1
                    vals[9] = (vals[9] or 0) + 1
                    # the state as the pool's json codec takes it, or as its bytes for the payload
                    vals[11] = vals[11].encode() if name in ("staged", "taken") else orjson.Fragment(vals[11].encode())
                    vals[13] = orjson.dumps(list(vals[13])).decode() if vals[13] else "[]"
                    for c, v in zip(cols, vals, strict=True):
                        c.append(v)
                async with conn.transaction():
                    t, b = time.process_time(), backend_ns(pid)
                    await fn(conn, cols)
                    dp, db = time.process_time() - t, backend_ns(pid) - b
                if rnd >= 2:
                    spent[name][0] += dp
                    spent[name][1] += db
    n = args.users * args.rounds
    print(f"{n:,} user updates a form, load {os.getloadavg()[0]:.1f}")
    for name, (dp, db) in spent.items():
        print(f"  {name:8s} service {dp * 1e6 / n:6.2f} µs, PostgreSQL {db / 1e3 / n:6.2f} µs a user")
    await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
