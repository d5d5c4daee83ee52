"""The users' rows and the batch's other COPYs as binary COPY payloads encoded by
services/store/rowcodec.py (issue 14, session 17), against a real PostgreSQL: what it
reads from a payload is what was encoded, the session's `users_staged` has `users`'
columns, and the staged write keeps the revision fence (G3) of the statement it replaced."""

from __future__ import annotations

import asyncpg
import orjson
import pytest

from services.domain.user import User
from services.store import repository as repo
from services.store import rowcodec

pytestmark = pytest.mark.integration

_ROWS = [
    ("plain", 0, True, b'{"a": [1, "\\u00e9"]}', b'{"k": null}', []),
    ("日本語 é", -(2**63), False, b"[]", b"[1, 2]", ["vip", "", "日本"]),
    (None, 2**63 - 1, None, None, None, None),
    ("", None, True, b"{}", b'"s"', ("one",)),
]


@pytest.mark.parametrize("encode", [rowcodec.encode, rowcodec.encode_py], ids=["encode", "encode_py"])
async def test_postgresql_reads_back_every_value_a_payload_encodes(pool: asyncpg.Pool, encode: object) -> None:
    """issue 14, session 17: text (UTF-8), int8 at its bounds, boolean, json and jsonb
    from their bytes, text[] (empty, with an empty element, from a tuple) and NULL in each,
    by `repository.copy_rows` — whichever encoder this process runs, and the reference."""
    assert callable(encode)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("CREATE TEMP TABLE codec_probe (t text, q bigint, b boolean, j json, jb jsonb, a text[])"
                           " ON COMMIT DROP")
        cols = ("t", "q", "b", "j", "jb", "a")
        await repo.copy_rows(conn, "codec_probe", cols, encode(_ROWS, "tqbBJa"), schema="pg_temp")
        got = await conn.fetch("SELECT t, q, b, j::text, jb, a FROM codec_probe")
    assert [tuple(r) for r in got] == [
        (t, q, b, None if j is None else j.decode(), None if jb is None else orjson.loads(jb),
         None if a is None else list(a))
        for t, q, b, j, jb, a in _ROWS
    ]


async def test_the_staging_table_has_the_users_columns_and_types(pool: asyncpg.Pool) -> None:
    """rows.STAGE_USERS restates `users`' columns: a column added or retyped in
    schema.sql must be staged alike (the payload is encoded as USER_TYPES for both)."""
    def types(table: str) -> str:
        return f"""SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
                    WHERE attrelid = '{table}'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"""

    async with pool.acquire() as conn:
        staged = [tuple(r) for r in await conn.fetch(types("pg_temp.users_staged"))]
        users = [tuple(r) for r in await conn.fetch(types("users"))]
    assert staged == users
    assert tuple(name for name, _type in staged) == repo.USER_COLUMNS


async def test_the_staged_write_keeps_the_revision_fence(pool: asyncpg.Pool) -> None:
    """G3 (issue 14, session 17): `save_user_rows` writes a user only from the revision
    before its row's — new users at 0, then updates — and a stale row (another instance
    wrote the user) is Conflict, the whole transaction undone; the staging table is empty
    after each transaction, committed or not; outside a transaction the call opens its
    own (its rows live until the commit)."""
    users = [User(f"u-{i}", "ch", "lead", 1, 1, tags=["t"] if i % 2 else []) for i in range(5)]
    async with pool.acquire() as conn:
        async with conn.transaction():
            await repo.save_users(conn, users, {})  # five new users: below COPY_NEW_FROM, staged
        assert await conn.fetchval("SELECT count(*) FROM pg_temp.users_staged") == 0
        for u in users:
            u.updated_at = 2
        await repo.save_users(conn, users, {u.id: 1 for u in users})  # no transaction of its own
        assert [tuple(r) for r in await conn.fetch("SELECT id, rev, updated_at, tags FROM users ORDER BY id")] == [
            (u.id, 2, 2, u.tags) for u in users]
        users[0].updated_at = 3
        with pytest.raises(repo.Conflict, match="1 of 2 users"):
            async with conn.transaction():
                await repo.save_users(conn, users[:2], {users[0].id: 1, users[1].id: 2})  # users[0] is at 2
        assert await conn.fetchval("SELECT max(rev) FROM users") == 2  # users[1] undone with it
        with pytest.raises(repo.Conflict):
            async with conn.transaction():
                await repo.save_users(conn, [User("u-0", "ch", "lead", 1, 1)], {})  # created by another
        assert await conn.fetchval("SELECT count(*) FROM pg_temp.users_staged") == 0


async def test_new_users_by_copy_are_refused_when_another_created_one(pool: asyncpg.Pool) -> None:
    """COPY_NEW_FROM new users go by COPY straight into `users`: one whose id is taken is
    Conflict (the unique violation), as before the payloads."""
    users = [User(f"n-{i}", "ch", "visitor", 1, 1) for i in range(repo.COPY_NEW_FROM)]
    async with pool.acquire() as conn:
        async with conn.transaction():
            await repo.save_users(conn, users, {})
        assert await conn.fetchval("SELECT count(*) FROM users WHERE rev = 1") == repo.COPY_NEW_FROM
        with pytest.raises(repo.Conflict, match="created by another instance"):
            async with conn.transaction():
                await repo.save_users(conn, [User(f"m-{i}", "ch", "visitor", 1, 1) for i in range(70)] + users[:1], {})
