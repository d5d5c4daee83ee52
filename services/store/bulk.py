"""A rebuild's writes into its fresh schema: binary COPY instead of statements over
arrays.

Nobody else writes a schema while it is rebuilt and a rebuild writes each user once
(`replay/resident.py`), so its writes need neither the revision fence nor the conflict
handling of the live projection's (repository.py). The rows are the live writers' rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg

from services.domain.core import Activity
from services.domain.directory import Identity
from services.domain.user import User

from .repository import USER_COLUMNS, user_row


async def copy_users(conn: asyncpg.Connection, users: Sequence[User]) -> None:
    """Users that are not in the store yet (revision 1). The rows are made as COPY
    sends them, so PostgreSQL takes in the first while Python serialises the next."""
    if users:
        await conn.copy_records_to_table("users", records=(user_row(u, 1) for u in users), columns=USER_COLUMNS)


async def copy_identities(conn: asyncpg.Connection, keyed: Sequence[tuple[User, frozenset[Identity]]]) -> None:
    """The identities of users that have none in the store yet."""
    if keyed:
        await conn.copy_records_to_table(
            "identities",
            records=((u.channel_id, kind, value, u.id, q) for u, keys in keyed for kind, value, q in keys),
            columns=("channel_id", "kind", "value", "user_id", "qualified"),
        )


async def copy_activities(conn: asyncpg.Connection, acts: Sequence[Activity]) -> None:
    if acts:
        await conn.copy_records_to_table(
            "activities",
            records=[(a.channel_id, a.event_id, a.user_id, a.kind, a.at, a.body) for a in acts],
            columns=("channel_id", "event_id", "user_id", "kind", "occurred_at", "body"),
        )


async def copy_applied(
    conn: asyncpg.Connection, applied: Sequence[tuple[str, str, int]], clocks: Mapping[str, int] | None = None,
) -> None:
    """A rebuild's applied eventIds (channel, eventId, event time), and each channel's
    clock (`applied_clocks`, swept at it: a rebuild writes only the window). Each is
    written once: an eventId applied again after it was forgotten is written by
    `save_applied`."""
    if applied:
        await conn.copy_records_to_table("applied_events", records=applied, columns=("channel_id", "event_id", "at"))
    if clocks:
        await conn.copy_records_to_table(
            "applied_clocks", records=[(c, t, t) for c, t in clocks.items()], columns=("channel_id", "clock", "swept"),
        )
