"""What the API routes and the console do with lookups — one code path, two
presentations (docs/design.md, "The HTTP API and the console")."""

from __future__ import annotations

import base64
from typing import Any

import asyncpg

from services.store import lookups as store
from services.store.queries import find_user, survivor_of

from . import crypto
from .client import LookupFailed, Lookups, check_params, result_values


def lookups_of(state: Any) -> Lookups:
    """The process's lookup client (one HTTP client, breakers, rate limits), made on
    first use from `state.settings` (the app's state; closed by the app's lifespan)."""
    if getattr(state, "lookups", None) is None:
        state.lookups = Lookups(state.settings)
    lookups: Lookups = state.lookups
    return lookups


class LookupRefused(Exception):
    """Answer `status` with `detail` (and `errors`, one per bad parameter)."""

    def __init__(self, status: int, code: str, detail: str, errors: list[dict[str, str]] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.errors, self.retry_after = status, code, detail, errors, retry_after


def public(definition: dict[str, Any]) -> dict[str, Any]:
    """A definition as shown to staff: never the key, not even wrapped."""
    return {k: v for k, v in definition.items() if k != "wrappedKey"}


async def define_command(
    pool: asyncpg.Pool, lookups: Lookups | None, kek: bytes | None, channel_id: str, name: str, body: dict[str, Any],
    *, rotate_key: bool = False,
) -> tuple[dict[str, Any], str | None]:
    """The `lookup.define` command for `body`, and the payload key (base64) when one was
    generated — shown to the admin this once. An encrypted lookup keeps its key when
    redefined, unless `rotate_key`."""
    command: dict[str, Any] = {"type": "lookup.define", "name": name, **body}
    shown: str | None = None
    if body.get("encrypted"):
        if kek is None:
            # The request cannot be served by this service as configured: refused like an
            # unusable definition, not as an outage (nothing is wrong with the service).
            raise LookupRefused(422, "key_unavailable", "encrypted lookups need UNIFIER_LOOKUP_KEK configured on the service")
        old = await store.definition(pool, channel_id, name)
        if old is not None and old.get("encrypted") and old.get("wrappedKey") and not rotate_key:
            command["wrappedKey"] = old["wrappedKey"]
        else:
            key = crypto.new_key()
            command["wrappedKey"] = crypto.wrap(kek, key, channel_id, name)
            shown = base64.b64encode(key).decode()
    if lookups is not None:
        lookups.breaker.forget((channel_id, name))  # a fixed URL deserves a fresh start
    return command, shown


async def look_up(
    pool: asyncpg.Pool, lookups: Lookups, channel_id: str, user_id: str, name: str, given: dict[str, str],
) -> dict[str, Any]:
    """Call lookup `name` for the user (a merged id followed to its survivor) with staff's
    parameters; bound ones not given come from the customer. Nothing is stored."""
    definition = await store.definition(pool, channel_id, name)
    if definition is None:
        raise LookupRefused(404, "unknown_lookup", f"no lookup {name!r} in channel {channel_id!r}")
    user = await find_user(pool, channel_id, "id", user_id)
    if user is not None and "mergedInto" in user:
        survivor = await survivor_of(pool, channel_id, user_id)
        user = await find_user(pool, channel_id, "id", survivor) if survivor else None
    if user is None:
        raise LookupRefused(404, "unknown_user", f"no user {user_id!r} in channel {channel_id!r}")
    params, errors = check_params(definition, given, user)
    if errors:
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise LookupRefused(422, "invalid_params", detail, errors)
    try:
        answer = await lookups.call(channel_id, name, definition, params)
    except LookupFailed as failure:
        raise LookupRefused(failure.status, failure.code, failure.message, retry_after=failure.retry_after) from None
    values = result_values(definition, answer)
    return {
        "name": name, "userId": user["id"],
        "results": [{"label": r["label"], "key": r["key"], "value": values[r["key"]]} for r in definition["results"]],
    }
