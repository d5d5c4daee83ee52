"""Admin screens (issue 13, item 6): channel settings — member-hash secret (set or rotate,
never shown, H1), MU limit (I17), profile field types (P2) — and the SREs' dead letters
(list by code, the reason, retry). Both need an admin key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from services.domain.values import PARSERS

from ..i18n import translator
from ..render import page
from ..web import ConsoleRoute, backend, form_str, require

router = APIRouter(route_class=ConsoleRoute)


@router.get("/c/{ch}/settings")
async def settings(request: Request, ch: str) -> Response:
    require(request, "admin", ch)
    return await render(request, ch)


async def render(request: Request, ch: str, flashes: list[tuple[str, str]] | None = None, status: int = 200) -> Response:
    current = await backend(request).settings(ch)
    ctx = {"ch": ch, "section": "settings", "s": current, "types": sorted(PARSERS), "flashes": flashes or []}
    return page(request, "settings/settings.html", ctx, status)


async def _configure(request: Request, ch: str, changes: dict[str, Any]) -> Response:
    _ = translator(request.state.lang)
    try:
        await backend(request).configure(ch, changes)
    except ValueError as err:  # the settings function's refusal, in its words
        return await render(request, ch, [("error", str(err))], 422)
    return await render(request, ch, [("ok", _("settings.saved"))])


@router.post("/c/{ch}/settings/secret")
async def secret(request: Request, ch: str) -> Response:
    require(request, "admin", ch)
    form = await request.form()
    value = form.get("secret")
    if not isinstance(value, str) or not value:
        return await render(request, ch, status=422)
    return await _configure(request, ch, {"memberHashSecret": value})


@router.post("/c/{ch}/settings/mu")
async def mu_limit(request: Request, ch: str) -> Response:
    require(request, "admin", ch)
    form = await request.form()
    raw = form_str(form, "muLimit")
    if raw and not raw.isdigit():
        return await render(request, ch, [("error", f"MU: {raw!r}")], 422)
    return await _configure(request, ch, {"muLimit": int(raw) if raw else None})


@router.post("/c/{ch}/settings/fields")
async def field_type(request: Request, ch: str) -> Response:
    require(request, "admin", ch)
    form = await request.form()
    key = form_str(form, "key")
    full = key if key.startswith("profile.") else f"profile.{key}"
    return await _configure(request, ch, {"fields": {full: form_str(form, "type")}})


# ------------------------------------------------------------------------ dead letters


# The screen shows the newest letters of a code; retrying by code reaches every one of
# them, and `unifier dead-letters list` prints them all.
LETTERS_SHOWN = 200


@router.get("/deadletters")
async def dead_letters(request: Request, code: str = "", ch: str = "") -> Response:
    """Dead letters span channels (a bad record may name none); `ch` only keeps the
    channel's navigation on screen."""
    require(request, "admin")
    return await render_letters(request, code, ch=ch or None)


async def render_letters(
    request: Request, code: str, flashes: list[tuple[str, str]] | None = None, ch: str | None = None,
) -> Response:
    b = backend(request)
    found = await b.dead_letters(code or None, LETTERS_SHOWN)
    ctx = {
        "section": "deadletters", "ch": ch, "letters": found.letters, "counts": found.counts, "matching": found.matching,
        "code": code, "flashes": flashes or [],
    }
    return page(request, "deadletters/list.html", ctx)


@router.post("/deadletters/retry")
async def retry(request: Request) -> Response:
    require(request, "admin")
    form = await request.form()
    code = form_str(form, "code") or None
    where = None
    partition, offset = form_str(form, "partition"), form_str(form, "offset")
    if partition.isdigit() and offset.isdigit():
        where = (int(partition), int(offset))
    counts = await backend(request).retry_dead_letters(code, where)
    _ = translator(request.state.lang)
    return await render_letters(request, form_str(form, "show"), [("ok", _("dl.retried", **counts))], form_str(form, "ch") or None)
