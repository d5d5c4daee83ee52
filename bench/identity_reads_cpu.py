"""PostgreSQL's CPU per read, the reads of services/store/queries.py against those of an
earlier commit (default: the session start of issue 14, session 21, which read a user's
own identities through `identities_user`): docs/decisions.md, "Issue 14, session 21".

One schema on DATABASE_URL (default the local server): bench/api_bench.py's members
(`--users`, COPY, indexes built after), `--users`/2 anonymous users, three grades held
by 1/50 of the members' e-mails and 1/70 of their member ids, then ANALYZE; the earlier
commit's `identities_user` is made too, so that both variants' statements have what they
use. Each read is run `--reps` times per variant, the variants alternating, `--rounds`
times, on one connection; the backend's CPU is read around each run from
/proc/<pid>/schedstat (run it on the database's machine). Prints µs per read by round.

    .venv/bin/python bench/identity_reads_cpu.py --users 200000 --rounds 3

A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

ROOT = Path.cwd()  # the tree measured: run it from there
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import api_bench  # noqa: E402

from services.domain.ids import member_user_id  # noqa: E402
from services.store import queries  # noqa: E402
from services.store.pool import create_pool  # noqa: E402

CH = api_bench.CHANNEL


def before(commit: str) -> types.ModuleType:
    """queries.py as `commit` had it, as a module of its own."""
    source = subprocess.run(["git", "show", f"{commit}:services/store/queries.py"], capture_output=True, text=True,
                            check=True, cwd=ROOT).stdout
    module = types.ModuleType("queries_before")
    sys.modules[module.__name__] = module  # its dataclasses look their module up
    exec(compile(source, "queries_before.py", "exec"), module.__dict__)  # noqa: S102 (our own file)
    return module


def cases(q: Any, n: int) -> dict[str, tuple[str, list[Any]]]:
    m = n // 2
    return {
        "user by id, with grades": (f"SELECT u.state, {q.GRADES} FROM users u WHERE u.id = $1 AND u.channel_id = $2",
                                    [member_user_id(CH, f"m{m // 50 * 50}"), CH]),
        "users?email=": q.search_sql(CH, q.UserFilter(email=f"u{m}@example.com"), limit=50),
        "list page of 50": q.search_sql(CH, q.UserFilter(), limit=50),
        "members page of 50 after the anonymous": q.search_sql(CH, q.UserFilter(type="member"), limit=50),
        "grade=gold page": q.search_sql(CH, q.UserFilter(grade="gold"), limit=50),
        "q walk, 11k matches": q.search_sql(CH, q.UserFilter(q="u2"), limit=50),
        "q walk, every member": q.search_sql(CH, q.UserFilter(q="u"), limit=50),
    }


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--before", default="c1f18af")
    p.add_argument("--schema", default=f"bench_idreads_{os.getpid()}")
    p.add_argument("--keep", action="store_true", help="keep the schema (and reuse it when it exists)")
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or api_bench.LOCAL_POSTGRES)
    a = p.parse_args()
    n = a.users
    pool = await create_pool(a.database_url, a.schema, max_size=1)
    filled = await pool.fetchval("SELECT count(*) FROM users") >= n
    await pool.close()
    if not filled:
        await api_bench.fill(a.database_url, a.schema, n)
    pool = await create_pool(a.database_url, a.schema, max_size=1)
    try:
        if not filled:
            await pool.execute(
                """INSERT INTO users (id, channel_id, rev, type, deleted, blocked, masked, last_seen_at, updated_at, state)
                   SELECT 'anon' || g, $1, 1, 'anonymous', false, false, false, g, g, '{}' FROM generate_series(1, $2::int) g""",
                CH, n // 2)
            await pool.execute("INSERT INTO grades VALUES ($1, 'gold', 'yellow'), ($1, 'silver', 'grey'), ($1, 'bronze', 'brown')", CH)
            await pool.execute("""INSERT INTO grade_holders SELECT $1, (ARRAY['gold','silver','bronze'])[1 + g % 3], 'email',
                                         'u' || g || '@example.com' FROM generate_series(0, $2::int - 1, 50) g""", CH, n)
            await pool.execute("""INSERT INTO grade_holders SELECT $1, (ARRAY['gold','silver','bronze'])[1 + g % 3], 'memberId',
                                         'm' || g FROM generate_series(0, $2::int - 1, 70) g""", CH, n)
            await pool.execute("CREATE INDEX IF NOT EXISTS identities_user ON identities (user_id)")  # the earlier reads'
            for t in ("users", "identities", "grades", "grade_holders"):
                await pool.execute(f"VACUUM ANALYZE {t}")
        variants = {"before": cases(before(a.before), n), "now": cases(queries, n)}
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")

            def cpu() -> int:
                return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])

            spent: dict[tuple[str, str], list[float]] = {}
            answers: dict[tuple[str, str], Any] = {}
            for _ in range(a.rounds):
                for name in variants["now"]:
                    for variant, reads in variants.items():
                        sql, args = reads[name]
                        answers[variant, name] = await conn.fetch(sql, *args)  # warm
                        c0 = cpu()
                        for _ in range(a.reps):
                            await conn.fetch(sql, *args)
                        spent.setdefault((variant, name), []).append((cpu() - c0) / 1e3 / a.reps)
            for name in variants["now"]:
                same = [tuple(r) for r in answers["before", name]] == [tuple(r) for r in answers["now", name]]
                print(f"{name:42s} " + "  ".join(
                    f"{v}: " + " / ".join(f"{x:,.0f}" for x in spent[v, name]) for v in variants)
                    + f"  µs a read (PostgreSQL){'' if same else '  ANSWERS DIFFER'}")
    finally:
        if not a.keep:
            await pool.execute(f"DROP SCHEMA {a.schema} CASCADE")
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
