"""The digest's canonical form (services/replay/digest.py): every user's state as
sorted-key JSON in id order, then the merges, grades, grade holders and lookups. A
rebuild's digest is compared with a live one computed by the same function, so only a
test that spells the form out can tell that a faster digest (issue 14 item 6) still
gives the value it gave."""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace

import asyncpg
import hypothesis
import orjson
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from services.domain.user import User, new_user
from services.platform.config import Settings
from services.replay import digest
from services.store.repository import copy_new_users
from services.store.rowcodec import encode
from services.store.rows import USER_COLUMNS, USER_TYPES, user_record
from tests.oracle import digest as oracle
from tests.unit.test_domain_user import _any_user


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


# -- the faster digest gives the old value (issue 14, session 12) ----------------------
# Since session 12 a stored state is canonical as `User.state_json` writes it, and the
# digest hashes such a state as stored instead of decoding and dumping it again; a state
# stored before (keys in field order) still goes through the old computation. The old
# digest, verbatim, is the oracle (tests/oracle/digest.py).


@hypothesis.settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_any_user(), st.booleans()), min_size=1, max_size=25))
async def test_the_digest_equals_its_old_computation_on_generated_states(
    pool: asyncpg.Pool, settings: Settings, users: list[tuple[User, bool]]
) -> None:
    """Users of any content, each stored either as `state_json` writes it now or in the
    form stored before session 12 (`orjson.dumps(to_json())`, keys in field order), mixed
    in id order: the digest equals the old computation's, on the pool's connections and
    on a plain one (whose json arrives as text) alike. Hashing every state as stored, or
    trusting a state of the older form, is caught."""
    rows = []
    for i, (drawn, old_form) in enumerate(users):
        # Ids and the other text columns without NUL (PostgreSQL's text refuses it; the
        # state's JSON escapes it): the states are what is drawn.
        user = replace(drawn, id=f"u{i:03d}", channel_id="ch", member_id=None, merged_into=None)
        row = list(user_record(user, 1))
        if old_form:
            row[USER_COLUMNS.index("state")] = orjson.dumps(user.to_json())
        rows.append(tuple(row))
    random.Random(len(rows)).shuffle(rows)  # written in no particular order; hashed in id order
    async with pool.acquire() as conn:
        await conn.execute("TRUNCATE users")
        await copy_new_users(conn, encode(rows, USER_TYPES))
    expected = await oracle.state_digest(pool)
    assert await digest.state_digest(pool) == expected
    plain = await asyncpg.connect(settings.database_url, server_settings={"search_path": settings.db_schema})
    try:
        assert await digest.state_digest(plain) == expected
        assert await oracle.state_digest(plain) == expected
    finally:
        await plain.close()


async def test_a_fetch_of_canonical_states_is_hashed_whole_and_a_mixed_one_state_by_state(pool: asyncpg.Pool) -> None:
    """More users than one fetch holds (10,000), all canonical but one in the second
    fetch: the digest is the old computation's (a fetch hashed whole must still end each
    state with its newline, and the fetch with the old-form state is hashed state by
    state)."""
    base = new_user("u", "ch", "anonymous", 1)
    base.veils = {"v2": 2, "v1": 1}  # first seen in this order: sorted when written
    rows = [user_record(replace(base, id=f"u{i:05d}", created_at=i), 1) for i in range(10_500)]
    old = list(rows[10_200])
    old[USER_COLUMNS.index("state")] = orjson.dumps(replace(base, id="u10200").to_json())
    rows[10_200] = tuple(old)
    async with pool.acquire() as conn:
        await copy_new_users(conn, encode(rows, USER_TYPES))
    assert await digest.state_digest(pool) == await oracle.state_digest(pool)
