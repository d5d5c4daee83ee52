"""Customers (issue 13, items 1 and 2): the list per channel, the detail with provenance,
timeline and merge history, profile edits, block/unblock/delete, adding a lead."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from services.domain.user import User

from ..backend import Filters, Outcome
from ..i18n import refusal, translator
from ..render import ROOT, page
from ..web import ConsoleRoute, backend, form_str, require

router = APIRouter(route_class=ConsoleRoute)

PAGE_SIZE = 50
TIMELINE_SIZE = 30
COMMAND_WAIT_S = 5.0


def base(ch: str) -> str:
    return f"{ROOT}/c/{quote(ch, safe='')}"


def _day_ms(text: str, end: bool = False) -> int | None:
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(day.timestamp() * 1000) + (86_400_000 - 1 if end else 0)


def filters_from(params: dict[str, str]) -> Filters:
    masked = {"only": True, "exclude": False}.get(params.get("masked", ""))
    kind = params.get("type") or None
    return Filters(
        q=(params.get("q") or "").strip() or None,
        type=kind if kind in ("lead", "member", "anonymous") else None,
        tag=(params.get("tag") or "").strip() or None,
        grade=(params.get("grade") or "").strip() or None,
        blocked=params.get("blocked") == "only",
        masked=masked,
        seen_after=_day_ms(params.get("seen_after", "")),
        seen_before=_day_ms(params.get("seen_before", ""), end=True),
    )


@router.get("/c/{ch}/customers")
async def customers(request: Request, ch: str) -> Response:
    require(request, "read", ch)
    params = dict(request.query_params)
    filters = filters_from(params)
    cursor = params.get("cursor") or None
    limit = int(params["limit"]) if params.get("limit", "").isdigit() else PAGE_SIZE
    b = backend(request)
    found = await b.search(ch, filters, max(1, min(limit, 100)), cursor)
    items = list(found.items)
    if filters.q and cursor is None:
        # "Search by any identifier": an exact user id, memberId or veilId comes first.
        exact = await _exact(request, ch, filters.q)
        seen = {u["id"] for u in items}
        items = [u for u in exact if u["id"] not in seen] + items
    kept = {k: v for k, v in params.items() if k != "cursor" and v}
    next_url = f"{base(ch)}/customers?{urlencode({**kept, 'cursor': found.next})}" if found.next else None
    first_url = f"{base(ch)}/customers?{urlencode(kept)}" if cursor else None
    ctx: dict[str, Any] = {
        "ch": ch, "section": "blocked" if filters.blocked else "customers", "params": params,
        "users": items, "next_url": next_url, "first_url": first_url, "grades": await b.grades(ch),
    }
    if request.headers.get("hx-request") and request.headers.get("hx-target") == "results":
        return page(request, "customers/_results.html", ctx)
    return page(request, "customers/list.html", ctx)


MU_TTL_S = 15.0


@router.get("/c/{ch}/mu")
async def mu(request: Request, ch: str) -> Response:
    """C5, loaded after the list (htmx `load`): an exact count over the channel's live
    leads and members takes ~1.6 s on a million users, so the list never waits for it,
    and each process keeps a count for MU_TTL_S so that paging does not count again."""
    require(request, "read", ch)
    cache: dict[str, tuple[float, int]] = request.app.state.console_mu
    now = time.monotonic()
    hit = cache.get(ch)
    if hit is None or now - hit[0] > MU_TTL_S:
        hit = (now, await backend(request).mu_count(ch))
        cache[ch] = hit
    settings = await backend(request).settings(ch)
    return page(request, "customers/_mu.html", {"ch": ch, "mu": hit[1], "settings": settings})


async def _exact(request: Request, ch: str, q: str) -> list[dict[str, Any]]:
    b = backend(request)
    out: list[dict[str, Any]] = []
    user = await b.user(ch, q)
    if user is not None and "mergedInto" not in user:
        out.append(user)
    for key in ("memberId", "veilId"):
        page_ = await b.search(ch, Filters(extra={key: q}, type="any"), 5, None)
        out.extend(page_.items)
    return out


@router.post("/c/{ch}/customers/leads")
async def add_lead(request: Request, ch: str) -> Response:
    me = require(request, "write", ch)
    form = await request.form()
    profile = {k: v for k in ("email", "mobileNumber") if (v := form_str(form, k))}
    outcome = await backend(request).command(ch, {"type": "lead.create", "profile": profile}, me.name, COMMAND_WAIT_S)
    if outcome.state == "applied" and outcome.user:
        return RedirectResponse(f"{base(ch)}/customers/{quote(outcome.user['id'], safe='')}", status_code=303)
    return await _back_with(request, ch, None, outcome)


# ----------------------------------------------------------------------------- detail


@router.get("/c/{ch}/customers/{uid}")
async def detail(request: Request, ch: str, uid: str) -> Response:
    require(request, "read", ch)
    return await render_detail(request, ch, uid)


async def render_detail(request: Request, ch: str, uid: str, flashes: list[tuple[str, str]] | None = None, status: int = 200) -> Response:
    b = backend(request)
    view = await b.user(ch, uid)
    if view is None:
        return page(request, "customers/gone.html", {"ch": ch, "section": "customers", "uid": uid}, 404)
    if "mergedInto" in view:
        return page(request, "customers/gone.html", {"ch": ch, "section": "customers", "uid": uid, "merged_into": view["mergedInto"]}, 410)
    state = await b.state(ch, uid)
    timeline = await b.activities(ch, uid, TIMELINE_SIZE, None)
    merges = await b.merges(ch, uid)
    candidates = []
    for cid in (view.get("unification") or {}).get("candidates", []):
        other = await b.user(ch, cid)
        if other is not None and "mergedInto" not in other:
            candidates.append(other)
    ctx = {
        "ch": ch, "section": "blocked" if view.get("blocked") else "customers", "u": view,
        "provenance": provenance(state), "timeline": timeline, "merges": merges,
        "candidates": candidates, "flashes": flashes or [],
    }
    return page(request, "customers/detail.html", ctx, status)


def provenance(state: User | None) -> list[dict[str, Any]]:
    """Each profile value with where it came from (C4, U3): qualified or not, member
    data or not, and when it was set. Masked users show none (I17)."""
    if state is None or state.masked:
        return []
    return [
        {"key": key, "value": val.v, "qualified": val.q, "member": val.m, "at": val.t}
        for key, val in sorted(state.fields.items())
        if val.v is not None
    ]


@router.get("/c/{ch}/customers/{uid}/timeline")
async def timeline(request: Request, ch: str, uid: str, cursor: str = "") -> Response:
    require(request, "read", ch)
    found = await backend(request).activities(ch, uid, TIMELINE_SIZE, cursor or None)
    return page(request, "customers/_timeline.html", {"ch": ch, "u": {"id": uid}, "timeline": found})


@router.post("/c/{ch}/customers/{uid}/profile")
async def edit_profile(request: Request, ch: str, uid: str) -> Response:
    me = require(request, "write", ch)
    form = await request.form()
    profile: dict[str, Any] = {}
    for field in ("email", "mobileNumber"):
        if value := form_str(form, field):
            profile[field] = value
    key, value = form_str(form, "key"), form_str(form, "value")
    if key:
        profile[key.removeprefix("profile.")] = value
    body: dict[str, Any] = {"type": "profile.update", "userId": uid, "profile": profile}
    if name := form_str(form, "name"):
        body["name"] = name
    tags = form_str(form, "tags")
    if tags:
        body["tags"] = [t.strip() for t in tags.split(",") if t.strip()]
    outcome = await backend(request).command(ch, body, me.name, COMMAND_WAIT_S)
    return await _back_with(request, ch, uid, outcome)


@router.post("/c/{ch}/customers/{uid}/block")
async def block(request: Request, ch: str, uid: str) -> Response:
    me = require(request, "write", ch)
    outcome = await backend(request).command(ch, {"type": "user.block", "userId": uid}, me.name, COMMAND_WAIT_S)
    return await _back_with(request, ch, uid, outcome, done="block.done")


@router.post("/c/{ch}/customers/{uid}/unblock")
async def unblock(request: Request, ch: str, uid: str) -> Response:
    me = require(request, "write", ch)
    outcome = await backend(request).command(ch, {"type": "user.unblock", "userId": uid}, me.name, COMMAND_WAIT_S)
    return await _back_with(request, ch, uid, outcome)


@router.get("/c/{ch}/customers/{uid}/delete")
async def delete_confirm(request: Request, ch: str, uid: str) -> Response:
    require(request, "admin", ch)
    view = await backend(request).user(ch, uid)
    if view is None or "mergedInto" in view:
        return await render_detail(request, ch, uid)
    return page(request, "customers/delete.html", {"ch": ch, "section": "customers", "u": view})


@router.post("/c/{ch}/customers/{uid}/delete")
async def delete(request: Request, ch: str, uid: str) -> Response:
    me = require(request, "admin", ch)
    outcome = await backend(request).command(ch, {"type": "user.delete", "userId": uid}, me.name, COMMAND_WAIT_S)
    if outcome.state == "applied":
        return RedirectResponse(f"{base(ch)}/customers", status_code=303)
    return await _back_with(request, ch, uid, outcome)


async def _back_with(request: Request, ch: str, uid: str | None, outcome: Outcome, done: str = "cmd.applied") -> Response:
    """After a command: the page again with what became of it (applied, refused, pending)."""
    flashes = [command_flash(request, outcome, done)]
    if uid is None:
        return page(request, "error.html", {"ch": ch, "message": flashes[0][1]}, 422 if outcome.state == "rejected" else 202)
    status = 422 if outcome.state == "rejected" else 200
    return await render_detail(request, ch, uid, flashes, status)


def command_flash(request: Request, outcome: Outcome, done: str = "cmd.applied") -> tuple[str, str]:
    _ = translator(request.state.lang)
    if outcome.state == "applied":
        return ("ok", _(done))
    if outcome.state == "rejected":
        return ("error", _("cmd.rejected", reason=refusal(request.state.lang, outcome.code, outcome.reason)))
    return ("info", _("cmd.pending", event_id=outcome.event_id))
