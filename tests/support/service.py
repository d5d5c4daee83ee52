"""Drive the real service in-process: start it, publish facts, read what it publishes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from contracts.topics import Topics
from services.platform.config import Settings
from services.platform.topics import ensure_topics
from services.runtime.service import run_service


@asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[asyncio.Task[None]]:
    """`unifier run` as a task on this loop; stopped (batch in flight finished) at exit."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_service(settings, stop, ready=ready))
    await asyncio.wait([task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raise the start-up failure
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


class Publisher:
    """Publishes inbound facts keyed by channel, as SDK backends do (docs/contract.md)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=False, linger_ms=1)

    async def __aenter__(self) -> Publisher:
        assert self.settings.kafka_bootstrap is not None
        await ensure_topics(self.settings.kafka_bootstrap, self.settings.topic_prefix, self.settings.partitions)
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    async def send(self, topic: str, events: Iterable[dict[str, Any] | bytes], key: str | None = None) -> None:
        futures = []
        for event in events:
            value = event if isinstance(event, bytes) else orjson.dumps(event)
            k = key if key is not None else (event.get("channelId") if isinstance(event, dict) else None)
            futures.append(await self.producer.send(topic, value, key=k.encode() if k else None))
        await asyncio.gather(*futures)

    async def sdk(self, *events: dict[str, Any]) -> None:
        await self.send(self.topics.sdk_events, events)

    async def command(self, *events: dict[str, Any]) -> None:
        await self.send(self.topics.commands, events)


async def read_topic(settings: Settings, topic: str, timeout: float = 60.0) -> list[tuple[str | None, Any]]:  # noqa: ASYNC109
    """Everything on `topic` now, as (key, decoded value or None for a tombstone).

    Each partition is read up to the high watermark its fetch responses carry (exact
    on tansu and on Kafka; tansu's ListOffsets answer lags), so a read ends as soon as
    it has caught up rather than after a guessed quiet time. `timeout` bounds a broker
    that never lets a partition catch up.
    """
    # A short fetch wait: a caught-up partition's empty answer comes at once, not after 0.5 s.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, group_id=None, fetch_max_wait_ms=20
    )
    await consumer.start()
    try:
        await consumer.topics()  # fetch metadata
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[tuple[str | None, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            batch = await consumer.getmany(timeout_ms=50, max_records=10_000)
            for msgs in batch.values():
                for m in msgs:
                    out.append((m.key.decode() if m.key else None, None if m.value is None else orjson.loads(m.value)))
            behind = [tp for tp in tps if not await _caught_up(consumer, tp)]
            if not behind:
                return out
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: partitions {behind} not read to their end within {timeout}s")
    finally:
        await consumer.stop()


async def _caught_up(consumer: AIOKafkaConsumer, tp: TopicPartition) -> bool:
    high = consumer.highwater(tp)  # None until a fetch response for tp arrived
    return high is not None and await consumer.position(tp) >= high
