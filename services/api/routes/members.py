"""Members, leads and deliveries: member.upsert, member.delete, lead.create,
marketing.delivered."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from services.domain.hygiene import clean_email, clean_member_id, clean_mobile
from services.domain.ids import fact_user_id
from services.domain.values import Rejected

from ..auth import Admin, Writer
from ..models import DeliveryBody, LeadBody, MemberBody, command_responses
from ..params import Channel
from ..respond import Db, IdempotencyKey, Wait, command_answer, live_user, user_subject

router = APIRouter(prefix="/v1/channels/{ch}", tags=["members and leads"])

MemberId = Annotated[str, Path(min_length=1, max_length=256)]
_COMMAND = command_responses()


@router.put("/members/{memberId}", status_code=202, responses=_COMMAND)
async def upsert_member(
    request: Request, ch: Channel, memberId: MemberId, body: MemberBody, who: Writer,
    idempotency_key: IdempotencyKey = None, wait: Wait = None,
) -> JSONResponse:
    """member.upsert: update that member, or create it."""
    command = {"type": "member.upsert", "memberId": memberId, **body.model_dump(exclude_unset=True)}
    command.setdefault("profile", {})

    async def subject(pool: Db, event_id: str) -> dict[str, Any] | None:
        try:
            return await live_user(pool, ch, "member", clean_member_id(memberId))
        except Rejected:
            return None

    return await command_answer(request, who, ch, command, idempotency_key, wait, subject)


@router.delete("/members/{memberId}", status_code=202, responses=_COMMAND)
async def delete_member(
    request: Request, ch: Channel, memberId: MemberId, who: Admin,
    idempotency_key: IdempotencyKey = None, wait: Wait = None,
) -> JSONResponse:
    """member.delete (B3): a withdrawn member, irreversibly."""
    command = {"type": "member.delete", "memberId": memberId}
    return await command_answer(request, who, ch, command, idempotency_key, wait)


@router.post("/leads", status_code=202, responses=_COMMAND)
async def create_lead(
    request: Request, ch: Channel, body: LeadBody, who: Writer,
    idempotency_key: IdempotencyKey = None, wait: Wait = None,
) -> JSONResponse:
    """lead.create: a lead from a profile with `email` and/or `mobileNumber` (a lead
    already holding that qualified contact is updated instead)."""
    command = {"type": "lead.create", "profile": body.profile}

    async def subject(pool: Db, event_id: str) -> dict[str, Any] | None:
        created = await live_user(pool, ch, "id", fact_user_id(ch, event_id))
        if created is not None:
            return created
        for kind, clean in (("email", clean_email), ("mobileNumber", clean_mobile)):
            raw = body.profile.get(kind)
            if isinstance(raw, str):
                try:
                    found = await live_user(pool, ch, "email" if kind == "email" else "mobile", clean(raw))
                except Rejected:
                    continue
                if found is not None:
                    return found
        return None

    return await command_answer(request, who, ch, command, idempotency_key, wait, subject)


@router.post("/deliveries", status_code=202, responses=_COMMAND)
async def record_delivery(
    request: Request, ch: Channel, body: DeliveryBody, who: Writer,
    idempotency_key: IdempotencyKey = None, wait: Wait = None,
) -> JSONResponse:
    """marketing.delivered: the record follows the user through merges (U4)."""
    command = {"type": "marketing.delivered", "userId": body.userId, "campaignId": body.campaignId}
    return await command_answer(request, who, ch, command, idempotency_key, wait, user_subject(ch, body.userId))
