"""`unifier dead-letters list|retry`: read `{prefix}dead-letter`, and re-publish dead
letters to the topic they came from (docs/contract.md, "identity.dead-letter").

Both read the topic from the beginning with a manual-assignment consumer (no consumer
group: listing twice lists the same letters, and nothing is committed). A retry
re-publishes the original value with the original key to `sourceTopic`, **each letter
at most once**: the letters retried are remembered in `dead_letter_retries` by their
place on the dead-letter topic (topic, partition, offset), claimed in the transaction
that commits once the broker has acknowledged the re-published records. Retrying again
re-publishes only letters not retried yet — among them the new letter of a record that
failed again — so repeated retries never double anything (issue 11: three retries of one
bad record gave 8 letters; now 4, one per attempt). eventIds are idempotent too, so a
fact applied once is skipped if it comes again.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from contracts.topics import Topics
from services.platform.args import positive_int
from services.platform.config import Settings
from services.platform.embedded import infrastructure
from services.platform.kafka import producer_options
from services.replay.log import LogReader
from services.replay.replay import parse_time
from services.store.pool import create_pool


def define(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="dead_letters_command", required=True)
    ls = sub.add_parser("list", help="print one JSON line per dead letter, oldest first per partition")
    ls.add_argument("--code", help="only letters with this error code (e.g. invalid_member_hash)")
    ls.add_argument("--since", type=_time, metavar="TIME", help="only letters with failedAt at or after TIME (epoch ms or ISO-8601)")
    ls.add_argument("--limit", type=positive_int, help="print at most N letters")
    ls.set_defaults(handler=_list)
    retry = sub.add_parser("retry", help="re-publish dead letters not retried yet to their source topic, key and value unchanged")
    retry.add_argument("--code", help="only letters with this error code")
    retry.add_argument("--since", type=_time, metavar="TIME", help="only letters with failedAt at or after TIME (epoch ms or ISO-8601)")
    retry.set_defaults(handler=_retry)


def _time(raw: str) -> int:
    try:
        return parse_time(raw)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


async def dead_letters(
    bootstrap: str, topics: Topics, code: str | None = None, *, since: int | None = None, quiet_s: float = 1.0,
) -> AsyncIterator[dict[str, Any]]:
    """Every dead letter on the topic now (filtered by error code and by `failedAt` ≥
    `since`), each with where it sits on the dead-letter topic under `deadLetter`."""
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
                failed_at = letter.get("failedAt")
                if since is not None and not (isinstance(failed_at, int) and failed_at >= since):
                    continue
                letter["deadLetter"] = {"partition": r.partition, "offset": r.offset}
                yield letter


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    topics = Topics(settings.topic_prefix)
    shown = 0
    async with infrastructure(settings) as (bootstrap, _db):
        async for letter in dead_letters(bootstrap, topics, args.code, since=args.since):
            sys.stdout.write(orjson.dumps(letter).decode() + "\n")
            shown += 1
            if args.limit is not None and shown >= args.limit:
                break
    sys.stdout.flush()
    return 0


async def retry(
    pool: asyncpg.Pool, bootstrap: str, topics: Topics, code: str | None, *, since: int | None = None,
    idempotence: bool = False, where: tuple[int, int] | None = None,
) -> dict[str, int]:
    """Re-publish the letters of `code` (all when None) not retried before, or only the
    one at `where` (partition, offset on the dead-letter topic: the console's retry of one
    letter); counts `retried`, `alreadyRetried`, and `skipped` (a source topic that is not
    one of our inbound topics is never written to)."""
    inbound = set(topics.inbound)
    counts = {"retried": 0, "alreadyRetried": 0, "skipped": 0}
    producer = AIOKafkaProducer(**producer_options(bootstrap), acks="all", enable_idempotence=idempotence, linger_ms=5)
    await producer.start()
    try:
        async with pool.acquire() as conn, conn.transaction():
            pending = []
            async for letter in dead_letters(bootstrap, topics, code, since=since):
                if where is not None and (letter["deadLetter"]["partition"], letter["deadLetter"]["offset"]) != where:
                    continue
                topic, value, key = letter.get("sourceTopic"), letter.get("value"), letter.get("key")
                if topic not in inbound or not isinstance(value, str):
                    counts["skipped"] += 1
                    continue
                place = letter["deadLetter"]
                # Claimed here, committed with the acknowledgements below: a concurrent
                # retry waits for this one, then finds the letter claimed.
                claimed = await conn.fetchval(
                    """INSERT INTO dead_letter_retries (topic, partition, "offset") VALUES ($1, $2, $3)
                       ON CONFLICT DO NOTHING RETURNING true""",
                    topics.dead_letter, place["partition"], place["offset"],
                )
                if not claimed:
                    counts["alreadyRetried"] += 1
                    continue
                pending.append(
                    await producer.send(topic, value.encode(), key=key.encode() if isinstance(key, str) else None)
                )
                counts["retried"] += 1
            for fut in pending:
                await fut  # a failure rolls the claims back: those letters can be retried again
    finally:
        await producer.stop()
    return counts


async def _retry(settings: Settings, args: argparse.Namespace) -> int:
    topics = Topics(settings.topic_prefix)
    async with infrastructure(settings) as (bootstrap, database_url):
        pool = await create_pool(database_url, settings.db_schema)
        try:
            counts = await retry(
                pool, bootstrap, topics, args.code, since=args.since, idempotence=settings.kafka_idempotence,
            )
        finally:
            await pool.close()
    sys.stdout.write(orjson.dumps(counts).decode() + "\n")
    return 0
