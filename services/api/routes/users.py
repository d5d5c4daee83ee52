"""Users: read one (410 for a merged id, U8), list and search, activities, merges (G4);
and the commands on one user (profile.update, user.delete, user.block/unblock)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from services.domain.hygiene import clean_email, clean_member_id, clean_mobile, clean_veil_id
from services.domain.values import Rejected
from services.store import queries
from services.store.queries import BadCursor, UserFilter

from ..answers import Json
from ..auth import Admin, Pool, Reader, Writer
from ..models import MergedAway, Page, ProfilePatch, command_responses, problems
from ..params import Channel, Cursor, Limit, Text, UserId
from ..problems import Problem
from ..respond import IdempotencyKey, Wait, command_answer, user_subject

router = APIRouter(prefix="/v1/channels/{ch}/users", tags=["users"])



async def _live(pool: Pool, ch: str, user_id: str) -> dict[str, Any]:
    """The user, or 404 (unknown, deleted), or 410 with the survivor (merged, U8)."""
    found = await queries.find_user(pool, ch, "id", user_id)
    if found is None:
        raise Problem(404, f"no user {user_id!r} in channel {ch!r}")
    if "mergedInto" in found:
        survivor = await queries.survivor_of(pool, ch, user_id) or found["mergedInto"]
        raise Problem(
            410, f"user {user_id!r} was merged into {found['mergedInto']!r}",
            headers={"Link": f'</v1/channels/{quote(ch, safe="")}/users/{quote(survivor, safe="")}>; rel="canonical"'},
            extra={"id": found["id"], "mergedInto": found["mergedInto"]},
        )
    return found


_GONE: dict[int | str, dict[str, Any]] = {410: {"model": MergedAway, "description": "Merged into another user (U8); `Link` names the survivor."}}


_USER: dict[int | str, dict[str, Any]] = {200: {"description": "The user", "content": {"application/json": {"schema": {"type": "object"}}}}}
_PAGE: dict[int | str, dict[str, Any]] = {200: {"model": Page, "description": "A page; `next` is the cursor of the next, or null."}}


@router.get("/{userId}", response_model=None, responses={**_USER, **problems(404, 410, 422), **_GONE})
async def get_user(ch: Channel, userId: UserId, pool: Pool, _: Reader) -> Json:
    """The user as `unifier user show` prints it, with `unification` (and `grades`)."""
    return Json(await _live(pool, ch, userId))


@router.get("", response_model=None, responses={**_PAGE, **problems(422)})
async def list_users(
    ch: Channel, pool: Pool, _: Reader,
    memberId: Text = None, veilId: Text = None, email: Text = None, mobileNumber: Text = None,
    q: Annotated[str | None, Query(min_length=1, max_length=256, description="Prefix of a name, e-mail or phone.")] = None,
    type: Literal["anonymous", "lead", "member"] | None = None,
    tag: Text = None, grade: Text = None, blocked: bool | None = None,
    limit: Limit = 50, cursor: Cursor = None,
) -> Json:
    """Live users matching every filter given, in a stable order (by id), a page at a time."""
    if q is not None and not q.strip():
        raise Problem(422, "q: must not be blank", errors=[{"field": "query.q", "message": "must not be blank"}])
    try:
        f = UserFilter(
            member_id=clean_member_id(memberId) if memberId is not None else None,
            veil_id=clean_veil_id(veilId) if veilId is not None else None,
            email=clean_email(email) if email is not None else None,
            mobile=clean_mobile(mobileNumber) if mobileNumber is not None else None,
            q=q, type=type, tag=tag, grade=grade, blocked=blocked,
        )
    except Rejected as err:
        raise Problem(422, err.reason) from None
    try:
        items, nxt = await queries.search_users(pool, ch, f, limit=limit, cursor=cursor)
    except BadCursor as err:
        raise Problem(422, str(err)) from None
    return Json({"items": items, "next": nxt})


@router.get("/{userId}/activities", response_model=None, responses={**_PAGE, **problems(404, 410, 422), **_GONE})
async def list_activities(
    ch: Channel, userId: UserId, pool: Pool, _: Reader, limit: Limit = 50, cursor: Cursor = None,
) -> Json:
    """Chats and behaviour events, newest first."""
    await _live(pool, ch, userId)
    try:
        items, nxt = await queries.activities(pool, ch, userId, limit=limit, cursor=cursor)
    except BadCursor as err:
        raise Problem(422, str(err)) from None
    return Json({"items": items, "next": nxt})


@router.get("/{userId}/merges", response_model=None, responses={**_USER, **problems(404, 410, 422), **_GONE})
async def list_merges(ch: Channel, userId: UserId, pool: Pool, _: Reader) -> Json:
    """G4: the merges that made this user, oldest first, with every contested value."""
    await _live(pool, ch, userId)
    return Json({"items": await queries.merges_into(pool, ch, userId)})


_COMMAND = command_responses()


@router.patch("/{userId}", status_code=202, responses=_COMMAND)
async def update_profile(
    request: Request, ch: Channel, userId: UserId, body: ProfilePatch, who: Writer,
    idempotency_key: IdempotencyKey = None, wait: Wait = None,
) -> JSONResponse:
    """profile.update: the keys given are set, qualified (C4)."""
    command = {"type": "profile.update", "userId": userId, **body.model_dump(exclude_unset=True)}
    command.setdefault("profile", {})
    return await command_answer(request, who, ch, command, idempotency_key, wait, user_subject(ch, userId))


@router.delete("/{userId}", status_code=202, responses=_COMMAND)
async def delete_user(
    request: Request, ch: Channel, userId: UserId, who: Admin, idempotency_key: IdempotencyKey = None, wait: Wait = None,
) -> JSONResponse:
    """user.delete (B2): irreversible."""
    return await command_answer(request, who, ch, {"type": "user.delete", "userId": userId}, idempotency_key, wait)


@router.post("/{userId}/block", status_code=202, responses=_COMMAND)
async def block_user(
    request: Request, ch: Channel, userId: UserId, who: Writer, idempotency_key: IdempotencyKey = None, wait: Wait = None,
) -> JSONResponse:
    """user.block (B1)."""
    command = {"type": "user.block", "userId": userId}
    return await command_answer(request, who, ch, command, idempotency_key, wait, user_subject(ch, userId))


@router.post("/{userId}/unblock", status_code=202, responses=_COMMAND)
async def unblock_user(
    request: Request, ch: Channel, userId: UserId, who: Writer, idempotency_key: IdempotencyKey = None, wait: Wait = None,
) -> JSONResponse:
    """user.unblock (B1)."""
    command = {"type": "user.unblock", "userId": userId}
    return await command_answer(request, who, ch, command, idempotency_key, wait, user_subject(ch, userId))
