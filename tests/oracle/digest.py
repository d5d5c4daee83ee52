"""The state digest as it was computed before issue 14 session 12 (services/replay/digest.py
at a970561), kept as the oracle of tests/integration/test_digest.py: the faster digest
must give the value this one gives for any stored state, whatever its key order.

A verbatim copy of its computation (every user's stored state decoded and dumped again
with sorted keys, in id order; then the merges, grades, grade holders and lookups).
Never edit it to make a test pass.
"""

from __future__ import annotations

import hashlib
from typing import Any

import asyncpg
import orjson

from services.store.pool import borrow

_OPTS = orjson.OPT_SORT_KEYS


async def state_digest(conn: asyncpg.Connection | asyncpg.Pool) -> str:
    async with borrow(conn) as c, c.transaction(isolation="repeatable_read", readonly=True):
        return await digest_in_transaction(c)


async def digest_in_transaction(c: asyncpg.Connection) -> str:
    h = hashlib.sha256()
    async for row in c.cursor("SELECT state::text FROM users ORDER BY id", prefetch=10_000):
        h.update(orjson.dumps(orjson.loads(row[0]), option=_OPTS) + b"\n")
    h.update(b"--merges--\n")
    async for row in c.cursor(
        "SELECT channel_id, source_id, target_id, causation_id, occurred_at, contested FROM merges ORDER BY channel_id, source_id",
        prefetch=2000,
    ):
        merge = dict(row)
        merge["contested"] = _json(merge["contested"])
        h.update(orjson.dumps(merge, option=_OPTS) + b"\n")
    h.update(b"--grades--\n")
    for row in await c.fetch("SELECT channel_id, name, colour FROM grades ORDER BY channel_id, name"):
        h.update(orjson.dumps(list(row)) + b"\n")
    h.update(b"--grade-holders--\n")
    async for row in c.cursor("SELECT channel_id, name, kind, value FROM grade_holders ORDER BY 1, 2, 3, 4", prefetch=10_000):
        h.update(orjson.dumps(list(row)) + b"\n")
    h.update(b"--lookups--\n")  # definitions and recorded answers (seed 004 §2)
    for row in await c.fetch("SELECT channel_id, name, definition FROM lookups ORDER BY channel_id, name"):
        h.update(orjson.dumps([row[0], row[1], _json(row[2])], option=_OPTS) + b"\n")
    async for row in c.cursor(
        "SELECT channel_id, event_id, user_id, name, occurred_at, record FROM lookup_results ORDER BY 1, 2", prefetch=2000,
    ):
        h.update(orjson.dumps([*list(row)[:5], _json(row[5])], option=_OPTS) + b"\n")
    return h.hexdigest()


def _json(value: Any) -> Any:
    """json(b) arrives decoded on the pool's connections and as text on plain ones: the
    digest must not depend on which connection computed it."""
    return orjson.loads(value) if isinstance(value, str) else value
