"""Command status: pending, applied, or rejected with its dead letter's code and reason."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from ..auth import Reader
from ..models import CommandStatus, problems
from ..params import Channel
from ..respond import bus_of

router = APIRouter(prefix="/v1/channels/{ch}/commands", tags=["commands"])


@router.get("/{eventId}", response_model=CommandStatus, response_model_exclude_none=True, responses=problems(422))
async def command_status(
    request: Request, ch: Channel, eventId: Annotated[str, Path(min_length=1, max_length=128)], _: Reader,
) -> dict[str, Any]:
    """`pending` also for an eventId never seen (the log may not have reached the
    service) and for one that is not a command's: only commands have a status."""
    return (await bus_of(request).outcome(ch, eventId)).to_json()
