"""A rebuild's reading of the log alone: `LogReader.merged` over a published workload,
read `--reads` times, process CPU µs per record of each read (the best is printed).

Starts an embedded broker (or uses KAFKA_BOOTSTRAP_SERVERS), publishes `--events` mixed
facts (services/replay/workload.py, as bench/replay_bench.py does) on 12 partitions a
topic, then reads them. Under callgrind, the difference of two runs that differ only in
`--reads` is what the extra reads cost, whatever the publishing:

    for r in 1 3; do PYTHONHASHSEED=0 UNIFIER_CORE=compiled valgrind --tool=callgrind \\
        --callgrind-out-file=/tmp/read$r.cg .venv/bin/python bench/replay_read_cpu.py --events 20000 --reads $r; done

`--parse` parses each chunk as the projection does (`parse_records`) as well.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from contracts.topics import Topics  # noqa: E402
from services.platform import gc_tuning  # noqa: E402
from services.platform.embedded import EmbeddedBroker  # noqa: E402
from services.platform.topics import ensure_topics  # noqa: E402
from services.projection.batch import parse_records  # noqa: E402
from services.replay import workload  # noqa: E402
from services.replay.log import LogReader  # noqa: E402


async def _read(bootstrap: str, topics: Topics, parse: bool) -> tuple[int, float]:
    async with LogReader(bootstrap, topics.inbound) as reader:
        cpu, n = time.process_time(), 0
        async for chunk in reader.merged(10_000):
            n += len(chunk)
            if parse:
                parse_records(topics, chunk)
        return n, time.process_time() - cpu


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--reads", type=int, default=3)
    p.add_argument("--parse", action="store_true")
    args = p.parse_args()
    gc_tuning.tune()
    with tempfile.TemporaryDirectory() as work:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        broker = None
        if not bootstrap:
            broker = EmbeddedBroker(Path(work))
            await broker.start()
            bootstrap = broker.bootstrap
        try:
            prefix = f"readbench{secrets.token_hex(3)}."
            topics = Topics(prefix)
            await ensure_topics(bootstrap, prefix, 12)
            await workload.publish(bootstrap, topics, workload.mixed_facts(args.events, channels=48, rounds=10))
            best = None
            for _ in range(args.reads):
                n, spent = await _read(bootstrap, topics, args.parse)
                if n != args.events:
                    raise RuntimeError(f"read {n} of {args.events}")
                micros = 1e6 * spent / n
                best = micros if best is None else min(best, micros)
            print(f"{args.events:,} records, {args.reads} reads: best {best:.2f} µs CPU per record")
        finally:
            if broker is not None:
                await broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
