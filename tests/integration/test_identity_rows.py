"""`identities` without an index on `user_id` (docs/decisions.md, "Issue 14, session 21"):
the rows stored for a user are exactly `directory.identities` of its stored state, the
batch deletes by primary key the rows it loaded and no longer derives, and every read
finds a user's own keys in its users row. Real PostgreSQL; plans on filled, ANALYZEd
tables."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from services.domain.directory import identities
from services.domain.user import User, Value
from services.platform.config import Settings
from services.store import queries
from services.store import repository as repo
from services.store.pool import create_pool
from services.store.queries import (
    GRADES,
    UserFilter,
    grades_of,
    q_matches_sql,
    search_sql,
    search_users,
)
from tests.support.infra import as_older_version

pytestmark = pytest.mark.integration

CH = "ch_rows"


def person(uid: str, *, member_id: str | None = None, email: Value | None = None, mobile: Value | None = None,
           name: str | None = None, type_: str = "lead") -> User:
    fields = {}
    if name is not None:
        fields["name"] = Value(name, True, False, 1)
    if email is not None:
        fields["profile.email"] = email
    if mobile is not None:
        fields["profile.mobileNumber"] = mobile
    return User(uid, CH, "member" if member_id else type_, 1, 1, member_id=member_id, fields=fields)  # type: ignore[arg-type]


async def stored_rows(pool: asyncpg.Pool, channel_id: str = CH) -> set[tuple[str, str, str, bool]]:
    return {(r[0], r[1], r[2], r[3]) for r in await pool.fetch(
        "SELECT user_id, kind, value, qualified FROM identities WHERE channel_id = $1", channel_id)}


def derived(*users: User) -> set[tuple[str, str, str, bool]]:
    return {(u.id, kind, value, q) for u in users for kind, value, q in identities(u)}


async def test_identity_rows_stay_the_derivation_of_the_stored_state_written_as_deltas_by_key(pool: asyncpg.Pool) -> None:
    """Issue 14, session 21 (U8, B2, U9's qualification): each save deletes by primary key
    the rows of `loaded - now` and inserts `now - loaded`; after every step the table holds
    exactly `identities` of each user's state, qualification included — a contact that
    only became qualified is rewritten, one dropped goes, a merged (U8) or deleted (B2)
    user keeps none — and another user's row with the same key is never touched."""
    a = person("r-a", member_id="ma", email=Value("a@x.jp", False, False, 1))
    other = person("r-other", email=Value("a@x.jp", False, False, 1))  # shares a's contact
    async with pool.acquire() as conn, conn.transaction():
        await repo.save_users(conn, [a, other], {})
        await repo.save_identities(conn, [(u, None, identities(u)) for u in (a, other)])
    assert await stored_rows(pool) == derived(a, other)
    revs = {a.id: 1, other.id: 1}

    async def step(change: Any) -> None:
        loaded = identities(a)
        change(a)
        async with pool.acquire() as conn, conn.transaction():
            await repo.save_users(conn, [a], revs)
            await repo.save_identities(conn, [(a, loaded, identities(a))])
        revs[a.id] += 1
        assert await stored_rows(pool) == derived(a, other)

    await step(lambda u: u.fields.__setitem__("profile.email", Value("a@x.jp", True, True, 2)))  # qualified now
    await step(lambda u: u.fields.__setitem__("profile.mobileNumber", Value("+819012345678", True, True, 3)))
    await step(lambda u: u.veils.__setitem__("v-a", 4))
    await step(lambda u: u.fields.pop("profile.email"))  # other's row with the same e-mail stays
    await step(lambda u: setattr(u, "merged_into", "r-other"))  # U8: no keys left
    assert {r for r in await stored_rows(pool) if r[0] == a.id} == set()


async def test_an_older_schema_loses_identities_user_and_deletes_by_the_primary_key(settings: Settings) -> None:
    """Upgrading (docs/operations.md; issue 14, session 21): a schema that has
    `identities_user` loses it at start, and a second start changes nothing. On a filled,
    ANALYZEd table a batch's DELETE of a few users' rows probes the primary key."""
    assert settings.database_url
    pool = await create_pool(settings.database_url, settings.db_schema)
    try:
        await pool.execute("CREATE INDEX identities_user ON identities (user_id)")
        await as_older_version(pool)
    finally:
        await pool.close()
    for _ in range(2):
        pool = await create_pool(settings.database_url, settings.db_schema)  # migrates
        try:
            names = {r[0] for r in await pool.fetch(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'identities'")}
            assert names == {"identities_pkey", "identities_one_owner"}
        finally:
            await pool.close()


async def _fill(pool: asyncpg.Pool, n: int) -> None:
    """`n` members (memberId, qualified e-mail, every third an unqualified mobile), n/2
    anonymous users, a few grades on e-mails and member ids; identity rows as the service
    derives them; ANALYZE."""
    users = [person(f"u{i:06d}", member_id=f"m{i}", email=Value(f"p{i}@x.jp", True, True, 1),
                    mobile=Value(f"+8190{i:08d}", False, False, 1) if i % 3 == 0 else None, name=f"Sato {i}")
             for i in range(n)]
    users += [person(f"a{i:06d}", type_="anonymous") for i in range(n // 2)]
    async with pool.acquire() as conn, conn.transaction():
        await repo.save_users(conn, users, {})
        await repo.save_identities(conn, [(u, None, identities(u)) for u in users])
        await conn.execute("INSERT INTO grades VALUES ($1, 'gold', 'yellow'), ($1, 'blue', 'blue')", CH)
        await conn.execute("""INSERT INTO grade_holders SELECT $1, 'gold', 'email', 'p' || g || '@x.jp'
                                FROM generate_series(0, $2::int - 1, 40) g""", CH, n)
        await conn.execute("""INSERT INTO grade_holders SELECT $1, 'blue', 'memberId', 'm' || g
                                FROM generate_series(0, $2::int - 1, 30) g""", CH, n)
    for table in ("users", "identities", "grades", "grade_holders"):
        await pool.execute(f"ANALYZE {table}")


async def test_no_read_or_write_scans_a_channels_identities_or_reads_them_by_user(pool: asyncpg.Pool) -> None:
    """Issue 14, session 21: without `identities_user`, on a filled and ANALYZEd table,
    every statement that reads `identities` does so through its primary key (a key's
    rows, a prefix's range, a batch's deleted rows), and a user's grades (GRADES) and
    the `q` walk read the user's own keys from its row, not from `identities`."""
    await _fill(pool, 6000)
    user = person("u000040")

    async def plan(sql: str, args: list[Any]) -> str:
        return "\n".join(r[0] for r in await pool.fetch("EXPLAIN " + sql, *args))

    keyed = {
        "lookup by e-mail": search_sql(CH, UserFilter(email="p40@x.jp"), limit=50),
        "lookup by member id": search_sql(CH, UserFilter(member_id="m40"), limit=50),
        "grade filter": search_sql(CH, UserFilter(grade="gold"), limit=50),
        "q matches": q_matches_sql(CH, "p4"),
        "find_user": (f"""SELECT u.state, {GRADES} FROM identities i JOIN users u ON u.id = i.user_id
                          WHERE i.channel_id = $1 AND i.kind = $2 AND i.value = $3 LIMIT 1""", [CH, "email", "p40@x.jp"]),
        "load_users": ("""SELECT u.rev, u.state FROM users u WHERE u.id IN (
                            SELECT unnest($1::text[]) UNION
                            SELECT i.user_id FROM identities i WHERE (i.channel_id, i.kind, i.value) IN (
                                   SELECT * FROM unnest($2::text[], $3::text[], $4::text[])))""",
                       [[], [CH, CH], ["email", "member"], ["p1@x.jp", "m2"]]),
        "the batch's DELETE": ("""DELETE FROM identities i USING unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS g(c, k, v, u)
                                  WHERE i.channel_id = g.c AND i.kind = g.k AND i.value = g.v AND i.user_id = g.u""",
                               [[CH, CH], ["email", "member"], ["p1@x.jp", "m2"], ["u000001", "u000002"]]),
        "pending queue": ("""SELECT u.state FROM identities i JOIN users u ON u.id = i.user_id
                             WHERE i.channel_id = $1 AND i.kind = 'pending' AND i.user_id > $2
                             ORDER BY i.user_id LIMIT $3""", [CH, "", 51]),
    }
    for name, (sql, args) in keyed.items():
        text = await plan(sql, args)
        assert "identities_pkey" in text and "Seq Scan on identities" not in text, (name, text)
    own = {
        "a user's grades": (f"SELECT u.state, {GRADES} FROM users u WHERE u.id = $1 AND u.channel_id = $2", [user.id, CH]),
        "the list page": search_sql(CH, UserFilter(), limit=50),
        "the q walk": search_sql(CH, UserFilter(q="p4"), limit=50),
    }
    for name, (sql, args) in own.items():
        text = await plan(sql, args)
        assert "identities" not in text, (name, text)
    assert "grade_holders_key" in await plan(*own["a user's grades"])


async def test_grades_and_the_q_walk_read_from_the_row_answer_as_the_identity_rows_do(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """D2 and `q` (I17: masked users neither show grades nor match), issue 14 session 21:
    GRADES, reading memberId from the row and the *qualified* contacts from the state,
    gives what `grades_of` gives over `grade_keys` — unqualified contacts, masked,
    merged and deleted users included — and the `q` walk (many matches: every user
    tested with its own contacts from its state) gives the page the sparse path gives
    from identities' key. A name holding U+0000 (stored as an escape in the state, which
    json's `->` refuses) changes neither."""
    users = [
        person("g-1", member_id="gm1", email=Value("gold@x.jp", True, True, 1)),
        person("g-2", email=Value("gold@x.jp", False, False, 1), mobile=Value("+819011112222", True, True, 1)),
        person("g-3", member_id="gm3", mobile=Value("+819033334444", False, False, 1), name="ta\x00ro"),
        person("g-4", email=Value("gold2@x.jp", True, True, 1), name="Gold digger"),
        person("g-5", member_id="gm5", email=Value("gold@x.jp", True, True, 1)),
        person("g-6", email=Value("gold@x.jp", True, True, 1)),
        person("g-7", member_id="gm7", email=Value("gold3@x.jp", True, True, 1), name="nul \x00 here"),
    ]
    users[3].masked = True
    users[4].merged_into = "g-1"
    users[4].member_id = None
    users[5].deleted = True
    async with pool.acquire() as conn, conn.transaction():
        await repo.save_users(conn, users, {})
        await repo.save_identities(conn, [(u, None, identities(u)) for u in users])
        await conn.execute("INSERT INTO grades VALUES ($1, 'gold', 'yellow'), ($1, 'vip', 'red'), ($1, 'tel', 'blue')", CH)
        await conn.execute("""INSERT INTO grade_holders VALUES ($1, 'gold', 'email', 'gold@x.jp'), ($1, 'gold', 'email', 'gold2@x.jp'),
                              ($1, 'vip', 'memberId', 'gm1'), ($1, 'vip', 'memberId', 'gm3'), ($1, 'tel', 'mobileNumber', '+819011112222'),
                              ($1, 'tel', 'mobileNumber', '+819033334444'), ($1, 'gold', 'email', 'gold3@x.jp')""", CH)
    seen = {}
    for u in users:
        row = await pool.fetchrow(f"SELECT u.state, {GRADES} FROM users u WHERE u.id = $1", u.id)
        got = row["grades"] or []
        view = {"memberId": u.member_id, "profile": {k.split(".")[1]: v.v for k, v in u.fields.items() if "." in k},
                "qualified": [k.split(".")[1] for k, v in u.fields.items() if "." in k and v.q]}
        want = [] if u.masked or not u.alive else await grades_of(pool, CH, view)
        assert got == want, (u.id, got, want)
        seen[u.id] = [g["name"] for g in got]
    assert seen == {"g-1": ["gold", "vip"], "g-2": ["tel"], "g-3": ["vip"], "g-4": [], "g-5": [], "g-6": [], "g-7": ["gold"]}

    for q in ("gold", "GOLD2", "gold3@", "+81 90 1111", "+8190333", "819011", "ta", "nul", "zz"):
        sparse, _ = await search_users(pool, CH, UserFilter(q=q), limit=50)
        with monkeypatch.context() as m:
            m.setattr(queries, "Q_SPARSE", -1)  # every q walks
            walked, _ = await search_users(pool, CH, UserFilter(q=q), limit=50)
        assert walked == sparse, q
    found = {q: [x["id"] for x in (await search_users(pool, CH, UserFilter(q=q), limit=50))[0]]
             for q in ("gold", "+81 90 1111", "+8190333", "ta")}
    assert found == {"gold": ["g-1", "g-2", "g-7"], "+81 90 1111": ["g-2"], "+8190333": ["g-3"], "ta": ["g-3"]}
