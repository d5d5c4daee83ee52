"""The `users` row of a user (repository.user_row), without a database: what save_users
and the rebuild's COPY send is what the rows were before issue 14 made them cheaper."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings

from services.domain.user import User
from services.store.repository import USER_COLUMNS, stored_user, user_row
from tests.unit.test_domain_user import _any_user


def _reference_row(u: User, rev: int) -> tuple[Any, ...]:
    """The row as it was built from the state's JSON form (before issue 14), the state
    in the digest's canonical form, sorted keys (issue 14, session 12: stored canonical)."""
    state = u.to_json()
    name = (state.get("fields") or {}).get("name")
    value = name[0] if isinstance(name, list) and name else None
    key = value.lower().replace("\x00", "") if isinstance(value, str) else None
    tags = [t.replace("\x00", "") for t in state.get("tags") or ()]
    return (u.id, u.channel_id, rev, u.type, u.member_id, u.merged_into, u.deleted, u.blocked, u.masked,
            u.last_seen_at, u.updated_at, orjson.dumps(state, option=orjson.OPT_SORT_KEYS), key, tags)


@settings(max_examples=1000)
@given(_any_user())
def test_a_row_is_the_reference_row_with_the_state_as_its_bytes(user: User) -> None:
    """issue 14 item 3: the state goes as its text (`state_json` decoded, for the text
    column's codec; session 20), the search columns come from the user, not from a
    JSON dict — and every column is what it was."""
    row = user_row(user, 7)
    assert len(row) == len(USER_COLUMNS)
    assert isinstance(row[11], str)
    assert (*row[:11], row[11].encode(), *row[12:]) == _reference_row(user, 7)


@settings(max_examples=300)
@given(_any_user())
def test_a_stored_state_reads_back_as_the_user_it_stores(user: User) -> None:
    """issue 14, session 20: `users.state` is text; `stored_user` reads what `user_row`
    writes (and what an older json column's text held) back to the same user."""
    assert stored_user(user_row(user, 1)[11]).state_json() == user.state_json()
