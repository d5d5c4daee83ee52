"""Issue 11, item 5: hostile records through the real broker into the real service and
PostgreSQL (the generator: tests/support/fuzz.py).

Passes only when, after every record and a sentinel per channel: the service is still
running; every record is either applied (its eventId in the inbox) or dead-lettered
with a code and a reason (a letter naming its topic, partition and offset); and the
sentinels, sent after everything, are applied.

`make test` runs a fast seed (FUZZ_RECORDS=150, a fixed FUZZ_SEED); `make fuzz` runs a
longer one with a fresh seed (printed: set FUZZ_SEED to replay a failure).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from contracts.topics import Topics
from services.platform.config import Settings
from services.platform.topics import ensure_topics
from services.store.queries import find_user
from tests.support import fuzz
from tests.support.infra import wait_for
from tests.support.service import read_topic, running_service

pytestmark = pytest.mark.integration

RECORDS = int(os.environ.get("FUZZ_RECORDS", "150"))
SEED = int(os.environ.get("FUZZ_SEED", "20261130"))


async def test_hostile_records_never_stop_the_service_and_each_is_applied_or_dead_lettered(
    settings: Settings, pool: asyncpg.Pool,
) -> None:
    print(f"fuzz: {RECORDS} records, FUZZ_SEED={SEED}")
    await pool.execute(
        "INSERT INTO channels (channel_id, member_hash_secret) VALUES ($1, $2)", "fz_hashed", fuzz.HASH_SECRET,
    )
    await pool.execute(
        """INSERT INTO channels (channel_id, mu_limit, field_types) VALUES ($1, 3, '{"profile.points": "number"}')""",
        "fz_limited",
    )
    gen = fuzz.Generator(SEED)
    hostile = [gen.record() for _ in range(RECORDS)]
    topics = Topics(settings.topic_prefix)
    topic_of = {"sdk-events": topics.sdk_events, "commands": topics.commands, "import-rows": topics.import_rows}
    assert settings.kafka_bootstrap is not None
    await ensure_topics(settings.kafka_bootstrap, settings.topic_prefix, settings.partitions)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=False, linger_ms=5,
                                max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        async with running_service(settings) as service:
            sent = await asyncio.gather(*[
                await producer.send(topic_of[h.kind], h.value, key=h.key) for h in hostile
            ])
            sentinels = [
                {"eventId": f"sentinel-{ch}", "type": "boot", "channelId": ch, "occurredAt": fuzz.T0,
                 "veilId": f"sentinel-{ch}", "platform": "web"}
                for ch in fuzz.CHANNELS
            ]
            for s in sentinels:
                await (await producer.send(topics.sdk_events, orjson.dumps(s), key=s["channelId"].encode()))
            ends: dict[tuple[str, int], int] = {}
            for meta in sent:
                ends[(meta.topic, meta.partition)] = max(ends.get((meta.topic, meta.partition), 0), meta.offset + 1)
            await wait_for(lambda: _consumed(pool, ends), timeout=120, message="every hostile record consumed")
            for ch in fuzz.CHANNELS:
                await wait_for(lambda ch=ch: find_user(pool, ch, "veil", f"sentinel-{ch}"), timeout=60,
                               message=f"the sentinel of {ch} applied")
            await wait_for(lambda: _outbox_empty(pool), timeout=60, message="every dead letter relayed")
            assert not service.done(), "the service stopped"
    finally:
        await producer.stop()

    letters = [v for _, v in await read_topic(settings, topics.dead_letter) if v is not None]
    lettered = {(v["sourceTopic"], v["partition"], v["offset"]): v for v in letters}
    applied = {(r[0], r[1]) for r in await pool.fetch("SELECT channel_id, event_id FROM applied_events")}
    lost: list[tuple[str, Any]] = []
    outcomes: Counter[str] = Counter()
    for h, meta in zip(hostile, sent, strict=True):
        letter = lettered.get((meta.topic, meta.partition, meta.offset))
        if letter is not None:
            assert letter["error"]["code"] and letter["error"]["message"], letter
            outcomes[letter["error"]["code"]] += 1
        elif h.ident is not None and h.ident in applied:
            outcomes["applied"] += 1
        else:
            lost.append((h.mutation, (h.value or b"")[:200]))
    print("fuzz outcomes:", dict(sorted(outcomes.items())))
    print("fuzz mutations:", dict(sorted(Counter(h.mutation for h in hostile).items())))
    assert not lost, f"records neither applied nor dead-lettered (FUZZ_SEED={SEED}): {lost[:5]}"
    assert outcomes["applied"] > 0 and sum(outcomes.values()) == RECORDS


async def _consumed(pool: asyncpg.Pool, ends: dict[tuple[str, int], int]) -> bool:
    stored = {(r[0], r[1]): r[2] for r in await pool.fetch("SELECT topic, partition, next_offset FROM inbox_offsets")}
    return all(stored.get(p, 0) >= end for p, end in ends.items())


async def _outbox_empty(pool: asyncpg.Pool) -> bool:
    return not await pool.fetchval("SELECT count(*) FROM outbox")
