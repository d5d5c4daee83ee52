"""Grades (issue 13, item 5; seed 004's 顧客分類, D2): define a name and a colour, assign
it by e-mail, phone or memberId, remove it; customers show theirs as coloured labels."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ..render import page
from ..web import ConsoleRoute, backend, form_str, require
from .customers import COMMAND_WAIT_S, command_flash

router = APIRouter(route_class=ConsoleRoute)

KINDS = ("email", "mobileNumber", "memberId")


@router.get("/c/{ch}/grades")
async def grades(request: Request, ch: str) -> Response:
    require(request, "read", ch)
    return await render(request, ch)


async def render(request: Request, ch: str, flashes: list[tuple[str, str]] | None = None, status: int = 200) -> Response:
    listed = await backend(request).grades(ch)
    ctx = {"ch": ch, "section": "grades", "grades": listed, "kinds": KINDS, "flashes": flashes or []}
    return page(request, "grades/grades.html", ctx, status)


async def _send(request: Request, ch: str, body: dict[str, str]) -> Response:
    me = require(request, "write", ch)
    outcome = await backend(request).command(ch, body, me.name, COMMAND_WAIT_S)
    return await render(request, ch, [command_flash(request, outcome)], 422 if outcome.state == "rejected" else 200)


@router.post("/c/{ch}/grades")
async def define(request: Request, ch: str) -> Response:
    require(request, "write", ch)
    form = await request.form()
    return await _send(request, ch, {"type": "grade.define", "name": form_str(form, "name"), "colour": form_str(form, "colour")})


@router.post("/c/{ch}/grades/remove")
async def remove(request: Request, ch: str) -> Response:
    require(request, "write", ch)
    form = await request.form()
    return await _send(request, ch, {"type": "grade.remove", "name": form_str(form, "name")})


@router.post("/c/{ch}/grades/assign")
async def assign(request: Request, ch: str) -> Response:
    require(request, "write", ch)
    form = await request.form()
    body = {"type": "grade.assign", "name": form_str(form, "name"), "kind": form_str(form, "kind"), "value": form_str(form, "value")}
    return await _send(request, ch, body)


@router.post("/c/{ch}/grades/unassign")
async def unassign(request: Request, ch: str) -> Response:
    require(request, "write", ch)
    form = await request.form()
    body = {"type": "grade.unassign", "name": form_str(form, "name"), "kind": form_str(form, "kind"), "value": form_str(form, "value")}
    return await _send(request, ch, body)
