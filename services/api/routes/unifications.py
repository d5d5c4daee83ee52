"""Unifications: the review queue (U5, U6), approve, cancel a pending one."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from services.store import queries
from services.store.queries import BadCursor

from ..auth import Pool, Reader, Writer
from ..models import Page, UnificationBody, command_responses, problems
from ..params import Channel, Cursor, Limit
from ..problems import Problem
from ..respond import IdempotencyKey, Wait, command_answer, user_subject

router = APIRouter(prefix="/v1/channels/{ch}/unifications", tags=["unifications"])


@router.get("", response_model=Page, responses=problems(422))
async def review_queue(
    ch: Channel, pool: Pool, _: Reader,
    state: Annotated[Literal["candidate", "pending"], Query(description="Which queue.")] = "candidate",
    limit: Limit = 50, cursor: Cursor = None,
) -> dict[str, Any]:
    """Leads with candidate members to approve, or approved sources waiting for their
    member's next login; by source user id."""
    try:
        items, nxt = await queries.review_queue(pool, ch, state, limit=limit, cursor=cursor)
    except BadCursor as err:
        raise Problem(422, str(err)) from None
    return {"items": items, "next": nxt}


@router.post("", status_code=202, responses=command_responses())
async def approve(
    request: Request, ch: Channel, body: UnificationBody, who: Writer,
    idempotency_key: IdempotencyKey = None, wait: Wait = None,
) -> JSONResponse:
    """unification.approve: merge the source into the target member (U5; a booted
    source waits for the member's next login). Answers with the source, followed to its
    survivor once merged."""
    command = {"type": "unification.approve", "sourceUserId": body.sourceUserId, "targetUserId": body.targetUserId}
    return await command_answer(request, who, ch, command, idempotency_key, wait, user_subject(ch, body.sourceUserId))


@router.delete("/{sourceUserId}", status_code=202, responses=command_responses())
async def cancel(
    request: Request, ch: Channel, sourceUserId: Annotated[str, Path(min_length=1, max_length=256)], who: Writer,
    idempotency_key: IdempotencyKey = None, wait: Wait = None,
) -> JSONResponse:
    """unification.cancel: cancel a pending unification (U6)."""
    command = {"type": "unification.cancel", "sourceUserId": sourceUserId}
    return await command_answer(request, who, ch, command, idempotency_key, wait, user_subject(ch, sourceUserId))
