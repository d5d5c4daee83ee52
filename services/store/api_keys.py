"""API keys in PostgreSQL (docs/contract.md, "HTTP API", Auth).

A key is `uk_<keyId>_<secret>`: `keyId` (8 hex characters) is public and finds the row,
`secret` is 256 random bits. Only the key's sha256 is stored. A fast hash is enough
here, unlike for passwords: bcrypt/argon2 slow down guessing of low-entropy secrets,
but nobody guesses 256 random bits, and a slow hash would cost every request
milliseconds of CPU. The stored and presented digests are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import asyncpg

SCOPES = ("read", "write", "admin")  # each allows what the ones before it allow


@dataclass(frozen=True, slots=True)
class Principal:
    """Who calls: the key's name (the commands' `actor`), scope and optional channel."""

    name: str
    scope: str
    channel: str | None = None

    def allows(self, scope: str, channel: str | None) -> bool:
        """Whether this key may make a call that needs `scope` in `channel`."""
        if SCOPES.index(self.scope) < SCOPES.index(scope):
            return False
        return self.channel is None or channel is None or self.channel == channel


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _key_id(key: str) -> str | None:
    parts = key.split("_", 2)  # the secret itself may contain "_"
    if len(parts) != 3 or parts[0] != "uk" or len(parts[1]) != 8:
        return None
    return parts[1]


async def create_key(
    conn: asyncpg.Connection | asyncpg.Pool, scope: str, channel: str | None, name: str | None,
) -> tuple[str, dict[str, Any]]:
    """A new key (returned once, never stored) and its record. Raises ValueError for a
    bad scope or a name another live key has."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    key_id = secrets.token_hex(4)
    key = f"uk_{key_id}_{secrets.token_urlsafe(32)}"
    try:
        row = await conn.fetchrow(
            """INSERT INTO api_keys (key_id, name, scope, channel_id, key_sha256) VALUES ($1, $2, $3, $4, $5)
               RETURNING key_id, name, scope, channel_id, created_at, revoked_at""",
            key_id, name or f"key-{key_id}", scope, channel, digest(key),
        )
    except asyncpg.UniqueViolationError:
        raise ValueError(f"a live key is already named {name!r}; revoke it or choose another name") from None
    return key, _record(row)


async def authenticate(conn: asyncpg.Connection | asyncpg.Pool, key: str) -> Principal | None:
    """The principal of a live key, or None (unknown, malformed or revoked)."""
    key_id = _key_id(key)
    if key_id is None:
        return None
    row = await conn.fetchrow(
        "SELECT name, scope, channel_id, key_sha256 FROM api_keys WHERE key_id = $1 AND revoked_at IS NULL", key_id
    )
    if row is None or not hmac.compare_digest(bytes(row["key_sha256"]), digest(key)):
        return None
    return Principal(row["name"], row["scope"], row["channel_id"])


def key_id_of(key: str) -> str | None:
    """The public id of a key (its prefix), or None when it is not shaped like one."""
    return _key_id(key.strip())


async def principal_by_id(conn: asyncpg.Connection | asyncpg.Pool, key_id: str) -> Principal | None:
    """The principal of the live key with this id; None once it is revoked. The console
    keeps only the id in its session cookie and asks again on every request, so revoking
    a key ends the sessions signed in with it."""
    row = await conn.fetchrow(
        "SELECT name, scope, channel_id FROM api_keys WHERE key_id = $1 AND revoked_at IS NULL", key_id
    )
    return None if row is None else Principal(row["name"], row["scope"], row["channel_id"])


async def list_keys(conn: asyncpg.Connection | asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT key_id, name, scope, channel_id, created_at, revoked_at FROM api_keys ORDER BY created_at, key_id"
    )
    return [_record(r) for r in rows]


async def revoke_key(conn: asyncpg.Connection | asyncpg.Pool, id_or_name: str) -> dict[str, Any] | None:
    """Revoke the live key with that keyId or name; None when there is none."""
    row = await conn.fetchrow(
        """UPDATE api_keys SET revoked_at = now()
            WHERE revoked_at IS NULL AND (key_id = $1 OR name = $1)
        RETURNING key_id, name, scope, channel_id, created_at, revoked_at""",
        id_or_name,
    )
    return None if row is None else _record(row)


def _record(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "keyId": row["key_id"], "name": row["name"], "scope": row["scope"], "channel": row["channel_id"],
        "createdAt": int(row["created_at"].timestamp() * 1000),
        "revokedAt": None if row["revoked_at"] is None else int(row["revoked_at"].timestamp() * 1000),
    }
