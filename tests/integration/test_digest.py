"""The digest's canonical form (services/replay/digest.py): every user's state as
sorted-key JSON in id order, then the merges, grades, grade holders and lookups. A
rebuild's digest is compared with the live one, so a change in how it is computed
(issue 14 item 6 hashes the users a fetch at a time) must not change its value."""

from __future__ import annotations

import hashlib

import asyncpg
import orjson
import pytest

from services.replay import digest


async def test_the_digest_hashes_every_user_canonically_in_id_order_across_fetches(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    states = {  # stored as written: keys in no particular order, nested ones too
        f"u{i}": f'{{"z": {i}, "a": {{"y": [3, 1], "b": null}}, "name": "n{i}"}}' for i in (4, 1, 3, 0, 2)
    }
    async with pool.acquire() as conn:
        for user_id, state in states.items():
            await conn.execute(
                """INSERT INTO users (id, channel_id, rev, type, deleted, blocked, masked, updated_at, state)
                   VALUES ($1, 'ch', 1, 'anonymous', false, false, false, 0, $2::text::json)""",
                user_id, state,
            )
    expected = hashlib.sha256()
    for user_id in sorted(states):
        expected.update(orjson.dumps(orjson.loads(states[user_id]), option=orjson.OPT_SORT_KEYS) + b"\n")
    for section in (b"merges", b"grades", b"grade-holders", b"lookups"):
        expected.update(b"--" + section + b"--\n")
    monkeypatch.setattr(digest, "_USERS_FETCH", 2)  # three fetches for five users
    assert await digest.state_digest(pool) == expected.hexdigest()
