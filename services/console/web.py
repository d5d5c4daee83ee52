"""The request plumbing every console page shares: session, language, who is signed in,
CSRF on every state-changing request, scope and channel checks (issue 13)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from .backend import Backend, StaffKey
from .i18n import negotiate, translator
from .render import ROOT, page
from .session import CSRF_FIELD, CSRF_HEADER, Session, Sessions, csrf_ok

SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
log = logging.getLogger("unifier.console")


class Refused(Exception):
    """A page that cannot be shown to this person: the status and the words why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class NeedsSignIn(Exception):
    pass


def backend(request: Request) -> Backend:
    return request.app.state.console_backend  # type: ignore[no-any-return]


def sessions(request: Request) -> Sessions:
    return request.app.state.console_sessions  # type: ignore[no-any-return]


class ConsoleRoute(APIRoute):
    """Wraps every console handler: loads (or starts) the session, picks the language,
    resolves the signed-in key, checks CSRF on POST, writes the cookie back."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            store = sessions(request)
            await store.ready()
            found = store.read(request)
            session = found or Session()
            request.state.session = session
            request.state.lang = session.lang or negotiate(request.headers.get("accept-language"))
            request.state.me = await _signed_in(request, session)
            if request.method not in SAFE:
                sent = request.headers.get(CSRF_HEADER)
                if sent is None and _is_form(request):
                    form = await request.form()
                    value = form.get(CSRF_FIELD)
                    sent = value if isinstance(value, str) else None
                if not csrf_ok(found, sent) or not _same_origin(request):
                    _ = translator(request.state.lang)
                    response: Response = page(request, "error.html", {"message": _("csrf.failed")}, 403)
                    store.write(request, response, session)
                    return response
            try:
                response = await handler(request)
            except NeedsSignIn:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                if request.method not in SAFE:
                    target = request.headers.get("referer") or ROOT + "/"
                response = RedirectResponse(f"{ROOT}/signin?next={quote(_local(target))}", status_code=303)
                if request.headers.get("hx-request"):
                    response.headers["HX-Redirect"] = response.headers["location"]
            except Refused as err:
                response = page(request, "error.html", {"message": err.message}, err.status)
            except Exception:  # never a stack trace on a page: logged, and said plainly
                log.exception("console %s %s failed", request.method, request.url.path)
                _ = translator(request.state.lang)
                response = page(request, "error.html", {"message": _("error.unexpected")}, 500)
            session = request.state.session  # a handler may have replaced it (sign-in, language)
            if session is not found:
                store.write(request, response, session)
            return response

        return run


async def _signed_in(request: Request, session: Session) -> StaffKey | None:
    if session.key_id is None:
        return None
    return await backend(request).key(session.key_id)  # None once revoked


def _is_form(request: Request) -> bool:
    kind = request.headers.get("content-type", "")
    return kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))


def _same_origin(request: Request) -> bool:
    """An Origin header, when the browser sends one, must be this console's."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", request.url.netloc)


def _local(target: str) -> str:
    """Only paths inside the console are followed after sign-in (no open redirect)."""
    parts = urlsplit(target)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return path if path.startswith(ROOT + "/") and not path.startswith("//") else ROOT + "/"


def local_target(target: str | None) -> str:
    return _local(target or ROOT + "/")


def require(request: Request, scope: str = "read", channel: str | None = None) -> StaffKey:
    """The signed-in key, if it may do `scope` things in `channel`; else sign-in or 403."""
    me: StaffKey | None = request.state.me
    if me is None:
        raise NeedsSignIn()
    _ = translator(request.state.lang)
    if channel is not None and me.channel is not None and me.channel != channel:
        raise Refused(403, _("forbidden.channel", channel=me.channel))
    if not me.allows(scope):
        raise Refused(403, _("forbidden", scope=me.scope, needed=scope))
    return me


def set_session(request: Request, session: Session) -> None:
    request.state.session = session


def form_str(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""
