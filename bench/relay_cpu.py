"""What the relay costs per `user-changed` of an import: N `created`-sized outbox rows
(bench/import_broker.py's message, each with its own user key, as an import's new users
have) written to the outbox of a fresh schema, then drained by `Relay.publish_once` to
the embedded broker as `unifier run` drains them. Prints CPU µs per message of this
process (the relay's client side: fetch, partition, batch, send, delete) and of the
PostgreSQL backend serving it (read from /proc: run it on the database's machine), per
round, and the same for writing them (`save_outbox`, as a projection batch does); `--profile` prints a cProfile of one more drain. A benchmark, not a test
(docs/decisions.md, "Issue 14, session 12").

    .venv/bin/python bench/relay_cpu.py --rows 20000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.import_broker import CH, values  # noqa: E402
from services.platform.embedded import EmbeddedBroker  # noqa: E402
from services.relay.relay import Relay  # noqa: E402
from services.store.pool import create_pool  # noqa: E402
from services.store.repository import save_outbox  # noqa: E402

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
TOPIC = "bench-relay-user-changed"
FILL_BATCH = 1000  # messages a projection batch writes (an import batch's; live ones are fewer)


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


async def _fill(pool, rows: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """The outbox as the projection writes it: `save_outbox` per batch of `FILL_BATCH`
    (each in a transaction of its own). CPU µs a message of this process and of the
    backend, for the writing alone."""
    value = values("user-changed, one a row", 1)[0]
    records = [(TOPIC, f"{CH}:u_{uuid.uuid4().hex}", value) for _ in range(rows)]
    async with pool.acquire() as conn:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        c0, b0 = time.process_time(), _cpu(backend)
        for at in range(0, rows, FILL_BATCH):
            async with conn.transaction():
                await save_outbox(conn, records[at:at + FILL_BATCH])
        return (time.process_time() - c0) / rows * 1e6, (_cpu(backend) - b0) / rows * 1e6


async def _drain(relay: Relay, pool, rows: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    async with pool.acquire() as conn:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        c0, b0 = time.process_time(), _cpu(backend)
        sent = 0
        while sent < rows:
            sent += await relay.publish_once(conn)
        return (time.process_time() - c0) / rows * 1e6, (_cpu(backend) - b0) / rows * 1e6


async def main(args: argparse.Namespace) -> None:
    schema = f"bench_relay_{secrets.token_hex(3)}"
    pool = await create_pool(args.database_url, schema, min_size=1, max_size=1)
    try:
        with tempfile.TemporaryDirectory() as work:
            async with EmbeddedBroker(Path(work) / "broker") as broker:
                relay = Relay(pool, broker.bootstrap, f"bench-{schema}")
                await relay.producer.start()
                try:
                    await _fill(pool, 100)
                    await _drain(relay, pool, 100)  # metadata, connections
                    for r in range(args.rounds):
                        w_client, w_backend = await _fill(pool, args.rows)
                        client, backend = await _drain(relay, pool, args.rows)
                        print(f"round {r + 1}: relay {client:.1f} µs, PostgreSQL {backend:.1f} µs a message;"
                              f" writing them {w_client:.1f} µs, PostgreSQL {w_backend:.1f} µs"
                              f" (load {os.getloadavg()[0]:.1f})")
                    if args.profile:
                        await _fill(pool, args.rows)
                        prof = cProfile.Profile()
                        prof.enable()
                        await _drain(relay, pool, args.rows)
                        prof.disable()
                        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
                finally:
                    await relay.producer.stop()
    finally:
        await pool.execute(f"DROP SCHEMA {schema} CASCADE")
        await pool.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or LOCAL_POSTGRES)
    asyncio.run(main(p.parse_args()))
