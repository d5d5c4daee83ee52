"""Unification (issue 13, item 3): candidates with a preview of which value wins each key
(U3, computed by the domain's own merge), approval, pending unifications with cancel,
and the manual merge dialog that refuses what U1 forbids and says why."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from services.domain.unification import MergeRefused, merge
from services.domain.user import User

from ..backend import Filters
from ..i18n import translator
from ..render import page
from ..web import ConsoleRoute, backend, form_str, require
from .customers import COMMAND_WAIT_S, base, command_flash, render_detail

router = APIRouter(route_class=ConsoleRoute)


@router.get("/c/{ch}/unification")
async def queue(request: Request, ch: str) -> Response:
    require(request, "read", ch)
    return await render_queue(request, ch)


async def render_queue(request: Request, ch: str, flashes: list[tuple[str, str]] | None = None, status: int = 200) -> Response:
    b = backend(request)
    candidates = await b.unifications(ch, "candidate")
    pending = await b.unifications(ch, "pending")
    ctx = {"ch": ch, "section": "unification", "candidates": candidates, "pending": pending, "flashes": flashes or []}
    return page(request, "unification/queue.html", ctx, status)


def refusal(_: Any, source: User | None, target: User | None) -> str | None:
    """Why U1 (or U6) forbids merging `source` into `target`, in the staff's words."""
    if source is None or target is None or not source.alive or not target.alive:
        return _("uni.u1.gone")
    if source.id == target.id:
        return _("uni.u1.same")
    if source.type == "member":
        return _("uni.u1.source_member", source=source.id)
    if target.type != "member":
        return _("uni.u1.target_not_member", target=target.id, type=_("type." + target.type))
    if source.blocked or target.blocked:
        return _("uni.u1.blocked")
    return None


def preview_rows(source: User, target: User) -> list[dict[str, Any]]:
    """Key by key, the value each side has and the one the merge keeps — from the
    domain's merge itself (U3, P3), never a second implementation of the priority."""
    _retired, merged, _record = merge(source, target, target.updated_at, "preview")
    rows = []
    for key in sorted(source.fields.keys() | target.fields.keys()):
        s, t, kept = source.fields.get(key), target.fields.get(key), merged.fields.get(key)
        if (s is None or s.v is None) and (t is None or t.v is None):
            continue
        winner = "target" if kept is t else "source"
        rows.append({
            "key": key, "winner": winner,
            "source": None if s is None else s.v, "target": None if t is None else t.v,
            "source_q": s is not None and s.q, "target_q": t is not None and t.q,
        })
    return rows


@router.get("/c/{ch}/unification/preview")
async def preview(request: Request, ch: str, source: str, target: str) -> Response:
    require(request, "read", ch)
    return await render_preview(request, ch, source, target)


async def render_preview(request: Request, ch: str, source_id: str, target_id: str, template: str = "unification/preview.html") -> Response:
    _ = translator(request.state.lang)
    b = backend(request)
    src, tgt = await b.state(ch, source_id), await b.state(ch, target_id)
    why = refusal(_, src, tgt)
    rows: list[dict[str, Any]] = []
    if why is None and src is not None and tgt is not None:
        try:
            rows = preview_rows(src, tgt)
        except MergeRefused as err:  # the domain's own U1 check, should the two ever differ
            why = str(err)
    ctx = {
        "ch": ch, "section": "unification", "source": await b.user(ch, source_id), "target": await b.user(ch, target_id),
        "rows": rows, "refused": why, "later": bool(src and src.booted),
    }
    return page(request, template, ctx, 200 if why is None else 422)


@router.post("/c/{ch}/unification/approve")
async def approve(request: Request, ch: str) -> Response:
    me = require(request, "write", ch)
    form = await request.form()
    source, target = form_str(form, "source"), form_str(form, "target")
    _ = translator(request.state.lang)
    b = backend(request)
    why = refusal(_, await b.state(ch, source), await b.state(ch, target))
    if why is not None:
        return await render_queue(request, ch, [("error", _("uni.refused", reason=why))], 422)
    outcome = await b.command(
        ch, {"type": "unification.approve", "sourceUserId": source, "targetUserId": target}, me.name, COMMAND_WAIT_S,
    )
    flash = command_flash(request, outcome)
    if outcome.state == "applied":
        # Merged at once (never booted): the member's profile shows the merge; otherwise the
        # source now waits for the member's next login, which its own page says.
        survivor = await b.user(ch, source)
        shown = target if survivor is not None and "mergedInto" in survivor else source
        return await render_detail(request, ch, shown, [flash])
    return await render_queue(request, ch, [flash], 422 if outcome.state == "rejected" else 200)


@router.post("/c/{ch}/unification/{source}/cancel")
async def cancel(request: Request, ch: str, source: str) -> Response:
    me = require(request, "write", ch)
    outcome = await backend(request).command(
        ch, {"type": "unification.cancel", "sourceUserId": source}, me.name, COMMAND_WAIT_S,
    )
    return await render_queue(request, ch, [command_flash(request, outcome)], 422 if outcome.state == "rejected" else 200)


# ----------------------------------------------------------------------- manual merge


@router.get("/c/{ch}/customers/{uid}/merge")
async def merge_dialog(request: Request, ch: str, uid: str, q: str = "") -> Response:
    """Seed 004's 顧客情報統合: search the target member, preview, merge."""
    require(request, "write", ch)
    b = backend(request)
    source = await b.user(ch, uid)
    if source is None or "mergedInto" in source:
        return await render_detail(request, ch, uid)
    members: list[dict[str, Any]] = []
    if q.strip():
        # Leads too: picking one shows why U1 refuses it, rather than hiding it.
        found = await b.search(ch, Filters(q=q.strip()), 20, None)
        members = [m for m in found.items if m["id"] != uid]
        exact = await b.search(ch, Filters(extra={"memberId": q.strip()}), 5, None)
        members = [m for m in exact.items if m["id"] not in {x["id"] for x in members}] + members
    _ = translator(request.state.lang)
    src_state = await b.state(ch, uid)
    why = None
    if src_state is not None and src_state.type == "member":
        why = _("uni.u1.source_member", source=uid)
    elif src_state is not None and src_state.blocked:
        why = _("uni.u1.blocked")
    ctx = {"ch": ch, "section": "customers", "source": source, "q": q, "members": members, "refused": why,
           "action": f"{base(ch)}/customers/{quote(uid, safe='')}/merge"}
    if request.headers.get("hx-request") and request.headers.get("hx-target") == "merge-results":
        return page(request, "unification/_members.html", ctx)
    return page(request, "unification/merge.html", ctx)


@router.get("/c/{ch}/customers/{uid}/merge/preview")
async def merge_preview(request: Request, ch: str, uid: str, target: str) -> Response:
    require(request, "write", ch)
    return await render_preview(request, ch, uid, target, "unification/_preview.html")
