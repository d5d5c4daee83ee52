"""What the broker and a Kafka client pay per import row, by record shape: the same rows
of import_bench.py's member file published and consumed back on the embedded broker, as
one `import.row` record each (contract 1.2.0) and as `import.rows` chunks (1.3.0); and,
for comparison, one `user-changed`-sized message per row (what the relay publishes for
every row that creates a user). CPU µs per row of the broker process and of this
process (the producing and consuming client), measured in the same run, alternating.
A benchmark, not a test (docs/decisions.md, "Issue 14, session 9").

    .venv/bin/python bench/import_broker.py --rows 50000 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import psutil  # noqa: E402
from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402

from services.importer.producer import ImportProducer  # noqa: E402
from services.importer.run import CHUNK_ROWS  # noqa: E402
from services.platform.embedded import EmbeddedBroker  # noqa: E402

CH, IMP, T0 = "bench_ch", "imp_bench", 1_767_225_600_000


def _row(n: int) -> dict[str, object]:
    return {"rowNumber": n, "cells": {
        "memberId": f"M{n:08d}", "name": "山田 太郎", "profile.email": f"user{n}@example.com", "unsubscribeEmail": "false",
        "unsubscribeTexting": "true", "profile.plan": "gold", "profile.points": str(n % 1000),
        "profile.birthday": "1990-05-17", "profile.note": "a note about this member"}}


def values(shape: str, rows: int) -> list[bytes]:
    head = {"channelId": CH, "occurredAt": T0, "importId": IMP}
    if shape == "one-row records":
        return [orjson.dumps({"eventId": f"{IMP}:{n}", "type": "import.row", **head, **_row(n)}) for n in range(2, rows + 2)]
    if shape == "chunks":
        return [
            orjson.dumps({"eventId": f"{IMP}:rows:{a}", "type": "import.rows", **head,
                          "rows": [_row(n) for n in range(a, min(a + CHUNK_ROWS, rows + 2))]})
            for a in range(2, rows + 2, CHUNK_ROWS)
        ]
    # a user-changed message of a created member, about its size (~1 KB)
    user = {"id": "u_" + "0" * 32, "channelId": CH, "type": "member", "memberId": "M00000002", "name": "山田 太郎",
            "tags": [], "userImportTags": ["bench"], "profile": {"email": "user2@example.com", "plan": "gold",
            "points": 2, "birthday": 642902400000, "note": "a note about this member"}, "qualified": [],
            "unsubscribeEmail": False, "unsubscribeTexting": True, "blocked": False, "masked": False, "language": None,
            "city": None, "country": None, "sessionsCount": 0, "lastSeenAt": None, "createdAt": T0, "updatedAt": T0,
            "web": {"sessionsCount": 0, "lastSeenAt": None}, "mobile": {"sessionsCount": 0, "lastSeenAt": None},
            "deliveredCampaigns": [], "mergedUserIds": []}
    msg = {"eventId": "0" * 36, "channelId": CH, "userId": user["id"], "version": 1, "change": "created",
           "changedKeys": ["memberId", "name", "profile.email", "profile.plan"], "causationId": f"{IMP}:2",
           "occurredAt": T0, "user": user}
    one = orjson.dumps(msg)
    return [one] * rows


async def run(bootstrap: str, broker: psutil.Process, shape: str, rows: int, tag: str) -> tuple[float, float]:
    topic = f"bench-{tag}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()
    vals = values(shape, rows)
    me = psutil.Process()
    b0, c0 = sum(broker.cpu_times()[:2]), time.process_time()
    producer = ImportProducer(bootstrap, topic, CH)
    await producer.start()
    for v in vals:
        if not producer.add(v):
            await producer.ship()
            producer.add(v)
    await producer.flush()
    await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    got = 0
    while got < len(vals):
        for msgs in (await consumer.getmany(timeout_ms=200, max_records=5000)).values():
            got += len(msgs)
    await consumer.stop()
    del me
    return (sum(broker.cpu_times()[:2]) - b0) / rows * 1e6, (time.process_time() - c0) / rows * 1e6


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    shapes = ("one-row records", "chunks", "user-changed, one a row")
    seen: dict[str, list[tuple[float, float]]] = {s: [] for s in shapes}
    with tempfile.TemporaryDirectory() as work:
        async with EmbeddedBroker(Path(work) / "broker") as broker:
            proc = psutil.Process(broker.pid)
            for r in range(args.rounds):
                for i, shape in enumerate(shapes):
                    seen[shape].append(await run(broker.bootstrap, proc, shape, args.rows, f"{r}-{i}"))
    print(f"{args.rows:,} rows published and consumed back, CPU µs per row (load {psutil.getloadavg()[0]:.1f})")
    for shape, runs in seen.items():
        print(f"  {shape:<26} broker {' / '.join(f'{b:.1f}' for b, _ in runs):<16}"
              f" client (produce + consume) {' / '.join(f'{c:.1f}' for _, c in runs)}")


if __name__ == "__main__":
    asyncio.run(main())
