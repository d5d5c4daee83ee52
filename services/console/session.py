"""The console's session: a signed cookie, and the CSRF token that every form carries.

The cookie holds no secret: the id of the API key the staff member signed in with
(never the key), a CSRF token and the chosen language, signed with itsdangerous so it
cannot be forged or altered. It is HttpOnly (no script reads it), SameSite=Strict (no
other site's page sends it) and Secure when the console is served over HTTPS; it lasts
`MAX_AGE_S`. The key is looked up again on every request, so revoking it
(`unifier api-key revoke`) ends every session signed in with it at once.

CSRF: the token is random per session, rendered into every form (`csrf` field) and
into htmx's request headers (`X-CSRF-Token`), and compared in constant time on every
state-changing request. SameSite=Strict already keeps other sites' requests cookieless;
the token also covers a browser that ignores SameSite.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

COOKIE = "unifier_console"
MAX_AGE_S = 12 * 3600  # a working day
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True, slots=True)
class Session:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    key_id: str | None = None  # the API key signed in with; None before sign-in
    lang: str | None = None  # chosen language; None: the browser's (Accept-Language)

    def to_json(self) -> dict[str, Any]:
        return {"c": self.csrf, "k": self.key_id, "l": self.lang}

    @staticmethod
    def from_json(raw: Any) -> Session | None:
        if not isinstance(raw, dict) or not isinstance(raw.get("c"), str):
            return None
        key, lang = raw.get("k"), raw.get("l")
        return Session(raw["c"], key if isinstance(key, str) else None, lang if isinstance(lang, str) else None)

    def signed_in(self, key_id: str) -> Session:
        # A new CSRF token at sign-in: a token seen before sign-in is not worth anything after.
        return Session(key_id=key_id, lang=self.lang)

    def with_lang(self, lang: str) -> Session:
        return replace(self, lang=lang)


class Sessions:
    """Reads and writes the session cookie with one signing secret."""

    def __init__(self, secret: str | bytes) -> None:
        self._signer = URLSafeTimedSerializer(secret, salt="unifier-console-session")

    async def ready(self) -> None:
        """Called before each request is handled; a subclass may fetch its secret here."""

    def read(self, request: Request) -> Session | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            return Session.from_json(self._signer.loads(raw, max_age=MAX_AGE_S))
        except BadSignature:  # altered, forged, or older than MAX_AGE_S
            return None

    def write(self, request: Request, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            self._signer.dumps(session.to_json()),
            max_age=MAX_AGE_S,
            path="/console",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def clear(self, response: Response) -> None:
        response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict")


def csrf_ok(session: Session | None, sent: str | None) -> bool:
    """Constant-time comparison of the token sent with the session's."""
    if session is None or not sent:
        return False
    return hmac.compare_digest(session.csrf.encode(), sent.encode())
