"""`unifier dead-letters list|retry`: read `{prefix}dead-letter`, and re-publish dead
letters to the topic they came from (docs/contract.md, "identity.dead-letter").

Both read the topic from the beginning with a manual-assignment consumer (no consumer
group: listing twice lists the same letters, and nothing is committed). A retry
re-publishes the original value with the original key to `sourceTopic`; eventIds are
idempotent, so retrying twice, or retrying a letter whose fact was meanwhile applied
some other way, changes nothing the second time. A letter that is still bad goes to
the dead letter again, with a new offset.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from contracts.topics import Topics
from services.platform.args import positive_int
from services.platform.config import Settings
from services.platform.embedded import infrastructure
from services.platform.kafka import client_options
from services.replay.log import LogReader


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("dead-letters", help="list or retry dead-lettered inbound records")
    sub = p.add_subparsers(dest="dead_letters_command", required=True)
    ls = sub.add_parser("list", help="print one JSON line per dead letter, oldest first per partition")
    ls.add_argument("--code", help="only letters with this error code (e.g. invalid_member_hash)")
    ls.add_argument("--limit", type=positive_int, help="print at most N letters")
    ls.set_defaults(handler=_list)
    retry = sub.add_parser("retry", help="re-publish dead letters to their source topic, key and value unchanged")
    retry.add_argument("--code", help="only letters with this error code")
    retry.set_defaults(handler=_retry)


async def dead_letters(bootstrap: str, topics: Topics, code: str | None = None, *, quiet_s: float = 1.0) -> AsyncIterator[dict[str, Any]]:
    """Every dead letter on the topic now (filtered by error code), each with where it
    sits on the dead-letter topic under `deadLetter`."""
    async with LogReader(bootstrap, [topics.dead_letter], quiet_s=quiet_s) as reader:
        async for chunk in reader.per_partition():
            for r in chunk:
                try:
                    letter = orjson.loads(r.value or b"")
                except orjson.JSONDecodeError:
                    continue  # not written by the service: nothing to say about it
                if not isinstance(letter, dict):
                    continue
                if code is not None and (letter.get("error") or {}).get("code") != code:
                    continue
                letter["deadLetter"] = {"partition": r.partition, "offset": r.offset}
                yield letter


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    topics = Topics(settings.topic_prefix)
    shown = 0
    async with infrastructure(settings) as (bootstrap, _db):
        async for letter in dead_letters(bootstrap, topics, args.code):
            sys.stdout.write(orjson.dumps(letter).decode() + "\n")
            shown += 1
            if args.limit is not None and shown >= args.limit:
                break
    sys.stdout.flush()
    return 0


async def retry(
    bootstrap: str, topics: Topics, code: str | None, *, idempotence: bool = False, where: tuple[int, int] | None = None,
) -> dict[str, int]:
    """Re-publish the letters of `code` (all when None), or only the one at `where`
    (partition, offset on the dead-letter topic: the console's retry of one letter);
    counts retried and skipped (a source topic that is not one of our inbound topics is
    never written to)."""
    inbound = set(topics.inbound)
    producer = AIOKafkaProducer(**client_options(bootstrap), acks="all", enable_idempotence=idempotence, linger_ms=5)
    await producer.start()
    retried = skipped = 0
    try:
        pending = []
        async for letter in dead_letters(bootstrap, topics, code):
            if where is not None and (letter["deadLetter"]["partition"], letter["deadLetter"]["offset"]) != where:
                continue
            topic, value, key = letter.get("sourceTopic"), letter.get("value"), letter.get("key")
            if topic not in inbound or not isinstance(value, str):
                skipped += 1
                continue
            pending.append(
                await producer.send(topic, value.encode(), key=key.encode() if isinstance(key, str) else None)
            )
            retried += 1
        for fut in pending:
            await fut
    finally:
        await producer.stop()
    return {"retried": retried, "skipped": skipped}


async def _retry(settings: Settings, args: argparse.Namespace) -> int:
    topics = Topics(settings.topic_prefix)
    # Idempotent producers where the broker supports them (tansu does not): the setting
    # is read from Settings once the lead adds it (UNIFIER_KAFKA_IDEMPOTENCE).
    idempotence = settings.kafka_idempotence
    async with infrastructure(settings) as (bootstrap, _db):
        counts = await retry(bootstrap, topics, args.code, idempotence=idempotence)
    sys.stdout.write(orjson.dumps(counts).decode() + "\n")
    return 0
