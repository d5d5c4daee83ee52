"""How every command route answers (docs/contract.md, "HTTP API", Commands): 202 with
the eventId and a `Location`, or with `?wait=S` the outcome: 200 with the user, 422
with the rejection, 202 while still pending."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeAlias
from urllib.parse import quote

import asyncpg
from fastapi import Header, Query, Request
from fastapi.responses import JSONResponse

from services.store.api_keys import Principal
from services.store.queries import find_user, survivor_of

from .answers import Json
from .commands import MAX_WAIT_S, CommandBus, CommandInvalid
from .problems import Problem, problem_response

Wait = Annotated[
    float | None,
    Query(ge=0, le=MAX_WAIT_S, description="Wait up to this many seconds for the outcome (≤ 30)."),
]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=128,
           description="Becomes the command's eventId: a retried request is applied once."),
]
Db: TypeAlias = asyncpg.Pool | asyncpg.Connection
Subject = Callable[[Db, str], Awaitable[dict[str, Any] | None]]
"""After the command applied: the user to answer with, from (connection, eventId), or None."""


def bus_of(request: Request) -> CommandBus:
    bus: CommandBus = request.app.state.bus
    return bus


async def command_answer(
    request: Request, principal: Principal, channel: str, command: dict[str, Any],
    idempotency_key: str | None, wait: float | None, subject: Subject | None = None,
) -> JSONResponse:
    """Publish `command` as `principal` (its name is the `actor`) and answer."""
    bus = bus_of(request)
    try:
        event_id = await bus.submit(channel, command, actor=principal.name, event_id=idempotency_key)
    except CommandInvalid as err:
        raise Problem(422, err.message) from None
    location = {"Location": f"/v1/channels/{quote(channel, safe='')}/commands/{quote(event_id, safe='')}"}
    if wait is None:
        return Json({"eventId": event_id}, status_code=202, headers=location)
    outcome = await bus.wait(channel, event_id, wait)
    if outcome.state == "pending":
        return Json({"eventId": event_id}, status_code=202, headers=location)
    if outcome.state == "rejected":
        return problem_response(
            422, f"the command was rejected: {outcome.code}: {outcome.message}", headers=location,
            extra={"eventId": event_id, "error": {"code": outcome.code, "message": outcome.message}},
        )
    user = None
    if subject is not None:
        async with request.app.state.pool.acquire() as conn:  # one connection for its queries
            user = await subject(conn, event_id)
    if user is None:
        return Json({"eventId": event_id, "state": "applied"}, headers=location)
    return Json(user, headers=location)


async def live_user(pool: Db, channel: str, by: str, value: str) -> dict[str, Any] | None:
    """The user as `GET …/users/{id}` shows it, a merged id followed to its survivor."""
    found = await find_user(pool, channel, by, value)
    if found is not None and "mergedInto" in found:
        survivor = await survivor_of(pool, channel, found["id"])
        found = await find_user(pool, channel, "id", survivor) if survivor else None
    return found


def user_subject(channel: str, user_id: str) -> Subject:
    async def subject(pool: Db, event_id: str) -> dict[str, Any] | None:
        return await live_user(pool, channel, "id", user_id)

    return subject
