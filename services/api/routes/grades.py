"""Grades (D2): a name and a colour; holders keyed by e-mail, phone or memberId."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from ..auth import Writer
from ..models import GradeBody, HolderBody, command_responses
from ..params import Channel
from ..respond import IdempotencyKey, Wait, command_answer

router = APIRouter(prefix="/v1/channels/{ch}/grades", tags=["grades"])

GradeName = Annotated[str, Path(min_length=1, max_length=64)]
_COMMAND = command_responses()


@router.put("/{name}", status_code=202, responses=_COMMAND)
async def define_grade(
    request: Request, ch: Channel, name: GradeName, body: GradeBody, who: Writer,
    idempotency_key: IdempotencyKey = None, wait: Wait = None,
) -> JSONResponse:
    """grade.define: create the grade, or change its colour."""
    command = {"type": "grade.define", "name": name, "colour": body.colour}
    return await command_answer(request, who, ch, command, idempotency_key, wait)


@router.delete("/{name}", status_code=202, responses=_COMMAND)
async def remove_grade(
    request: Request, ch: Channel, name: GradeName, who: Writer,
    idempotency_key: IdempotencyKey = None, wait: Wait = None,
) -> JSONResponse:
    """grade.remove."""
    return await command_answer(request, who, ch, {"type": "grade.remove", "name": name}, idempotency_key, wait)


@router.post("/{name}/holders", status_code=202, responses=_COMMAND)
async def assign_grade(
    request: Request, ch: Channel, name: GradeName, body: HolderBody, who: Writer,
    idempotency_key: IdempotencyKey = None, wait: Wait = None,
) -> JSONResponse:
    """grade.assign: whoever holds this key shows the grade (also after merges)."""
    kind, value = body.key()
    command = {"type": "grade.assign", "name": name, "kind": kind, "value": value}
    return await command_answer(request, who, ch, command, idempotency_key, wait)


@router.delete("/{name}/holders/{kind}/{value}", status_code=202, responses=_COMMAND)
async def unassign_grade(
    request: Request, ch: Channel, name: GradeName, kind: Literal["email", "mobileNumber", "memberId"],
    value: Annotated[str, Path(min_length=1, max_length=256)], who: Writer,
    idempotency_key: IdempotencyKey = None, wait: Wait = None,
) -> JSONResponse:
    """grade.unassign."""
    command = {"type": "grade.unassign", "name": name, "kind": kind, "value": value}
    return await command_answer(request, who, ch, command, idempotency_key, wait)
