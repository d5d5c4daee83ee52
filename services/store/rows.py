"""The `users` rows of changed users, as the statements take them (repository.py
`save_users`, the rebuild's COPY, the pipelined batch's COPY payloads).

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
# The columns' types for rowcodec.encode: text, int8, boolean, the state's bytes (text's
# binary form is its UTF-8), text[].
USER_TYPES = "ttqtttbbbqqBta"

STAGE_USERS = """CREATE TEMP TABLE IF NOT EXISTS users_staged (
    id text, channel_id text, rev bigint, type text, member_id text, merged_into text, deleted boolean,
    blocked boolean, masked boolean, last_seen_at bigint, updated_at bigint, state text, name_key text, tags text[]
) ON COMMIT DELETE ROWS"""
"""The session's table `repository.save_user_rows` copies the users' rows into: `USER_COLUMNS`
with `users`' types (tests/integration/test_user_rows.py compares them), no constraint.
Created once a connection (pool.py `_init`): the role needs the TEMPORARY privilege
(docs/operations.md, "Upgrading"). Emptied at each commit of a transaction that used it."""


def user_row(u: User, rev: int) -> tuple[Any, ...]:
    """The `USER_COLUMNS` of a user at revision `rev`, as asyncpg's codecs take them: the
    state as its text (`User.state_json`, decoded: asyncpg's text codec takes a str)."""
    name_key, tags = search_columns(u)
    return (
        u.id, u.channel_id, rev, u.type, u.member_id, u.merged_into,
        u.deleted, u.blocked, u.masked, u.last_seen_at, u.updated_at, u.state_json().decode(),
        name_key, tags,
    )


def stored_user(state: str) -> User:
    """The user a `users.state` holds (the text `User.state_json` wrote; any older
    writer's JSON, too)."""
    return User.from_json(orjson.loads(state))


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


def user_record(u: User, rev: int) -> tuple[Any, ...]:
    """`user_row` with the state as its bytes, for `rowcodec.encode` (`USER_TYPES`):
    the binary COPY of the batch's users (issue 14, session 17)."""
    name_key, tags = search_columns(u)
    return (
        u.id, u.channel_id, rev, u.type, u.member_id, u.merged_into,
        u.deleted, u.blocked, u.masked, u.last_seen_at, u.updated_at, u.state_json(),
        name_key, tags,
    )


def user_records(users: Sequence[User], revs: dict[str, int]) -> list[tuple[Any, ...]]:
    """The changed users' rows at their next revision (`revs`: the revision each was
    loaded at, 0 or absent for a new one), for `repository.save_user_rows` and
    `copy_new_users` once encoded. Built apart so that a pipelined batch builds them
    before the next batch changes the same users in place (projection/pipeline.py)."""
    return [user_record(u, revs.get(u.id, 0) + 1) for u in users]
