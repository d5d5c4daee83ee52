"""Store-level guarantees that need a real PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest

from services.platform.config import Settings
from services.store import repository as repo
from services.store.pool import create_pool
from tests.support.infra import as_older_version

pytestmark = pytest.mark.integration


async def test_offsets_restart_when_the_embedded_broker_brings_an_empty_log(settings: Settings) -> None:
    """`make run` restarted: tansu keeps its log in memory, so offsets stored against the
    previous log would skip the first facts of the new one."""
    assert settings.database_url
    pool = await create_pool(settings.database_url, settings.db_schema)
    try:
        assert await repo.adopt_log(pool, "log-1") is False  # first log: nothing to reset
        await pool.execute("INSERT INTO inbox_offsets VALUES ('t', 0, 45)")
        assert await repo.adopt_log(pool, "log-1") is False  # same log: offsets stand
        assert await pool.fetchval("SELECT next_offset FROM inbox_offsets") == 45
        assert await repo.adopt_log(pool, "log-2") is True
        assert await pool.fetchval("SELECT next_offset FROM inbox_offsets") == 0
    finally:
        await pool.close()


async def test_rejected_commands_of_an_older_schema_move_to_command_outcomes(settings: Settings) -> None:
    """Upgrading (docs/operations.md): the rejections kept before `command_outcomes`
    existed are kept there, stamped with their channel's clock, and the old table goes."""
    assert settings.database_url
    pool = await create_pool(settings.database_url, settings.db_schema)
    try:
        await pool.execute("""CREATE TABLE rejected_commands (channel_id text NOT NULL, event_id text NOT NULL,
                                  code text NOT NULL, message text NOT NULL, PRIMARY KEY (channel_id, event_id))""")
        await pool.execute("INSERT INTO rejected_commands VALUES ('ch', 'e1', 'unknown_user', 'no u_x')")
        await pool.execute("INSERT INTO applied_events VALUES ('ch', 'e0', 1000)")
        await as_older_version(pool)
    finally:
        await pool.close()
    pool = await create_pool(settings.database_url, settings.db_schema)  # migrates
    try:
        rows = [tuple(r) for r in await pool.fetch("SELECT channel_id, event_id, at, code, message FROM command_outcomes")]
        assert rows == [("ch", "e1", 1000, "unknown_user", "no u_x")]
        assert await pool.fetchval("SELECT to_regclass('rejected_commands')") is None
    finally:
        await pool.close()


async def test_g3_every_channel_with_users_in_an_older_schema_gets_its_fence_row(settings: Settings) -> None:
    """Upgrading (schema.sql, channel_writers; issue 14, session 23): a channel without a
    fence row is taken for one without users (resident.py, fresh channels), so a schema
    from before that rule — or one a rebuild switched to before it — gets a row of token
    0 for every channel it holds users of; rows already there keep their tokens."""
    assert settings.database_url
    pool = await create_pool(settings.database_url, settings.db_schema)
    try:
        for user_id, channel_id in (("u_old", "ch-old"), ("u_kept", "ch-kept")):
            await pool.execute(
                """INSERT INTO users (id, channel_id, rev, type, deleted, blocked, masked, updated_at, state)
                   VALUES ($1, $2, 1, 'anonymous', false, false, false, 0, '{}')""", user_id, channel_id)
        await pool.execute("INSERT INTO channel_writers VALUES ('ch-kept', 5), ('ch-empty', 7)")
        await as_older_version(pool)
    finally:
        await pool.close()
    pool = await create_pool(settings.database_url, settings.db_schema)  # migrates
    try:
        rows = {r[0]: r[1] for r in await pool.fetch("SELECT channel_id, token FROM channel_writers")}
        assert rows == {"ch-old": 0, "ch-kept": 5, "ch-empty": 7}
    finally:
        await pool.close()


async def test_the_clock_index_of_an_older_schema_becomes_the_channels_clocks(settings: Settings) -> None:
    """Upgrading (docs/operations.md, issue 14 session 12): a schema with the index on
    applied_events (channel_id, at) gets each channel's clock from max(at) in
    applied_clocks, swept from min(at), and loses the index; a second start changes
    nothing."""
    assert settings.database_url
    pool = await create_pool(settings.database_url, settings.db_schema)
    try:
        await pool.execute("INSERT INTO applied_events VALUES ('ch', 'e0', 1000), ('ch', 'e1', 5000), ('ch2', 'e0', 0)")
        await pool.execute("INSERT INTO applied_clocks VALUES ('ch', 3000, 3000)")  # a downgrade's stale clock
        await pool.execute("CREATE INDEX applied_events_clock ON applied_events (channel_id, at)")
        await as_older_version(pool)
    finally:
        await pool.close()
    for _ in range(2):
        pool = await create_pool(settings.database_url, settings.db_schema)  # migrates
        try:
            rows = sorted(tuple(r) for r in await pool.fetch("SELECT channel_id, clock, swept FROM applied_clocks"))
            assert rows == [("ch", 5000, 3000), ("ch2", 0, 0)]
            assert await pool.fetchval("SELECT to_regclass('applied_events_clock')") is None
        finally:
            await pool.close()


async def test_an_older_applied_events_key_becomes_the_bigint_key_and_keeps_its_rows(settings: Settings) -> None:
    """Upgrading (docs/operations.md, issue 14 session 13): a table keyed by (channel_id,
    event_id) gains the generated key `k` and is keyed by (k, channel_id, event_id); its
    rows are found by the window's lookup, a pair is still refused twice, and a second
    start changes nothing."""
    assert settings.database_url
    pool = await create_pool(settings.database_url, settings.db_schema)
    try:
        await pool.execute("""DROP TABLE applied_events;
                              CREATE TABLE applied_events (channel_id text NOT NULL, event_id text NOT NULL,
                                                           at bigint NOT NULL DEFAULT 0, PRIMARY KEY (channel_id, event_id))""")
        await pool.execute("INSERT INTO applied_events VALUES ('ch', 'e0', 1000), ('ch', 'e1', 5000), ('ch2', 'e0', 0)")
        await as_older_version(pool)
    finally:
        await pool.close()
    for _ in range(2):
        pool = await create_pool(settings.database_url, settings.db_schema)  # migrates
        try:
            key = await pool.fetchval("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'applied_events_pkey'"
                                      " AND conrelid = to_regclass('applied_events')")
            assert key == "PRIMARY KEY (k, channel_id, event_id)"
            async with pool.acquire() as conn:
                seen, _ = await repo.applied_window(conn, [("ch", "e0"), ("ch", "e1"), ("ch", "e2"), ("ch2", "e0")], [])
            assert sorted(seen) == [("ch", "e0", 1000), ("ch", "e1", 5000), ("ch2", "e0", 0)]
            assert await pool.fetchval("SELECT count(*) FROM applied_events WHERE k <> " + repo.applied_key("channel_id", "event_id")) == 0
            with pytest.raises(Exception, match="applied_events_pkey"):
                await pool.execute("INSERT INTO applied_events VALUES ('ch', 'e1', 6000)")
        finally:
            await pool.close()


async def test_a_start_beside_a_running_batch_takes_no_table_lock(settings: Settings) -> None:
    """Issue 14, session 21 (pool.ensure_schema): a schema already migrated by these
    scripts is left alone. An importer or admin command starting while a batch holds its
    tables' row locks must not queue DDL behind it (which PostgreSQL once resolved as a
    deadlock, failing the import); without the recorded scripts the same start waits."""
    import asyncio

    from services.store.pool import ensure_schema

    assert settings.database_url
    pool = await create_pool(settings.database_url, settings.db_schema)
    try:
        async with pool.acquire() as batch, batch.transaction():
            # What a batch holds while it writes.
            await batch.execute("LOCK TABLE users, identities, imports IN ROW EXCLUSIVE MODE")
            await asyncio.wait_for(ensure_schema(settings.database_url, settings.db_schema), 10)
            await as_older_version(batch)  # committed with the batch: the next start is an older schema's
        # An older schema's start runs the DDL, which waits for a batch holding its tables.
        async with pool.acquire() as batch, batch.transaction():
            await batch.execute("LOCK TABLE users IN ROW EXCLUSIVE MODE")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ensure_schema(settings.database_url, settings.db_schema), 2)
        await ensure_schema(settings.database_url, settings.db_schema)  # and records the scripts again
        assert await pool.fetchval("SELECT count(*) FROM meta WHERE key = 'schema.scripts'") == 1
    finally:
        await pool.close()


async def test_pairs_with_equal_keys_are_told_apart_by_the_pair(pool: asyncpg.Pool) -> None:
    """Contract "Inbound envelope" (eventId window): the window is exact although its key
    `k` (repository.applied_key, 32 bits of the channel's hash and 32 of the eventId's)
    is not unique. Two channels and two eventIds whose hashes collide give four pairs with
    one key: each is remembered, found, renewed and swept as itself (a lookup, renewal or
    sweep by key alone would mix them)."""
    async def colliding(prefix: str) -> tuple[str, str]:
        row = await pool.fetchrow(
            """SELECT min(s), max(s) FROM (SELECT $1 || g AS s FROM generate_series(1, 400000) g) x
                GROUP BY hashtext(s) HAVING count(*) > 1 LIMIT 1""", prefix)
        assert row is not None
        return row[0], row[1]

    c1, c2 = await colliding("ch_")
    e1, e2 = await colliding("ev-")
    window = 1_000_000
    pairs = [(c1, e1), (c1, e2), (c2, e1), (c2, e2)]
    async with pool.acquire() as conn:
        one = await conn.fetchval(f"SELECT count(DISTINCT {repo.applied_key('c', 'e')}) FROM unnest($1::text[], $2::text[]) AS p(c, e)",
                                  [p[0] for p in pairs], [p[1] for p in pairs])
        assert one == 1
        async with conn.transaction():
            await repo.save_applied(conn, [(c1, e1, 1000)])
            await repo.raise_clocks(conn, [(c1, e1, 1000)], window)
        seen, _ = await repo.applied_window(conn, pairs, [])
        assert seen == [(c1, e1, 1000)]
        async with conn.transaction():
            rest = [(c1, e2, 1100), (c2, e1, 1200), (c2, e2, 1300)]
            await repo.save_applied(conn, rest)
            await repo.raise_clocks(conn, rest, window)
        seen, _ = await repo.applied_window(conn, pairs, [])
        assert sorted(seen) == sorted([(c1, e1, 1000), (c1, e2, 1100), (c2, e1, 1200), (c2, e2, 1300)])
        async with conn.transaction():  # (c1, e1) renewed alone
            await repo.save_applied(conn, [(c1, e1, 1500)], frozenset({(c1, e1)}))
        async with conn.transaction():  # c2's clock a window on: its two rows swept, c1's kept
            late = [(c2, "late", 1300 + window + 1)]
            await repo.save_applied(conn, late)
            await repo.raise_clocks(conn, late, window)
        rows = sorted(tuple(r) for r in await pool.fetch("SELECT channel_id, event_id, at FROM applied_events"))
        assert rows == sorted([(c1, e1, 1500), (c1, e2, 1100), (c2, "late", 1300 + window + 1)])


async def test_a_user_update_that_moves_no_searched_column_is_hot_and_search_columns_follow(pool: object) -> None:
    """Issue 14 (writes that scale with change): a boot moves lastSeenAt and the state,
    never a searched column, so its update is HOT — no new entry in any index of `users`.
    No index may cover an expression over `state` (that made every update non-HOT);
    the name and staff tags the console searches live in columns written with the row."""
    import asyncpg

    from services.domain.user import User, Value
    from services.store.queries import UserFilter, search_users

    assert isinstance(pool, asyncpg.Pool)
    indexes = await pool.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'users'"
    )
    assert indexes and not [r["indexname"] for r in indexes if "state" in r["indexdef"]]

    u = User("u-1", "ch", "lead", 1, 1, fields={"name": Value("Ängström Sato", True, False, 1)}, tags=["vip"])
    async with pool.acquire() as conn, conn.transaction():
        await repo.save_users(conn, [u], {})
        for rev in range(1, 4):  # three boots: only last_seen_at, updated_at, rev and state move
            u.last_seen_at = u.updated_at = 1 + rev
            await repo.save_users(conn, [u], {u.id: rev})
        updates, hot = await conn.fetchrow(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relid = 'users'::regclass"
        )
    assert (updates, hot) == (3, 3)
    row = await pool.fetchrow("SELECT name_key, tags FROM users WHERE id = 'u-1'")
    assert (row["name_key"], row["tags"]) == ("ängström sato", ["vip"])

    async def found(**f: object) -> list[str]:
        items, _next = await search_users(pool, "ch", UserFilter(**f), limit=10)  # type: ignore[arg-type]
        return [x["id"] for x in items]

    assert await found(q="ÄNGS") == ["u-1"]  # case-insensitive name prefix
    assert await found(q="sato") == []  # a prefix, not a substring
    assert await found(tag="vip") == ["u-1"] and await found(tag="vi") == []


async def test_a_schema_from_before_the_search_columns_is_upgraded_in_place(pool: object, settings: Settings) -> None:
    """Contract 1.1.0 schemas had the name and tags indexed as expressions over `state`
    (then json): starting the service turns `state` into text (issue 14, session 20),
    fills the new columns from the stored states and drops those indexes, so search keeps
    finding old users, updates become HOT, and the old user reads back as it was stored."""
    import asyncpg
    import orjson

    from services.store.pool import ensure_schema

    assert isinstance(pool, asyncpg.Pool) and settings.database_url
    state = {"fields": {"name": ["Sato Taro", True, False, 1]}, "tags": ["vip", "jp"]}
    await pool.execute(
        """ALTER TABLE users DROP COLUMN name_key, DROP COLUMN tags, ALTER COLUMN state TYPE json USING state::json;
           CREATE INDEX users_tags ON users USING gin (((state->'tags')::jsonb));"""
    )
    await pool.execute(
        "INSERT INTO users (id, channel_id, rev, type, deleted, blocked, masked, updated_at, state) "
        "VALUES ('old', 'ch', 1, 'lead', false, false, false, 1, $1::text::json)", orjson.dumps(state).decode(),
    )
    await as_older_version(pool)
    await ensure_schema(settings.database_url, settings.db_schema)
    row = await pool.fetchrow("SELECT name_key, tags FROM users WHERE id = 'old'")
    assert (row["name_key"], row["tags"]) == ("sato taro", ["vip", "jp"])
    assert await pool.fetchval("SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'users_tags'") == 0
    assert await pool.fetchval(
        "SELECT data_type FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = 'users' AND column_name = 'state'") == "text"
    assert await pool.fetchval("SELECT state FROM users WHERE id = 'old'") == orjson.dumps(state).decode()


async def test_applied_event_ids_copied_renew_a_stored_pair_and_keep_one_row_per_pair(settings: Settings) -> None:
    """Contract "Inbound envelope" (eventId window, 7 days): applied eventIds are written
    by COPY (issue 14, writes). A pair the table still held (forgotten by the window
    within this batch, not yet pruned) is renewed, and a pair applied twice in one batch
    keeps one row with its last time — a COPY of either as it came would break the key."""
    assert settings.database_url
    pool = await create_pool(settings.database_url, settings.db_schema)
    try:
        await pool.execute("INSERT INTO applied_events VALUES ('ch', 'old', 1000)")
        async with pool.acquire() as conn, conn.transaction():
            stored = {(r[0], r[1]) for r in (await repo.applied_window(conn, [("ch", "old"), ("ch", "twice")], []))[0]}
            assert stored == {("ch", "old")}
            await repo.save_applied(
                conn, [("ch", "twice", 2000), ("ch", "old", 9000), ("ch", "new", 3000), ("ch", "twice", 9001)], stored,
            )
        rows = sorted(tuple(r) for r in await pool.fetch("SELECT channel_id, event_id, at FROM applied_events"))
        assert rows == [("ch", "new", 3000), ("ch", "old", 9000), ("ch", "twice", 9001)]
    finally:
        await pool.close()


async def test_new_users_of_an_import_batch_are_copied_as_inserted_and_fenced_alike(pool: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14 item 5 (an import's writes): from `COPY_NEW_FROM` new users a batch
    writes them and their identities by binary COPY instead of INSERT … ON CONFLICT. The
    rows are the ones the INSERT writes, column for column; and the fence holds as it
    did (G3): a new user whose id another instance stored, or a memberId another user
    holds, refuses the batch with `Conflict`."""
    import asyncpg

    from services.domain.directory import identities
    from services.domain.user import User, Value

    assert isinstance(pool, asyncpg.Pool)
    n = repo.COPY_NEW_FROM

    def member(prefix: str, i: int) -> User:
        u = User(f"{prefix}-{i}", "ch", "member", 1, 1, member_id=f"{prefix}-m{i}", tags=["vip"] if i % 2 else [],
                 fields={"name": Value(f"Sato {i}", True, True, 1), "profile.email": Value(f"{prefix}{i}@x.jp", True, True, 1)})
        u.last_seen_at = 5
        return u

    async def save(users: list[User]) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await repo.save_users(conn, users, {})
            await repo.save_identities(conn, [(u, None, identities(u)) for u in users])

    monkeypatch.setattr(repo, "COPY_NEW_FROM", 10 * n)
    await save([member("ins", i) for i in range(n)])  # below the threshold: INSERT
    monkeypatch.setattr(repo, "COPY_NEW_FROM", n)
    copied = [member("cp", i) for i in range(n)]
    await save(copied)  # at it: COPY

    def strip(row: asyncpg.Record, prefix: str) -> tuple[object, ...]:
        return tuple(str(v).replace(prefix, "P") for v in row.values())

    users = {p: sorted(strip(r, p) for r in await pool.fetch(
        "SELECT * FROM users WHERE id LIKE $1", f"{p}-%")) for p in ("ins", "cp")}
    ids = {p: sorted(strip(r, p) for r in await pool.fetch(
        "SELECT * FROM identities WHERE user_id LIKE $1", f"{p}-%")) for p in ("ins", "cp")}
    assert len(users["cp"]) == n and len(ids["cp"]) == 2 * n
    assert users["cp"] == users["ins"] and ids["cp"] == ids["ins"]

    taken_id = [member("again", i) for i in range(n - 1)] + [copied[0]]  # stored by "another instance"
    with pytest.raises(repo.Conflict):
        await save(taken_id)
    taken_member = [member("other", i) for i in range(n)]
    taken_member[3].member_id = copied[3].member_id
    with pytest.raises(repo.Conflict):
        await save(taken_member)
    assert await pool.fetchval("SELECT count(*) FROM users WHERE id LIKE 'again-%' OR id LIKE 'other-%'") == 0


async def test_identity_deltas_of_changed_users_beside_an_import_batchs_new_users(pool: object) -> None:
    """B2/U8 and issue 14 session 10 (save_identities lists only the identities of users
    that had some for its DELETE): in one call, a stored user whose e-mail moved loses
    exactly its old row and gains the new one, a stored user merged away loses all of
    its rows, and the batch's new users (COPYed, as an import's) keep every row."""
    import asyncpg

    from services.domain.directory import identities
    from services.domain.user import User, Value

    assert isinstance(pool, asyncpg.Pool)

    def member(uid: str, email: str) -> User:
        return User(uid, "ch_delta", "member", 1, 1, member_id=f"m-{uid}",
                    fields={"profile.email": Value(email, True, True, 1)})

    moved, merged = member("d-moved", "old@x.jp"), member("d-merged", "gone@x.jp")
    async with pool.acquire() as conn, conn.transaction():
        await repo.save_users(conn, [moved, merged], {})
        await repo.save_identities(conn, [(u, None, identities(u)) for u in (moved, merged)])
    had = {u.id: identities(u) for u in (moved, merged)}
    moved.fields["profile.email"] = Value("new@x.jp", True, True, 2)
    merged.merged_into = "d-moved"
    new = [member(f"d-new{i}", f"n{i}@x.jp") for i in range(repo.COPY_NEW_FROM)]
    async with pool.acquire() as conn, conn.transaction():
        await repo.save_users(conn, new, {})
        await repo.save_identities(conn, [(moved, had[moved.id], identities(moved)), (merged, had[merged.id], identities(merged)),
                                          *[(u, None, identities(u)) for u in new]])
    rows = {(r["user_id"], r["kind"], r["value"]) for r in await pool.fetch(
        "SELECT user_id, kind, value FROM identities WHERE channel_id = 'ch_delta'")}
    expected = {("d-moved", "member", "m-d-moved"), ("d-moved", "email", "new@x.jp")}
    expected |= {(u.id, kind, value) for u in new for kind, value, _q in identities(u)}
    assert rows == expected


async def test_array_parameters_encode_as_before_with_the_concrete_container_checks(pool: object) -> None:
    """Issue 14, session 9 (docs/decisions.md, "array parameters"): asyncpg's array codec
    asks Iterable/Sized of every element through collections.abc (~17 Python-level calls
    an event); services/store/pool.py answers them with a tuple of container types. The
    names it replaces must still be the ones the codec reads (an asyncpg that renames them
    would silently lose the saving), and every value the store passes encodes as before:
    text, numbers, booleans, NULLs, JSON, sub-arrays, sets and tuples as arrays, a str
    element as one element; a mapping is refused, as asyncpg refuses it."""
    import asyncpg
    import asyncpg.protocol.protocol as protocol
    import orjson

    from services.store.pool import ARRAY_CONTAINERS

    assert isinstance(pool, asyncpg.Pool)
    assert protocol.IterableABC is ARRAY_CONTAINERS and protocol.SizedABC is ARRAY_CONTAINERS  # type: ignore[attr-defined]
    assert await pool.fetchval("SELECT $1::text[]", ["a", "", None, "日本"]) == ["a", "", None, "日本"]
    assert await pool.fetchval("SELECT array_length($1::text[], 1)", ["abc"]) == 1  # a str is one element
    assert await pool.fetchval("SELECT $1::bigint[]", (1, None, 2**40)) == [1, None, 2**40]
    assert await pool.fetchval("SELECT $1::bool[]", [True, False, None]) == [True, False, None]
    assert await pool.fetchval("SELECT $1::int[]", [[1, 2], [3, 4]]) == [[1, 2], [3, 4]]  # a list of lists: 2-D
    assert sorted(await pool.fetchval("SELECT $1::text[]", {"x", "y"})) == ["x", "y"]
    assert await pool.fetchval("SELECT $1::text[]", frozenset({"z"})) == ["z"]
    assert await pool.fetchval("SELECT $1::jsonb[]", [{"a": 1}, "s", None]) == [{"a": 1}, "s", None]
    assert await pool.fetchval("SELECT ($1::json[])[1]::text", [orjson.Fragment(b'{"k":1}')]) == '{"k":1}'
    with pytest.raises(asyncpg.DataError, match="sized iterable container expected"):
        await pool.fetchval("SELECT $1::text[]", {"a": "b"})


async def test_activities_by_copy_keep_the_first_of_an_event_id_applied_again_as_the_insert_does(
    pool: object, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Contract "Inbound envelope" (an eventId applied again after the 7-day window) and
    U4: an activity is kept once by (channel, eventId), the first one. From COPY_NEW_FROM
    activities a batch writes them by binary COPY in a savepoint (issue 14, session 14);
    one already stored, or twice in the batch, undoes the COPY and the INSERT … ON
    CONFLICT DO NOTHING writes them as before. Both paths leave the same rows; without
    the savepoint the failed COPY would abort the batch's transaction."""
    import asyncpg

    from services.domain.core import Activity

    assert isinstance(pool, asyncpg.Pool)
    n = repo.COPY_NEW_FROM

    def acts(ch: str, tag: str) -> list[Activity]:
        return [Activity(ch, f"u{i % 3}", "chat", f"e{i}", 1000 + i, {"text": f"{tag} {i}"}) for i in range(n)]

    async def save(batch: list[Activity]) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await repo.save_activities(conn, batch)
            await conn.execute("SELECT 1")  # the transaction is still usable

    async def stored(ch: str) -> list[tuple[object, ...]]:
        return sorted(tuple(r) for r in await pool.fetch(
            "SELECT event_id, user_id, kind, occurred_at, body FROM activities WHERE channel_id = $1", ch))

    for ch, copy_from in (("by_insert", 10 * n), ("by_copy", n)):
        monkeypatch.setattr(repo, "COPY_NEW_FROM", copy_from)
        await save(acts(ch, "first")[:5])  # stored before: e0..e4
        await save(acts(ch, "fresh")[5:] + acts(ch, "fresh")[5:8] + acts(ch, "again"))  # no conflict with e5.. but in-batch twice
        await save([Activity(ch, "u9", "event", f"x{i}", 1, {}) for i in range(n)])  # nothing stored before: COPY
    assert await stored("by_copy") == await stored("by_insert")
    rows = {r[0]: r[4] for r in await stored("by_copy")}
    assert rows["e0"] == {"text": "first 0"} and rows["e5"] == {"text": "fresh 5"} and len(rows) == 2 * n


async def test_the_read_side_indexes_hold_only_what_their_reads_ask_and_serve_them(pool: object) -> None:
    """Issue 14, session 14 (writes that scale with change): `users_name_key_prefix`
    holds only users with a name and `users_tag_list` only users with tags (most users,
    anonymous ones, cost neither an entry), and the reads still use them: `q`'s
    `name_key LIKE` implies the name, and the tag read names `tags <> '{}'` as the
    index's predicate does. `users_channel` and `activities_user` are gone; a user's
    activities (the list, U4's re-pointing, B2's erasure) go through
    `activities_user_recent`. Plans checked with sequential scans off (a small table)."""
    import asyncpg

    from services.store.queries import GRADES, q_matches_sql, tag_matches_sql

    assert isinstance(pool, asyncpg.Pool)
    defs = {r[0]: r[1] for r in await pool.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()")}
    assert "users_channel" not in defs and "activities_user" not in defs
    assert "name_key IS NOT NULL" in defs["users_name_key_prefix"] and "tags <> " in defs["users_tag_list"]

    async def plan(sql: str, args: list[object]) -> str:
        """The plan with sequential scans off and without `users_listing` (which an empty
        table's planner prefers for any read of a channel's live users): a partial index
        whose predicate the read does not imply is not a candidate at all."""
        async with pool.acquire() as conn:
            tr = conn.transaction()
            await tr.start()
            try:
                await conn.execute("SET LOCAL enable_seqscan = off; DROP INDEX users_listing")
                return "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *args))
            finally:
                await tr.rollback()

    assert "users_tag_list" in await plan(*tag_matches_sql("ch", "vip"))
    q_plan = await plan(*q_matches_sql("ch", "sato"))
    assert "users_name_key_prefix" in q_plan
    # The e-mail or phone prefix: a range of identities' key (`value` collates as "C").
    assert "identities_contact_prefix" not in defs and "identities_pkey" in q_plan and "value >= 'sato'" in q_plan
    # A user's grades (queries.GRADES): each key held is one probe of grade_holders_key by
    # channel, kind and value, though identities.value and grade_holders.value collate apart.
    grades_plan = (await plan(f"SELECT u.state, {GRADES} FROM users u WHERE u.id = $1", ["u1"])).split("\n")
    probe = [line for i, line in enumerate(grades_plan) if i and "grade_holders_key" in grades_plan[i - 1]]
    assert probe and "value = " in probe[0], grades_plan
    for sql, args in (
        ("SELECT event_id FROM activities WHERE user_id = $2 AND channel_id = $1 ORDER BY occurred_at DESC, event_id DESC LIMIT 51",
         ["ch", "u1"]),
        ("UPDATE activities a SET user_id = x.t FROM unnest($1::text[], $2::text[]) AS x(s, t) WHERE a.user_id = x.s",
         [["u1"], ["u2"]]),
        ("DELETE FROM activities WHERE user_id = ANY($1::text[]) AND kind = 'event'", [["u1"]]),
    ):
        assert "activities_user_recent" in await plan(sql, args)


async def test_read_side_indexes_of_an_older_schema_are_made_again_for_the_rows_they_serve(settings: Settings) -> None:
    """Upgrading (docs/operations.md, issue 14 session 14): a schema with `users_channel`,
    `activities_user`, and the name and tag indexes over every live user loses the first
    two and gets the other two again with their new predicates; identities' `value`
    under the database's collation with `identities_contact_prefix` beside the key takes
    "C" and loses that index. A second start changes nothing, and the search still finds
    the user by name, tag, e-mail prefix and e-mail, with its grade (the holder's value
    compared across the two collations)."""
    from services.domain.directory import identities
    from services.domain.user import User, Value
    from services.store.queries import UserFilter, search_users

    assert settings.database_url
    pool = await create_pool(settings.database_url, settings.db_schema)
    try:
        await pool.execute("""DROP INDEX users_name_key_prefix; DROP INDEX users_tag_list;
            CREATE INDEX users_channel ON users (channel_id);
            CREATE INDEX activities_user ON activities (user_id);
            CREATE INDEX users_name_key_prefix ON users (channel_id, name_key text_pattern_ops)
                WHERE NOT deleted AND merged_into IS NULL;
            CREATE INDEX users_tag_list ON users USING gin (tags) WHERE NOT deleted AND merged_into IS NULL;
            ALTER TABLE identities ALTER COLUMN value TYPE text COLLATE "default";
            CREATE INDEX identities_contact_prefix ON identities (channel_id, value text_pattern_ops)
                WHERE kind IN ('email', 'mobile');
            INSERT INTO grades VALUES ('ch', 'gold', 'yellow');
            INSERT INTO grade_holders VALUES ('ch', 'gold', 'email', 'taro@x.jp');""")
        u = User("u-old", "ch", "lead", 1, 1, tags=["vip"], fields={
            "name": Value("Sato Taro", True, False, 1), "profile.email": Value("taro@x.jp", True, True, 1)})
        async with pool.acquire() as conn, conn.transaction():
            await repo.save_users(conn, [u], {})
            await repo.save_identities(conn, [(u, None, identities(u))])
        await as_older_version(pool)
    finally:
        await pool.close()
    for _ in range(2):
        pool = await create_pool(settings.database_url, settings.db_schema)  # migrates
        try:
            defs = {r[0]: r[1] for r in await pool.fetch(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()")}
            assert "users_channel" not in defs and "activities_user" not in defs
            assert "name_key IS NOT NULL" in defs["users_name_key_prefix"] and "tags <> " in defs["users_tag_list"]
            assert "identities_contact_prefix" not in defs
            assert await pool.fetchval("""SELECT c.collname FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
                                           WHERE a.attrelid = 'identities'::regclass AND a.attname = 'value'""") == "C"
            for f in (UserFilter(q="sato"), UserFilter(tag="vip"), UserFilter(q="taro@"), UserFilter(email="taro@x.jp"),
                      UserFilter(grade="gold")):
                items, _next = await search_users(pool, "ch", f, limit=10)
                assert [(x["id"], x["grades"]) for x in items] == [("u-old", [{"name": "gold", "colour": "yellow"}])]
        finally:
            await pool.close()


async def test_save_users_stores_each_users_tags_whether_it_has_none_or_some(pool: object) -> None:
    """I9 / the tag search (users_tag_list holds only users with tags): save_users writes
    a user without tags as the empty array by a constant, not the subquery over its
    tags' JSON (issue 14, session 15), and any other list as that subquery reads it —
    a tag spelled like an empty list too; tags gained and lost on later revisions."""
    from services.domain.user import User

    assert isinstance(pool, asyncpg.Pool)
    lists = [[], ["[]"], ["vip", "[]", "a,b", '"q"'], ["{}"]]
    users = [User(f"u-{i}", "ch", "lead", 1, 1, tags=list(tags)) for i, tags in enumerate(lists)]
    revs: dict[str, int] = {}
    for step in range(3):  # 0: new users (INSERT), 1: updates, 2: updates with the lists rotated
        async with pool.acquire() as conn, conn.transaction():
            await repo.save_users(conn, users, revs)
        stored = {r[0]: r[1] for r in await pool.fetch("SELECT id, tags FROM users")}
        assert stored == {u.id: u.tags for u in users}
        revs = {u.id: step + 1 for u in users}
        for u, tags in zip(users, lists[step + 1 :] + lists[: step + 1], strict=True):
            u.tags = list(tags)
            u.updated_at += 1
    assert await pool.fetchval("SELECT count(*) FROM users WHERE tags = '{}'") == 1
