"""Drive the real service in-process: start it, publish facts, read what it publishes."""

from __future__ import annotations

import asyncio
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


async def read_topic(settings: Settings, topic: str, timeout_ms: int = 500) -> list[tuple[str | None, Any]]:
    """Everything on `topic` now, as (key, decoded value or None for a tombstone)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, group_id=None)
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
        while True:
            batch = await consumer.getmany(timeout_ms=timeout_ms, max_records=10_000)
            if not batch:
                return out
            for msgs in batch.values():
                for m in msgs:
                    out.append((m.key.decode() if m.key else None, None if m.value is None else orjson.loads(m.value)))
    finally:
        await consumer.stop()
