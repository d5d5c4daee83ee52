"""What PostgreSQL does per import row, statement by statement: member rows in
`import.rows` chunks through `apply_batch` with resident users (bench/import_cpu.py's
rows and batches, as `unifier run` applies them), each statement's backend CPU and wall
time per row, and the WAL the batches wrote per row. pg_stat_statements is not loaded on
these machines, so the backend's CPU is read around each call from
/proc/<pid>/schedstat (nanoseconds; run it on the database's machine).

`--drop` prices indexes: each variant (separated by '/') is a comma-separated list of
indexes dropped right after the schema is created (`-` drops none), and the rounds
alternate the variants so that a shared machine's load falls on all of them. The
service does not run without these indexes (they serve reads); the figures say what
each costs an import row.

    .venv/bin/python bench/import_statements.py                  # 6 batches of 5,000 rows
    .venv/bin/python bench/import_statements.py --rounds 3 --drop '-/users_listing,users_name_key_prefix'

A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))

import asyncpg  # noqa: E402
import import_cpu  # noqa: E402

from services.platform import gc_tuning  # noqa: E402

_CALLS = ("fetch", "fetchval", "fetchrow", "execute", "executemany", "copy_records_to_table", "copy_to_table")


def _schedstat_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


class Watch:
    """asyncpg's calls wrapped: per statement (its first words), calls, backend ns, wall s."""

    def __init__(self) -> None:
        self.backend: int | None = None
        self.stats: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
        self._orig: dict[str, Callable[..., Any]] = {}

    def install(self) -> None:
        for name in _CALLS:
            orig = self._orig[name] = getattr(asyncpg.connection.Connection, name)
            setattr(asyncpg.connection.Connection, name, self._wrap(name, orig))

    def uninstall(self) -> None:
        for name, orig in self._orig.items():
            setattr(asyncpg.connection.Connection, name, orig)

    def _wrap(self, name: str, orig: Callable[..., Any]) -> Callable[..., Any]:
        watch = self

        async def wrapped(self: asyncpg.Connection, *args: Any, **kwargs: Any) -> Any:
            what = args[0] if args and isinstance(args[0], str) else ""
            key = f"{name}: {' '.join(what.split())[:80]}"
            pid = watch.backend
            ns, t = (_schedstat_ns(pid) if pid else 0), time.perf_counter()
            try:
                return await orig(self, *args, **kwargs)
            finally:
                st = watch.stats[key]
                st[0] += 1
                st[2] += time.perf_counter() - t
                if pid:
                    st[1] += _schedstat_ns(pid) - ns

        return wrapped


async def one(database_url: str, drop: list[str], rows: int, batches: int) -> tuple[Watch, int, float, float]:
    """(the watch, rows, process and backend CPU µs per row, WAL bytes per row) of one run."""
    watch = Watch()
    wal: list[int] = []
    create_pool = import_cpu.create_pool

    async def pool_with_probe(*args: Any, **kwargs: Any) -> asyncpg.Pool:
        pool = await create_pool(*args, **kwargs)
        for index in drop:
            await pool.execute(f"DROP INDEX {index}")
        watch.backend = await pool.fetchval("SELECT pg_backend_pid()")
        wal.append(await pool.fetchval("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn"))
        watch.install()
        return pool

    import_cpu.create_pool = pool_with_probe
    try:
        cpu, db, *_ = await import_cpu.one(database_url, "now", rows, batches)
    finally:
        watch.uninstall()
        import_cpu.create_pool = create_pool
    end = await _wal_now(database_url)
    n = rows * (batches + 1)  # the watch sees the warm-up batch too
    return watch, n, cpu, (end - wal[0]) / n if wal else 0.0


async def _wal_now(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn"))
    finally:
        await conn.close()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=5_000, help="rows per batch")
    p.add_argument("--batches", type=int, default=6, help="timed batches per run")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--drop", default="-", help="variants separated by '/', each indexes separated by ',' ('-': none)")
    p.add_argument("--top", type=int, default=6, help="statements shown per run")
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or import_cpu.LOCAL_POSTGRES)
    args = p.parse_args()
    gc_tuning.tune()  # as `unifier run`
    variants = [[i for i in v.split(",") if i and i != "-"] for v in args.drop.split("/")]
    print(f"import rows through apply_batch, {args.batches + 1} x {args.rows} rows a run (load {os.getloadavg()[0]:.1f})")
    for r in range(args.rounds):
        for drop in variants:
            watch, n, cpu, wal_per_row = await one(args.database_url, drop, args.rows, args.batches)
            total = sum(s[1] for s in watch.stats.values())
            print(f"round {r + 1}, dropped {','.join(drop) or 'nothing'}: backend {total / 1e3 / n:.1f} µs/row "
                  f"(statements), WAL {wal_per_row:,.0f} B/row, service {cpu:.1f} µs/row")
            for key, (calls, ns, wall) in sorted(watch.stats.items(), key=lambda kv: -kv[1][1])[: args.top]:
                print(f"  {ns / 1e3 / n:7.2f} µs/row backend {wall * 1e6 / n:7.2f} wall {int(calls):4d} calls  {key}")


if __name__ == "__main__":
    asyncio.run(main())
