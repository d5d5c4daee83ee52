"""The relay's per-message work in `Relay._send` alone, without broker or database: packs
of `created`-sized messages (bench/import_broker.py's value), each with a key never seen
(an import's new users), appended to record batches per partition as a round does;
the batches are built but not sent (`_queue` stubbed). Prints CPU µs a message, the
best of `--rounds`. For deterministic counts run it under callgrind twice and take the
difference (startup and set-up are the same in both):

    valgrind --tool=callgrind .venv/bin/python bench/relay_send_cpu.py --messages 20000 --rounds 1
    valgrind --tool=callgrind .venv/bin/python bench/relay_send_cpu.py --messages 40000 --rounds 1

(docs/decisions.md, "Issue 14, session 15: ... (helper "import")". A benchmark, not a test.)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.import_broker import CH, values  # noqa: E402
from services.relay.relay import Relay  # noqa: E402

TOPIC = "bench-relay-user-changed"
PACK = 500  # messages a pack (an outbox row of an import batch)


async def main(args: argparse.Namespace) -> None:
    relay = Relay(None, "127.0.0.1:1", "lock")  # type: ignore[arg-type]  # no connection is made

    async def partitions_for(_topic: str) -> set[int]:
        return set(range(12))

    async def queue(open_: list[Any], topic: str, partition: int) -> Any:
        batch, _append, count, first = open_
        batch._relative_offset = count
        return (None, topic, partition, first, count)

    relay.producer.partitions_for = partitions_for  # type: ignore[method-assign]
    relay._queue = queue  # type: ignore[method-assign]
    value = values("user-changed, one a row", 1)[0]
    best = float("inf")
    for _ in range(args.rounds):
        rows = []
        for at in range(0, args.messages, PACK):
            n = min(PACK, args.messages - at)
            rows.append((at, TOPIC, None, None, n, [f"{CH}:u_{uuid.uuid4().hex}" for _ in range(n)], [value] * n))
        relay._partitions_of_key.clear()
        t0 = time.process_time()
        await relay._send(rows, {})  # type: ignore[arg-type]
        best = min(best, time.process_time() - t0)
    print(f"Relay._send: {best / args.messages * 1e6:.2f} µs a message ({args.messages} messages, {len(value)} bytes each)")
    await relay.producer.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(p.parse_args()))
