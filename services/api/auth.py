"""Who may call what (docs/contract.md, "HTTP API", Auth): `Authorization: Bearer <key>`.

No key or an unknown (or revoked) key: 401. A key whose scope is too low, or that is
bound to another channel: 403. `read` < `write` < `admin`. The console signs staff in
with the same `principal_for_key`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.store import api_keys
from services.store.api_keys import Principal

from .problems import Problem

__all__ = ["Principal", "principal_for_key", "require"]

_bearer = HTTPBearer(auto_error=False, description="An API key from `unifier api-key create`.")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


CACHE_S = 2.0
"""How long a checked key is trusted without asking PostgreSQL again: a revoked key is
refused within this time by every API process (docs/contract.md, "HTTP API", Auth)."""
_CACHE_MAX = 10_000
_checked: dict[bytes, tuple[Principal, float]] = {}  # sha256 of a live key -> (principal, until)


async def principal_for_key(pool: asyncpg.Pool, key: str) -> Principal | None:
    """The principal of a live API key, or None (unknown, malformed or revoked). A live
    key is remembered for CACHE_S seconds, by its hash only."""
    key = key.strip()
    digest = api_keys.digest(key)
    now = time.monotonic()
    cached = _checked.get(digest)
    if cached is not None and cached[1] > now:
        return cached[0]
    principal = await api_keys.authenticate(pool, key)
    if principal is None:
        _checked.pop(digest, None)
        return None
    if len(_checked) >= _CACHE_MAX:
        _checked.clear()
    _checked[digest] = (principal, now + CACHE_S)
    return principal


async def pool_of(request: Request) -> asyncpg.Pool:
    """The app's one asyncpg pool (a dependency: `Annotated[asyncpg.Pool, Depends(pool_of)]`;
    async, so FastAPI does not hand it to a worker thread)."""
    pool: asyncpg.Pool = request.app.state.pool
    return pool


Pool = Annotated[asyncpg.Pool, Depends(pool_of)]


def require(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller's principal if its key allows `scope` in the path's
    channel (`{ch}`), else 401/403 as problem documents."""

    async def dependency(
        request: Request, pool: Pool,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
            raise Problem(401, "an API key is required: Authorization: Bearer <key>", headers=_CHALLENGE)
        principal = await principal_for_key(pool, credentials.credentials)
        if principal is None:
            raise Problem(401, "unknown or revoked API key", headers=_CHALLENGE)
        channel = request.path_params.get("ch")
        if not principal.allows(scope, channel):
            if principal.channel is not None and channel is not None and principal.channel != channel:
                raise Problem(403, f"this key is limited to channel {principal.channel!r}")
            raise Problem(403, f"this call needs a {scope!r} key; this key's scope is {principal.scope!r}")
        return principal

    dependency.__name__ = f"require_{scope}"
    return dependency


Reader = Annotated[Principal, Depends(require("read"))]
Writer = Annotated[Principal, Depends(require("write"))]
Admin = Annotated[Principal, Depends(require("admin"))]
