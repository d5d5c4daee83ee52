"""The digest's canonical form (services/replay/digest.py): every user's state as
sorted-key JSON in id order, then the merges, grades, grade holders and lookups. A
rebuild's digest is compared with a live one computed by the same function, so only a
test that spells the form out can tell that a faster digest (issue 14 item 6) still
gives the value it gave."""

from __future__ import annotations

import hashlib

import asyncpg
import orjson

from services.replay import digest


async def test_the_digest_hashes_every_user_canonically_in_id_order(pool: asyncpg.Pool) -> None:
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
    assert await digest.state_digest(pool) == expected.hexdigest()
