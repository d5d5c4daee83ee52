"""`unifier run --demo`: a small stream of sample visitors, and a log of what the
service publishes about them, so `make run` shows the whole loop alive."""

from __future__ import annotations

import asyncio
import itertools
import logging

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from contracts.topics import Topics
from services.platform.config import Settings
from services.platform.embedded import running_broker
from services.platform.kafka import client_options, producer_options

log = logging.getLogger("unifier.demo")
CHANNEL = "ch_demo"


def _story(n: int, at: int) -> list[dict[str, object]]:
    """One visitor's journey: browse anonymously, leave an e-mail, log in as a member."""
    veil, member = f"veil-{n}", f"member-{n % 7}"  # members recur: later visitors merge
    base = {"channelId": CHANNEL}
    return [
        {**base, "eventId": f"demo-{n}-1", "type": "boot", "occurredAt": at, "veilId": veil, "platform": "web",
         "device": {"browser": "chrome", "os": "mac"}, "language": "ja", "country": "JP"},
        {**base, "eventId": f"demo-{n}-2", "type": "contact", "occurredAt": at + 1000, "veilId": veil,
         "email": f"visitor{n}@example.jp"},
        {**base, "eventId": f"demo-{n}-3", "type": "login", "occurredAt": at + 2000, "veilId": veil,
         "memberId": member, "name": f"Member {n % 7}"},
    ]


async def run_demo(settings: Settings, stop: asyncio.Event) -> None:
    topics = Topics(settings.topic_prefix)
    # The service started the infrastructure; the demo only talks to its broker. (Opening
    # `infrastructure()` again in this process would take a second handle on the
    # embedded PostgreSQL, and releasing it at the demo's end stops the server under
    # the service's last batch.)
    bootstrap = settings.kafka_bootstrap or await running_broker(settings.data_dir)
    if bootstrap is None:
        log.warning("demo: no broker found; publishing nothing")
        return
    producer = AIOKafkaProducer(**producer_options(bootstrap), enable_idempotence=False)
    consumer = AIOKafkaConsumer(topics.user_changed, **client_options(bootstrap), auto_offset_reset="latest", group_id=None)
    await producer.start()
    await consumer.start()
    watcher = asyncio.create_task(_watch(consumer))
    try:
        for n in itertools.count(1):
            if stop.is_set():
                break
            at = 1_767_225_600_000 + n * 3_600_000  # event time from the story, not the clock
            for event in _story(n, at):
                await producer.send_and_wait(topics.sdk_events, orjson.dumps(event), key=CHANNEL.encode())
            log.info("demo: published visitor %d (boot, contact, login)", n)
            try:
                await asyncio.wait_for(stop.wait(), timeout=2.0)
            except TimeoutError:
                pass
    finally:
        watcher.cancel()
        await consumer.stop()
        await producer.stop()


async def _watch(consumer: AIOKafkaConsumer) -> None:
    async for msg in consumer:
        if msg.value is None:
            log.info("user-changed %s: tombstone", msg.key.decode() if msg.key else None)
            continue
        change = orjson.loads(msg.value)
        log.info(
            "user-changed %s v%d %s %s", change["userId"], change["version"], change["change"],
            ",".join(change["changedKeys"][:6]),
        )
