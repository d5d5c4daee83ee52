"""A rebuild's identities COPY, rows in the users' order against rows in the primary key's
order (issue 14, session 15; services/replay/resident.py `finish`): the server's CPU and
the COPY's wall time, the baseline (users' order, as before) printed in the same run.

    .venv/bin/python bench/replay_identity_order.py [--users 36000] [--rounds 3]

A scratch schema on DATABASE_URL's server (or the local one) with the identities table
as schema.sql has it (its key and identities_one_owner, its only indexes since session 21),
made anew for each COPY; ~1.8 identities a user (a veil each, an e-mail for half, a
memberId for a third), as replay_bench's workload. Also the Python sort's CPU."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from pathlib import Path

import asyncpg

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
COLUMNS = ("channel_id", "kind", "value", "user_id", "qualified")


def _rows(users: int) -> list[tuple[str, str, str, str, bool]]:
    rnd = random.Random(1)
    rows = []
    for _ in range(users):
        uid, ch = f"v{rnd.getrandbits(64):016x}", f"ch_{rnd.randrange(24):03d}"
        rows.append((ch, "veil", f"{rnd.getrandbits(80):020x}", uid, True))
        if rnd.random() < 0.5:
            rows.append((ch, "email", f"user{rnd.getrandbits(40)}@example.jp", uid, False))
        if rnd.random() < 0.3:
            rows.append((ch, "member", f"m{rnd.getrandbits(40)}", uid, True))
    rows.sort(key=lambda r: r[3])  # the users' order, as a build wrote them before
    return rows


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=36_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rows = _rows(args.users)
    started = time.process_time()
    ordered = sorted(rows)
    print(f"{len(rows):,} rows; sorting them here: {time.process_time() - started:.3f} s of CPU")
    conn = await asyncpg.connect(os.environ.get("DATABASE_URL", LOCAL_POSTGRES))
    schema = f"replay_identity_order_{os.getpid()}"
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.execute(f'SET search_path = "{schema}"')
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    tick = os.sysconf("SC_CLK_TCK")

    def server_cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    try:
        for _ in range(args.rounds):
            for name, data in (("users' order (before)", rows), ("key order", ordered)):
                await conn.execute("DROP TABLE IF EXISTS identities")
                await conn.execute(
                    """CREATE TABLE identities (channel_id text NOT NULL, kind text NOT NULL, value text COLLATE "C" NOT NULL,
                           user_id text NOT NULL, qualified boolean NOT NULL, PRIMARY KEY (channel_id, kind, value, user_id));
                       CREATE UNIQUE INDEX identities_one_owner ON identities (channel_id, kind, value)
                           WHERE kind IN ('veil', 'member')""")
                cpu, wall = server_cpu(), time.perf_counter()
                await conn.copy_records_to_table("identities", records=data, columns=COLUMNS)
                print(f"{name:22}: COPY wall {time.perf_counter() - wall:.3f} s, server CPU {server_cpu() - cpu:.2f} s")
    finally:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
