"""CPU per read inside the API process, without HTTP: the app called as ASGI, one request
after another, under uvloop, against a schema filled by `bench/api_bench.py --schema S
--fill-only`. Compares, in one run, the hot path (services/api/hot.py) with the routes
(the same requests with a parameter the routes ignore, which the hot path leaves to
them). Process CPU per request; a benchmark, not a test.

    .venv/bin/python bench/read_cpu.py --schema bench_api_reads --users 1000000
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from services.api.app import create_app  # noqa: E402
from services.domain.ids import member_user_id  # noqa: E402
from services.platform import gc_tuning  # noqa: E402
from services.platform.config import Settings  # noqa: E402
from services.store import api_keys  # noqa: E402
from services.store.pool import create_pool  # noqa: E402

CHANNEL = "bench"  # api_bench.py's


async def main(args: argparse.Namespace) -> None:
    os.environ.update(DATABASE_URL=args.database_url, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9", UNIFIER_DB_SCHEMA=args.schema)
    settings = Settings.from_env()
    app = create_app(settings)  # its lifespan (Kafka) is not started: reads need only the pools
    if args.gc_tuning:
        gc_tuning.tune()  # as `unifier api` does
    app.state.pool = await create_pool(args.database_url, args.schema, max_size=2, migrate=False)
    app.state.hot_pool = await create_pool(args.database_url, args.schema, max_size=2, migrate=False,
                                           generic_plans=True)
    key, _ = await api_keys.create_key(app.state.pool, "read", None, f"read-cpu-{secrets.token_hex(3)}")
    headers = [(b"host", b"bench"), (b"authorization", f"Bearer {key}".encode())]
    rng = random.Random(11)

    async def call(path: str, query: bytes) -> None:
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": query, "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "state": {},
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        if sent[0]["status"] != 200:
            raise RuntimeError(f"{path}?{query.decode()}: {sent[0]['status']}")

    def request(kind: str) -> tuple[str, bytes]:
        n = rng.randrange(args.users)
        routed = kind.endswith("routes")
        if kind.startswith("by_id"):
            return f"/v1/channels/{CHANNEL}/users/{member_user_id(CHANNEL, f'm{n}')}", b"via=routes" if routed else b""
        return f"/v1/channels/{CHANNEL}/users", f"email=u{n}%40example.com".encode() + (b"&limit=50" if routed else b"")

    try:
        for kind in tuple(args.kinds.split(",")) * args.rounds:
            for _ in range(200):  # warm: statements prepared, generic plans chosen
                await call(*request(kind))
            cpu = time.process_time()
            for _ in range(args.requests):
                await call(*request(kind))
            print(f"{kind:13s} {(time.process_time() - cpu) * 1e6 / args.requests:6.0f} µs of CPU per read", flush=True)
    finally:
        await app.state.hot_pool.close()
        await app.state.pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--schema", required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--gc-tuning", type=int, default=1, help="1 (default): the collector as `unifier api` sets it")
    parser.add_argument("--kinds", default="by_id_hot,by_id_routes,email_hot,email_routes")
    uvloop.run(main(parser.parse_args()))
