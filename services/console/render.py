"""Templates: one Jinja2 environment, the per-request context every page needs, and the
filters that turn stored values into what staff read (times, classes, values)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from .i18n import REFUSALS, REFUSALS_EN, translator

HERE = Path(__file__).parent
STATIC = HERE / "static"
ROOT = "/console"

# Staff of the seeds work in Japan: Japanese pages show Japan time, English pages UTC;
# each time says which, so nobody has to guess.
_ZONES = {"ja": (timezone(timedelta(hours=9)), "JST"), "en": (UTC, "UTC")}

env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def static(name: str) -> str:
    return f"{ROOT}/static/{name}"


def when(ms: Any, lang: str) -> str:
    """Epoch ms as `2026-11-30 09:15 JST` (or UTC)."""
    if not isinstance(ms, int | float) or isinstance(ms, bool):
        return "—"
    zone, label = _ZONES.get(lang, _ZONES["en"])
    return datetime.fromtimestamp(ms / 1000, zone).strftime("%Y-%m-%d %H:%M") + f" {label}"


def show(value: Any) -> str:
    """A profile value as text: lists joined, JSON for anything structured."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


env.globals["static"] = static
env.globals["root"] = ROOT
env.filters["show"] = show
env.filters["urlencode"] = lambda s: quote(str(s), safe="")


def page(request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    """Render `template` with the request's common context (language, CSRF, who)."""
    lang: str = request.state.lang
    ctx = {
        "_": translator(lang),
        "lang": lang,
        "csrf": request.state.session.csrf,
        "me": getattr(request.state, "me", None),
        "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        "flashes": [],
        "when": lambda ms: when(ms, lang),
        "refusal_meaning": lambda code: (REFUSALS.get(lang) or REFUSALS_EN).get(code) or REFUSALS_EN.get(code, ""),
        "ch": None,
        "section": None,
        **context,
    }
    html = env.get_template(template).render(ctx)
    return HTMLResponse(html, status_code=status_code)
