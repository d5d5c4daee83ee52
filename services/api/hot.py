"""The hot reads, answered before FastAPI sees them: `GET /v1/channels/{ch}/users/{id}`
and `GET /v1/channels/{ch}/users?email=…` (issue 12, item 7: 1,000 reads/s on 2 cores).

Why: FastAPI's routing, dependency solving and parameter validation cost a read more CPU
than the read itself (docs/decisions.md, "HTTP API: reads measured"). What: this ASGI
middleware answers only the *plain success* of those two requests, with the same query
functions and the same JSON as the routes in routes/users.py:

- the path is exactly one of the two, the query string empty (by id) or exactly one
  `email` (the lookup), every value within the routes' length limits;
- the key is a live key allowed to read that channel (auth.principal_for_key: the same
  cache, so revocation holds within auth.CACHE_S);
- by id: the user exists and is live (not deleted, not merged away); the lookup: the
  e-mail is one `clean_email` accepts.

Anything else — no key, a bad key, a wrong scope or channel, a 404, a 410, a 422, any
other parameter, an error — goes on to FastAPI untouched, which answers as the contract
says (the same code as always: this path adds no answer of its own). So the contract and
the OpenAPI document are the routes', unchanged; tests/integration/test_api_users.py
checks that both paths give the same bytes.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from services.domain.hygiene import clean_email
from services.domain.values import Rejected
from services.store import queries
from services.store.queries import UserFilter

from .auth import principal_for_key

log = logging.getLogger("unifier.api")

_PREFIX = "/v1/channels/"
_MAX_CHANNEL, _MAX_USER_ID, _MAX_TEXT = 128, 256, 256  # params.Channel, params.UserId, params.Text
_PAGE = 50  # list_users' default limit


class HotReads:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"].startswith(_PREFIX):
            body = await self._answer(scope)
            if body is not None:
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope) -> bytes | None:
        """The 200 answer's body, or None to let FastAPI answer."""
        if scope.get("root_path"):
            return None
        parts = scope["path"][len(_PREFIX):].split("/")
        if len(parts) == 3 and parts[1] == "users" and not scope["query_string"]:
            ch, user_id, email = parts[0], parts[2], None
            if not 0 < len(user_id) <= _MAX_USER_ID:
                return None
        elif len(parts) == 2 and parts[1] == "users":
            query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            if len(query) != 1 or query[0][0] != "email" or not 0 < len(query[0][1]) <= _MAX_TEXT:
                return None
            ch, user_id, email = parts[0], None, query[0][1]
        else:
            return None
        if not 0 < len(ch) <= _MAX_CHANNEL:
            return None
        state = scope["app"].state
        try:
            pool = state.hot_pool
            if not await _may_read(state.pool, scope, ch):
                return None
            if user_id is not None:
                found = await queries.find_user(pool, ch, "id", user_id)
                if found is None or "mergedInto" in found:
                    return None  # 404 / 410 with their Link: the route's
                return orjson.dumps(found)
            try:
                cleaned = clean_email(email)  # type: ignore[arg-type]
            except Rejected:
                return None
            items, nxt = await queries.search_users(pool, ch, UserFilter(email=cleaned), limit=_PAGE)
            return orjson.dumps({"items": items, "next": nxt})
        except Exception:  # the database away, …: the route meets it again and answers it (503)
            log.debug("hot read handed to the route", exc_info=True)
            return None


async def _may_read(pool: Any, scope: Scope, channel: str) -> bool:
    """Whether the request's bearer key may read `channel` (what auth.require("read")
    accepts; what it refuses, it answers itself)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")  # as FastAPI's HTTPBearer
            key = key.strip()
            if scheme.lower() != "bearer" or not key:
                return False
            principal = await principal_for_key(pool, key)
            return principal is not None and principal.allows("read", channel)
    return False
