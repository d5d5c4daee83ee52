"""Submitting commands and learning their outcome — the one code path the API routes
and the console share (docs/design.md, "The HTTP API and the console").

A command becomes a fact on `identity.commands`, keyed by channel like every inbound
fact, validated first by the very parser the projection uses, so the API never
publishes what the service would dead-letter as malformed. Its outcome is written by
the projection in the batch's transaction, to `command_outcomes` (applied, or rejected
with its dead letter's code and reason: services/store/outcomes.py), and told to the
waiting API processes by a NOTIFY delivered at that transaction's commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import orjson

from contracts.inbound import InboundError, parse_inbound
from services.store import outcomes as stored

log = logging.getLogger("unifier.api")

Publish = Callable[[bytes, bytes], Awaitable[Any]]  # (value, key) -> published
"""Puts one record on `identity.commands` (the app wires faststream's publisher)."""

MAX_WAIT_S = 30.0
_POLL_S = 0.01  # without a LISTEN connection: how often the waiters' outcomes are read
_SAFETY_POLL_S = 1.0  # with one: read anyway this often (a projection that does not notify)
_RELISTEN_S = 1.0  # after the LISTEN connection failed, try again after this long
_RECENT = 20_000  # outcomes heard lately, for a waiter that registers after its notification


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


APPLIED = Outcome("applied")
Pair = tuple[str, str]  # (channel, eventId)


class CommandBus:
    """Publish commands; wait for outcomes. One per process.

    Waiting costs no query per command: the bus LISTENs on `unifier_commands` (one
    pooled connection held) and the projection NOTIFYs, at the commit of each batch,
    which commands it applied or rejected (and which it skipped as repeats of an
    applied eventId). An applied command's waiter is answered from the notification; a
    rejected one's reason is read from `command_outcomes`, one query for every waiter
    at once. Without the LISTEN connection (the database away), or as a safety net
    once a second with it, the waiters' outcomes are read the same way."""

    def __init__(self, pool: asyncpg.Pool, publish: Publish) -> None:
        self.pool = pool
        self._publish = publish
        self._waiting: dict[Pair, list[asyncio.Future[Outcome]]] = {}
        self._recent: dict[Pair, bool] = {}  # heard lately: applied? (oldest first)
        self._wake = asyncio.Event()  # something to read from the table
        self._listening = False
        self._worker: asyncio.Task[None] | None = None

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
        self._start()  # listening before the outcome can be announced
        await self._publish(value, channel.encode())
        return event_id

    async def outcome(self, channel: str, event_id: str) -> Outcome:
        """The command's outcome now."""
        found = await _outcomes(self.pool, [(channel, event_id)])
        return found.get((channel, event_id), Outcome("pending"))

    def is_waiting(self, channel: str, event_id: str) -> bool:
        """Someone waits for this command's outcome now."""
        return (channel, event_id) in self._waiting

    async def wait(self, channel: str, event_id: str, timeout_s: float) -> Outcome:
        """The outcome once applied or rejected, or `pending` after `timeout_s`."""
        pair = (channel, event_id)
        if self._recent.get(pair):
            return APPLIED  # announced before we got here
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Outcome] = loop.create_future()
        self._waiting.setdefault(pair, []).append(fut)
        self._start()
        if not self._listening or pair in self._recent:
            self._wake.set()  # not told (or told "rejected"): read it
        try:
            return await asyncio.wait_for(asyncio.shield(fut), min(timeout_s, MAX_WAIT_S))
        except TimeoutError:
            return Outcome("pending")
        finally:
            waiters = self._waiting.get(pair, [])
            with contextlib.suppress(ValueError):
                waiters.remove(fut)
            if not waiters:
                self._waiting.pop(pair, None)

    @property
    def listening(self) -> bool:
        """Told of outcomes by NOTIFY (else polling every _POLL_S)."""
        return self._listening

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    def _start(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="command-outcomes")

    async def _work(self) -> None:
        """Hold the LISTEN connection (again after a failure) and read outcomes when
        told to, or every _POLL_S without it."""
        reading = asyncio.create_task(self._read_loop(), name="command-outcomes-read")
        try:
            while True:
                try:
                    await self._listen()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
                    log.warning("command outcomes: LISTEN connection lost (%s); polling meanwhile", err)
                self._listening = False
                await asyncio.sleep(_RELISTEN_S)
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading

    async def _listen(self) -> None:
        conn: asyncpg.Connection = await self.pool.acquire()
        schema: str = await conn.fetchval("SELECT current_schema()")

        def heard(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            self._heard(stored.parse(payload, schema))

        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def closed(_conn: object) -> None:
            if not lost.done():
                lost.set_result(None)

        conn.add_termination_listener(closed)
        try:
            await conn.add_listener(stored.CHANNEL, heard)
            self._listening = True
            self._wake.set()  # what was decided before we listened: read once
            await lost  # until the connection dies (or we are cancelled)
        finally:
            self._listening = False
            conn.remove_termination_listener(closed)
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await conn.remove_listener(stored.CHANNEL, heard)
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await self.pool.release(conn)

    def _heard(self, decided: list[tuple[str, str, bool]]) -> None:
        recent = self._recent
        for channel, event_id, applied in decided:
            pair = (channel, event_id)
            recent.pop(pair, None)  # re-inserted as the newest
            recent[pair] = applied
            waiters = self._waiting.get(pair)
            if not waiters:
                continue
            if applied:
                for fut in waiters:
                    if not fut.done():
                        fut.set_result(APPLIED)
            else:
                self._wake.set()  # its code and reason are in the table
        while len(recent) > _RECENT:
            del recent[next(iter(recent))]

    async def _read_loop(self) -> None:
        """Read every awaited outcome in one query when woken (or on the poll)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _SAFETY_POLL_S if self._listening else _POLL_S)
            self._wake.clear()
            if not self._waiting:
                continue
            pairs = list(self._waiting)
            try:
                found = await _outcomes(self.pool, pairs)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                found = {}  # the database is away: the waiters time out as pending
            for pair, outcome in found.items():
                for fut in self._waiting.get(pair, []):
                    if not fut.done():
                        fut.set_result(outcome)


async def _outcomes(conn: asyncpg.Pool | asyncpg.Connection, pairs: list[Pair]) -> dict[Pair, Outcome]:
    """The decided outcomes among `pairs`, from `command_outcomes` alone: an eventId
    that is not a command has no command status (`pending`, docs/contract.md), so the
    eventId window is not asked for single eventIds and may keep them in any layout
    (docs/decisions.md, "Issue 14, session 12: the eventId window's runs")."""
    rows = await conn.fetch(
        """SELECT o.channel_id, o.event_id, o.code, o.message
             FROM command_outcomes o
             JOIN unnest($1::text[], $2::text[]) AS p(c, e) ON o.channel_id = p.c AND o.event_id = p.e""",
        [p[0] for p in pairs], [p[1] for p in pairs],
    )
    return {
        (r[0], r[1]): Outcome("rejected", r[2], r[3]) if r[2] is not None else APPLIED
        for r in rows
    }
