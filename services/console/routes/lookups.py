"""The customer-lookup panel on the customer detail (issue 15, seed 004 §2-1 (2)): a
form per lookup, its parameters filled from the customer's bound fields, the answer
shown below it; and what automatic lookups recorded on the customer. The same
functions as the HTTP API's (services/lookup/actions.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from services.lookup.actions import LookupRefused, look_up, lookups_of
from services.lookup.client import customer_value
from services.store import lookups as store

from ..i18n import EN, JA
from ..render import page
from ..web import ConsoleRoute, backend, require

router = APIRouter(route_class=ConsoleRoute)

# The panel's messages, kept with it (added to the console's catalogue at import).
EN.update({
    "lookup.title": "Customer lookup",
    "lookup.open": "Open the customer lookup",
    "lookup.none": "No lookup is defined for this channel (an admin defines them with the HTTP API).",
    "lookup.run": "Look up",
    "lookup.required": "required",
    "lookup.bound": "from the customer's {field}",
    "lookup.results": "Answer of {name}",
    "lookup.empty": "No value",
    "lookup.failed": "The lookup failed ({code}): {detail}",
    "lookup.recorded": "Automatic lookups",
    "lookup.recorded.none": "No automatic lookup has run for this customer.",
    "lookup.filled": "Filled: {keys}",
    "lookup.auto": "Runs automatically on chats from: {media}",
    "lookup.back": "Back to the customer",
})
JA.update({
    "lookup.title": "顧客情報照会",
    "lookup.open": "顧客情報照会を開く",
    "lookup.none": "このチャンネルにはAPIが設定されていません(管理者が設定します)。",
    "lookup.run": "照会",
    "lookup.required": "必須",
    "lookup.bound": "顧客の{field}から",
    "lookup.results": "{name}の照会結果",
    "lookup.empty": "値なし",
    "lookup.failed": "照会に失敗しました({code}): {detail}",
    "lookup.recorded": "自動照会",
    "lookup.recorded.none": "この顧客にはまだ自動照会がありません。",
    "lookup.filled": "入力したフィールド: {keys}",
    "lookup.auto": "次のチャネルからの問い合わせで自動照会: {media}",
    "lookup.back": "顧客に戻る",
})


async def _customer(request: Request, ch: str, uid: str) -> dict[str, Any] | None:
    view = await backend(request).user(ch, uid)
    return None if view is None or "mergedInto" in view else view


@router.get("/c/{ch}/customers/{uid}/lookups")
async def panel(request: Request, ch: str, uid: str) -> Response:
    require(request, "read", ch)
    user = await _customer(request, ch, uid)
    if user is None:
        return page(request, "customers/gone.html", {"ch": ch, "section": "customers", "uid": uid}, 404)
    pool = request.app.state.pool
    forms = []
    for name, d in (await store.definitions(pool, ch)).items():
        params = [{**p, "value": customer_value(user, p["bind"]) if p["bind"] else ""} for p in d["params"]]
        forms.append({"name": name, "params": params, "media": d.get("media", [])})
    ctx = {"ch": ch, "section": "customers", "u": user, "forms": forms, "recorded": await store.results_of(pool, ch, uid)}
    template = "lookups/_panel.html" if request.headers.get("hx-request") else "lookups/panel.html"
    return page(request, template, ctx)


@router.post("/c/{ch}/customers/{uid}/lookups/{name}")
async def run(request: Request, ch: str, uid: str, name: str) -> Response:
    require(request, "read", ch)
    form = await request.form()
    given = {k[len("p."):]: v for k, v in form.items() if k.startswith("p.") and isinstance(v, str) and v != ""}
    ctx: dict[str, Any] = {"ch": ch, "section": "customers", "name": name, "u": {"id": uid}}
    status = 200
    try:
        ctx["answer"] = await look_up(request.app.state.pool, lookups_of(request.app.state), ch, uid, name, given)
    except LookupRefused as err:
        ctx["failure"] = {"code": err.code, "detail": err.detail}
        status = err.status
    if request.headers.get("hx-request"):
        # htmx swaps 2xx only: the failure is an answer to show, not a broken request.
        return page(request, "lookups/_answer.html", ctx)
    return page(request, "lookups/answer.html", ctx, status)
