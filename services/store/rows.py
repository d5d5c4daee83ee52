"""The `users` rows of changed users, as the statements take them (repository.py
`save_users`, the rebuild's COPY, the pipelined batch's arguments).

Pure and synchronous, apart from the asyncpg statements that send them, so that it runs
compiled by mypyc with the domain core (services/compiled_core.py): every live batch
builds a row for each user it changed (~5 µs a fact interpreted, issue 14 session 11).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from services.domain.user import User

USER_COLUMNS = (
    "id", "channel_id", "rev", "type", "member_id", "merged_into", "deleted", "blocked", "masked",
    "last_seen_at", "updated_at", "state", "name_key", "tags",
)


def user_row(u: User, rev: int) -> tuple[Any, ...]:
    """The `USER_COLUMNS` of a user at revision `rev`. The state goes as its bytes
    (`User.state_json`) wrapped for the pool's json codec, which hands them on as they
    are (orjson.dumps of a Fragment): one serialisation per user written, no dict."""
    name_key, tags = search_columns(u)
    return (
        u.id, u.channel_id, rev, u.type, u.member_id, u.merged_into,
        u.deleted, u.blocked, u.masked, u.last_seen_at, u.updated_at, orjson.Fragment(u.state_json()),
        name_key, tags,
    )


def search_columns(u: User) -> tuple[str | None, list[str]]:
    """What the staff search indexes, kept in columns of their own rather than index
    expressions over `state`: an index on `state` would make every user update a non-HOT
    one (new entries in every index of the table, for a boot that moved only lastSeenAt).
    `name_key` is the name lowercased as `q` is (queries._q_patterns); `tags` the staff
    tags (never NUL, I9 — a NUL is dropped so that the row can always be stored)."""
    name = u.fields.get("name")
    value = None if name is None else name.v
    key = value.lower().replace("\x00", "") if isinstance(value, str) else None
    return key, [t.replace("\x00", "") for t in u.tags] if u.tags else []


def user_columns(users: Sequence[User], revs: dict[str, int]) -> list[list[Any]]:
    """`save_users`' statement arguments: the changed users at their next revision, by
    column. Built apart so that a pipelined batch builds them before the next batch
    changes the same users in place (projection/pipeline.py)."""
    cols: list[list[Any]] = [list(col) for col in zip(*[user_row(u, revs.get(u.id, 0) + 1) for u in users], strict=True)]
    # an array of arrays would be read as one two-dimensional array: each user's tags go
    # as their JSON text (most users have none: no serialisation for them)
    cols[13] = [orjson.dumps(tags).decode() if tags else "[]" for tags in cols[13]]
    return cols
