"""The staff console (issue 13): server-rendered pages (Jinja2) with htmx fragments,
served by the HTTP API's app at /console/, calling the API's own read and command
functions (docs/design.md, "The HTTP API and the console").

`mount(app)` is all the API's app factory calls. htmx is vendored and pinned in
static/ (no CDN at run time, no build step).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from .backend import Backend
from .render import ROOT, STATIC
from .session import Sessions

HTMX_VERSION = "2.0.11"


def mount(app: FastAPI, backend: Backend | None = None, *, drafts: Path | None = None) -> None:
    """Add the console to `app` at /console/. `backend` defaults to the API's own parts
    (`app.state.pool`, `app.state.bus`); the cookie-signing secret is read from the
    database at the first request (shared by every API process, see store/staff.py)."""
    from .adapter import ApiBackend
    from .routes import admin, auth, customers, grades, imports, lookups, unification

    app.state.console_backend = backend or ApiBackend(app)
    settings = getattr(app.state, "settings", None)
    data_dir = Path(getattr(settings, "data_dir", ".unifier"))
    app.state.console_drafts = drafts or data_dir / "console-uploads"
    app.state.console_sessions = _LazySessions(app)
    app.state.console_mu = {}  # channel -> (monotonic time, MU count), see routes/customers.mu
    app.mount(f"{ROOT}/static", StaticFiles(directory=STATIC), name="console-static")
    for module in (auth, lookups, customers, unification, imports, grades, admin):
        app.include_router(module.router, prefix=ROOT, include_in_schema=False)


class _LazySessions(Sessions):
    """Sessions whose secret comes from the database on first use (the pool exists only
    once the app's lifespan has started)."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._ready = False

    async def ready(self) -> None:
        if not self._ready:
            from services.store import staff

            Sessions.__init__(self, await staff.session_secret(self._app.state.pool))
            self._ready = True
