"""Submitting commands and learning their outcome — the one code path the API routes
and the console share (docs/design.md, "The HTTP API and the console").

A command becomes a fact on `identity.commands`, keyed by channel like every inbound
fact, validated first by the very parser the projection uses, so the API never
publishes what the service would dead-letter as malformed. Its outcome is read back
from PostgreSQL: `applied_events` (applied) or `rejected_commands` (its dead letter's
code and reason), both written in the projection's transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import orjson

from contracts.inbound import InboundError, parse_inbound

Publish = Callable[[bytes, bytes], Awaitable[Any]]  # (value, key) -> published
"""Puts one record on `identity.commands` (the app wires faststream's publisher)."""

MAX_WAIT_S = 30.0
_POLL_S = 0.01  # how often the outcomes of waiting commands are read, in one query


class CommandInvalid(ValueError):
    """The command would be dead-lettered as malformed: nothing was published."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Outcome:
    """`pending` (not applied yet, or never seen), `applied`, or `rejected` with the
    dead letter's `code` and `message`."""

    state: Literal["pending", "applied", "rejected"]
    code: str | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"state": self.state}
        if self.state == "rejected":
            body["error"] = {"code": self.code, "message": self.message}
        return body


class CommandBus:
    """Publish commands; wait for outcomes. One per process (it polls for every waiter
    at once, so 200 waiting requests cost one query per poll, not 200)."""

    def __init__(self, pool: asyncpg.Pool, publish: Publish) -> None:
        self.pool = pool
        self._publish = publish
        self._waiting: dict[tuple[str, str], list[asyncio.Future[Outcome]]] = {}
        self._wake = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None

    async def submit(
        self, channel: str, command: dict[str, Any], *, actor: str, event_id: str | None = None,
    ) -> str:
        """Publish `command` (its `type` and fields) in `channel` as `actor`; its eventId.
        `event_id` (an Idempotency-Key) makes a retried request the same fact, applied
        once. Raises CommandInvalid when the contract's parser refuses it."""
        event_id = event_id if event_id is not None else uuid.uuid4().hex
        message = {
            **command, "eventId": event_id, "channelId": channel,
            "occurredAt": int(time.time() * 1000), "actor": actor,
        }
        value = orjson.dumps(message)
        try:
            parse_inbound("commands", value)
        except InboundError as err:
            raise CommandInvalid(err.message) from None
        await self._publish(value, channel.encode())
        return event_id

    async def outcome(self, channel: str, event_id: str) -> Outcome:
        """The command's outcome now."""
        found = await _outcomes(self.pool, [(channel, event_id)])
        return found.get((channel, event_id), Outcome("pending"))

    async def wait(self, channel: str, event_id: str, timeout_s: float) -> Outcome:
        """The outcome once applied or rejected, or `pending` after `timeout_s`."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Outcome] = loop.create_future()
        self._waiting.setdefault((channel, event_id), []).append(fut)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="command-outcomes")
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), min(timeout_s, MAX_WAIT_S))
        except TimeoutError:
            return Outcome("pending")
        finally:
            waiters = self._waiting.get((channel, event_id), [])
            with contextlib.suppress(ValueError):
                waiters.remove(fut)
            if not waiters:
                self._waiting.pop((channel, event_id), None)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    async def _poll(self) -> None:
        """While anyone waits: read every awaited outcome in one query, resolve the done."""
        while self._waiting:
            pairs = list(self._waiting)
            try:
                found = await _outcomes(self.pool, pairs)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                found = {}  # the database is away: the waiters time out as pending
            for pair, outcome in found.items():
                for fut in self._waiting.get(pair, []):
                    if not fut.done():
                        fut.set_result(outcome)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _POLL_S)


async def _outcomes(conn: asyncpg.Pool | asyncpg.Connection, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], Outcome]:
    """The decided outcomes among `pairs`; applied wins over an earlier rejection."""
    rows = await conn.fetch(
        """SELECT p.c, p.e, a.event_id IS NOT NULL AS applied, r.code, r.message
             FROM unnest($1::text[], $2::text[]) AS p(c, e)
             LEFT JOIN applied_events a ON a.channel_id = p.c AND a.event_id = p.e
             LEFT JOIN rejected_commands r ON r.channel_id = p.c AND r.event_id = p.e
            WHERE a.event_id IS NOT NULL OR r.event_id IS NOT NULL""",
        [p[0] for p in pairs], [p[1] for p in pairs],
    )
    return {
        (r[0], r[1]): Outcome("applied") if r[2] else Outcome("rejected", r[3], r[4])
        for r in rows
    }
