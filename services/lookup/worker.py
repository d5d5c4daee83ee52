"""Automatic lookups (seed 004 §2-1 ③): a chat from a medium linked to a definition
calls it, and what comes back fills the customer's empty fields.

The projection only queues the work (`lookup_queue`, in its transaction); this worker
takes due rows on a lease, calls the company with no transaction open, and publishes
the answer as a `lookup.result` command (actor `system`) whose eventId is derived from
the chat and the lookup: a worker killed after publishing and before clearing the row
publishes the same command again, and the projection applies it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson

from contracts.inbound import InboundError, parse_inbound
from services.store import lookups as store
from services.store.queries import find_user, survivor_of

from .client import LookupFailed, Lookups, bound_params, connected_fill, result_values

log = logging.getLogger("unifier.lookup")

Publish = Callable[[bytes, bytes], Awaitable[Any]]  # (value, key)

LEASE_S = 120.0  # a taken row is due again after this, unless done first (>> the call's timeout)
BATCH = 16  # rows taken at once; called concurrently
MAX_ATTEMPTS = 5  # a row whose handling fails (not the call: that is recorded) this often is dropped


def result_event_id(channel_id: str, chat_event_id: str, name: str) -> str:
    """The same chat and lookup always give the same command id (idempotent re-publish)."""
    digest = hashlib.sha256(f"{channel_id}\x1f{chat_event_id}\x1f{name}".encode()).hexdigest()[:40]
    return f"lookup-{digest}"


class LookupWorker:
    def __init__(self, pool: asyncpg.Pool, lookups: Lookups, publish: Publish, *, poll_s: float = 0.2) -> None:
        self.pool, self.lookups, self.publish, self.poll_s = pool, lookups, publish, poll_s
        self.healthy = True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                rows = await store.take_due(self.pool, limit=BATCH, lease_s=LEASE_S)
                if rows:
                    failed = [r for r in await asyncio.gather(*(self.handle(r) for r in rows), return_exceptions=True)
                              if isinstance(r, BaseException)]
                    if failed:
                        raise failed[0]
                self.healthy = True
            except Exception:  # the database or the broker away: the leased rows come back
                self.healthy = False
                log.exception("lookup worker: a round failed; retrying")
                rows = []
            if not rows:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_s)

    async def handle(self, row: asyncpg.Record) -> None:
        try:
            await self._handle(row)
        except Exception:
            # The row stays leased and is retried; one that keeps failing is dropped
            # rather than retried for ever (the next chat queues the lookup again).
            if row["attempts"] < MAX_ATTEMPTS:
                raise
            log.exception("lookup %r of channel %s: given up after %d attempts", row["name"], row["channel_id"], row["attempts"])
            await store.done(self.pool, row["channel_id"], row["event_id"], row["name"])

    async def _handle(self, row: asyncpg.Record) -> None:
        channel_id, chat_id, name = row["channel_id"], row["event_id"], row["name"]
        command = await self.answer(channel_id, name, row["user_id"], chat_id)
        if isinstance(command, str):  # "later": postponed
            return
        if command is not None:
            await self._publish(channel_id, command)
        await store.done(self.pool, channel_id, chat_id, name)

    async def answer(self, channel_id: str, name: str, user_id: str, chat_id: str) -> dict[str, Any] | str | None:
        """The `lookup.result` command for this row; None when there is nothing to do
        (definition removed, user gone, a parameter the customer cannot fill); "later"
        when this channel is over its rate limit."""
        definition = await store.definition(self.pool, channel_id, name)
        if definition is None:
            return None
        survivor = await survivor_of(self.pool, channel_id, user_id) or user_id
        user = await find_user(self.pool, channel_id, "id", survivor)
        if user is None or "mergedInto" in user:
            return None
        params = bound_params(definition, user)
        if params is None:
            return None
        command: dict[str, Any] = {
            "type": "lookup.result", "eventId": result_event_id(channel_id, chat_id, name), "channelId": channel_id,
            "occurredAt": int(time.time() * 1000), "actor": "system", "userId": survivor, "name": name,
            "causationId": chat_id, "qualified": bool(definition.get("vouched")),
        }
        try:
            answer = await self.lookups.call(channel_id, name, definition, params)
        except LookupFailed as failure:
            if failure.code == "rate_limited":
                await store.postpone(self.pool, channel_id, chat_id, name, failure.retry_after or 1.0)
                return "later"
            return {**command, "status": "failed", "error": {"code": failure.code, "message": failure.message[:256]}}
        values = result_values(definition, answer)
        return {**command, "status": "ok", "values": values, "fill": connected_fill(definition, values)}

    async def _publish(self, channel_id: str, command: dict[str, Any]) -> None:
        raw = orjson.dumps(command)
        try:
            parse_inbound("commands", raw)  # what the projection would refuse is never published
        except InboundError as err:
            log.warning("lookup %r of channel %s: the answer cannot be recorded (%s)", command["name"], channel_id, err.code)
            failed = {k: v for k, v in command.items() if k not in ("values", "fill")}
            failed.update(status="failed", error={"code": "unusable_answer", "message": err.message[:256]})
            raw = orjson.dumps(failed)
        await self.publish(raw, channel_id.encode())


async def run_worker(
    settings: Any, pool: asyncpg.Pool, bootstrap: str, commands_topic: str, stop: asyncio.Event,
    parts: dict[str, Callable[[], bool]] | None = None,
) -> None:
    """The worker of `unifier run`: its own producer and HTTP client, until `stop`.
    `parts` (the health of /healthz) gets "lookups": false while its rounds fail."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    from services.platform.kafka import producer_options

    producer = AIOKafkaProducer(**producer_options(bootstrap), acks="all", enable_idempotence=settings.kafka_idempotence)
    lookups = Lookups(settings)
    delay = 0.5
    while True:  # a broker away at start delays automatic lookups; it never stops the service
        try:
            await producer.start()
            break
        except KafkaError as err:
            log.warning("lookup worker: broker unavailable (%s); retrying in %.1f s", type(err).__name__, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                await lookups.aclose()
                return
            delay = min(delay * 2, 10.0)
    try:
        async def publish(value: bytes, key: bytes) -> None:
            await producer.send_and_wait(commands_topic, value, key=key)

        worker = LookupWorker(pool, lookups, publish)
        if parts is not None:
            parts["lookups"] = lambda: worker.healthy
        await worker.run(stop)
    finally:
        await lookups.aclose()
        await producer.stop()
