"""The embedded broker's (tansu's) CPU per record by how it is read, at a paced rate.

A producer sends `--rate` records/s (a burst every 10 ms, as projection_bench's latency
run) to 12 partitions of the sdk topic for `--seconds`; each mode adds consumers, and the
broker's CPU per record is printed (docs/decisions.md, "Issue 14, session 9: latency").
A mode is `produce`, or `produce` plus `+proj<wait>[:<min bytes>[:sdk]]` (a consumer of
the three inbound topics, as the projection's, with that fetch_max_wait_ms and
fetch_min_bytes; `sdk`: the sdk topic alone) and/or `+reader` (projection_bench's
user-changed reader: 12 partitions, 5 ms wait); `idle+…` sends nothing.

    .venv/bin/python bench/broker_fetch_cost.py produce produce+proj50 produce+proj100:131072
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402

from contracts.topics import Topics  # noqa: E402
from services.platform.embedded import EmbeddedBroker  # noqa: E402
from services.platform.topics import ensure_topics  # noqa: E402

PARTITIONS = 12
TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TCK


async def consumer(bootstrap: str, tps: list[TopicPartition], wait_ms: int, min_bytes: int) -> tuple[AIOKafkaConsumer, list[int]]:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=wait_ms, fetch_min_bytes=min_bytes,
                         max_partition_fetch_bytes=4 << 20, fetch_max_bytes=32 << 20)
    await c.start()
    c.assign(tps)
    fetches = [0]
    send = c._fetcher._proc_fetch_request  # count the fetch requests

    async def counted(*a: Any, **kw: Any) -> Any:
        fetches[0] += 1
        return await send(*a, **kw)

    c._fetcher._proc_fetch_request = counted  # type: ignore[method-assign]
    return c, fetches


async def run(mode: str, rate: int, seconds: float) -> str:
    with tempfile.TemporaryDirectory(prefix="bench-tansu-") as tmp:
        broker = EmbeddedBroker(Path(tmp))
        bootstrap = await broker.start()
        try:
            topics = Topics("x.")
            await ensure_topics(bootstrap, "x.", PARTITIONS)
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks=1, linger_ms=1)
            await producer.start()
            stop = asyncio.Event()
            readers: list[tuple[AIOKafkaConsumer, list[int]]] = []
            for part in mode.split("+")[1:]:
                if part.startswith("proj"):
                    wait, min_bytes, only = ([*part[4:].split(":"), "", ""])[:3]
                    names = [topics.sdk_events] if only == "sdk" else sorted(topics.inbound)
                    tps = [TopicPartition(t, p) for t in names for p in range(PARTITIONS)]
                    readers.append(await consumer(bootstrap, tps, int(wait or 50), int(min_bytes or 1)))
                elif part == "reader":
                    tps = [TopicPartition(topics.user_changed, p) for p in range(PARTITIONS)]
                    readers.append(await consumer(bootstrap, tps, 5, 1))

            async def consume(c: AIOKafkaConsumer) -> None:
                while not stop.is_set():
                    await c.getmany(timeout_ms=200, max_records=5000)

            tasks = [asyncio.create_task(consume(c)) for c, _ in readers]
            await asyncio.sleep(1.0)
            fetched0 = [f[0] for _, f in readers]
            cpu0, t0 = cpu_s(broker.pid), time.perf_counter()
            per_burst, n = max(1, rate // 100), 0
            if mode.startswith("idle"):
                await asyncio.sleep(seconds)
            else:
                for k in range(int(seconds * 100)):
                    delay = t0 + k * 0.01 - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    for _ in range(per_burst):
                        p = (n * 7) % PARTITIONS
                        await producer.send(topics.sdk_events, value=b"x" * 400, key=b"c%d" % p, partition=p)
                        n += 1
                await producer.flush()
            cpu1, t1 = cpu_s(broker.pid), time.perf_counter()
            stop.set()
            await asyncio.gather(*tasks)
            for c, _ in readers:
                await c.stop()
            await producer.stop()
            fetches = sum(f[0] for _, f in readers) - sum(fetched0)
            per = f"{1e6 * (cpu1 - cpu0) / n:6.1f} µs/record" if n else "idle"
            return f"{mode:<28} broker {per}, {(cpu1 - cpu0) / (t1 - t0):.2f} cores; {fetches / (t1 - t0):.0f} fetches/s"
        finally:
            await broker.stop()


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("modes", nargs="+")
    p.add_argument("--rate", type=int, default=5000)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}")
    for mode in args.modes:
        print(asyncio.run(run(mode, args.rate, args.seconds)), flush=True)


if __name__ == "__main__":
    cli()
