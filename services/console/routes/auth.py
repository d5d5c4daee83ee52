"""Sign-in with an API key, sign-out, the language switch, the channel picker.

Staff accounts are API keys: each staff member signs in with a key of their own
(`unifier api-key create --scope write --name yamada`); its name is the `actor` of every
command they send (I16's staff log), its scope and channel bound what they may do.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..i18n import CATALOGUE, translator
from ..render import ROOT, page
from ..session import Session
from ..web import ConsoleRoute, backend, form_str, local_target, require, set_session

router = APIRouter(route_class=ConsoleRoute)


@router.get("/")
async def home(request: Request) -> Response:
    me = require(request)
    if me.channel is not None:
        return RedirectResponse(f"{ROOT}/c/{me.channel}/customers", status_code=303)
    channels = await backend(request).channels()
    return page(request, "channels.html", {"channels": channels})


@router.get("/open")
async def open_channel(request: Request, channel: str = "") -> Response:
    require(request)
    channel = channel.strip()
    if not channel:
        return RedirectResponse(f"{ROOT}/", status_code=303)
    return RedirectResponse(f"{ROOT}/c/{quote(channel, safe='')}/customers", status_code=303)


@router.get("/signin")
async def signin_form(request: Request, next: str = "") -> Response:
    return page(request, "signin.html", {"next": local_target(next)})


@router.post("/signin")
async def signin(request: Request) -> Response:
    form = await request.form()
    key = await backend(request).authenticate(form_str(form, "key"))
    if key is None:
        _ = translator(request.state.lang)
        return page(
            request, "signin.html",
            {"next": local_target(form_str(form, "next")), "flashes": [("error", _("signin.bad_key"))]},
            401,
        )
    session: Session = request.state.session
    set_session(request, session.signed_in(key.id))
    return RedirectResponse(local_target(form_str(form, "next")), status_code=303)


@router.post("/signout")
async def signout(request: Request) -> Response:
    session: Session = request.state.session
    set_session(request, Session(lang=session.lang))
    return RedirectResponse(f"{ROOT}/signin", status_code=303)


@router.post("/lang")
async def switch_language(request: Request) -> Response:
    form = await request.form()
    lang = form_str(form, "lang")
    if lang in CATALOGUE:
        session: Session = request.state.session
        set_session(request, session.with_lang(lang))
    return RedirectResponse(local_target(form_str(form, "next")), status_code=303)
