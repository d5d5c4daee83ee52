"""Read-side queries: `unifier user show`, the HTTP API and the console (one code path
per read)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from services.domain.user import EMAIL, MOBILE, User
from services.domain.view import user_view
from services.store.rows import stored_user


async def find_user(conn: asyncpg.Connection | asyncpg.Pool, channel_id: str, by: str, value: str) -> dict[str, Any] | None:
    """The user's JSON for `unifier user show`, or None (deleted users included).

    `by` is id | member | veil | email | mobile. A contact several users share picks
    members first, then the latest lastSeenAt (docs/contract.md). One round trip for a
    member (its grades come with it); a lead or anonymous user asks for its candidates."""
    if by == "id":
        row = await conn.fetchrow(f"SELECT u.state, {GRADES} FROM users u WHERE u.id = $1 AND u.channel_id = $2",
                                  value, channel_id)
    else:
        row = await conn.fetchrow(
            f"""SELECT u.state, {GRADES} FROM identities i JOIN users u ON u.id = i.user_id
                WHERE i.channel_id = $1 AND i.kind = $2 AND i.value = $3
                ORDER BY (u.type = 'member') DESC, u.last_seen_at DESC NULLS LAST, u.id
                LIMIT 1""",
            channel_id, by, value,
        )
    if row is None:
        return None
    user = stored_user(row["state"])
    if user.deleted:
        return None
    if user.merged_into is not None:
        return {"id": user.id, "mergedInto": user.merged_into}
    view = user_view(user)
    view["grades"] = row["grades"] or []
    candidates = await member_candidates(conn, user)
    view["unification"] = {"candidates": candidates, "pendingInto": user.pending_into}
    return view


STATE_FIELDS = "replace(u.state, '\\u0000', '\\u0020')::json -> 'fields'"
"""The `fields` object of a users row `u`'s state (User.to_json: key → `[value,
qualified, merged, time]`), for the rare read of a user's own contacts (its grades, the
`q` walk). json's `->` unescapes every string of the text it walks and refuses an
escaped U+0000 (text cannot hold one) wherever it is, e.g. in a name; such an escape is
read as a space here. No stored contact holds one (PostgreSQL cannot store it in
`identities`, whose row is written with the state), so the contacts read are exact."""


GRADES = """(SELECT json_agg(json_build_object('name', g.name, 'colour', g.colour) ORDER BY g.name)
               FROM grades g
              WHERE g.channel_id = u.channel_id AND NOT u.masked AND NOT u.deleted AND u.merged_into IS NULL
                AND g.name IN (
                    SELECT h.name FROM grade_holders h
                     WHERE h.channel_id = u.channel_id AND (h.kind, h.value) IN (
                           SELECT 'memberId', u.member_id
                           UNION ALL
                           SELECT k.kind, k.held ->> 0
                             FROM (SELECT """ + STATE_FIELDS + """ AS f OFFSET 0) s,
                                  LATERAL (VALUES ('email', s.f -> 'profile.email'),
                                                  ('mobileNumber', s.f -> 'profile.mobileNumber')) k(kind, held)
                            WHERE (k.held ->> 1)::boolean))) AS grades"""
"""The `grades` column of a users row `u`, in the same statement as the row (one round
trip per read instead of two): `grades_of` in SQL. The keys of `grade_keys` — memberId
and the *qualified* e-mail and mobile number, none when masked (I17) — are read from
the row itself: `member_id`, and the contacts in `state` (STATE_FIELDS), parsed once
(OFFSET 0) and only for a channel that has grades; a dead user
(deleted, merged away) holds no keys, as `directory.identities` says. Not through
`identities` by user id: that index cost every identity row an entry (~6 µs of
PostgreSQL an imported member) for this read alone (docs/decisions.md, "Issue 14,
session 21"). Each key is one probe of grade_holders_key. `[{"name", "colour"}]` by
name, or NULL for none; tests/integration/test_grades.py checks both give the same."""


def grade_keys(user_json: dict[str, Any]) -> list[tuple[str, str]]:
    """The keys that give a user grades (D2): its memberId and its *qualified* contacts,
    from the contract's `user` object (`memberId`, `profile`, `qualified`). A masked user
    (I17) shows none: its personal keys are hidden, and grades derive from them."""
    keys: list[tuple[str, str]] = []
    if user_json.get("memberId"):
        keys.append(("memberId", user_json["memberId"]))
    profile = user_json.get("profile") or {}
    for kind in ("email", "mobileNumber"):
        value = profile.get(kind)
        if isinstance(value, str) and kind in (user_json.get("qualified") or ()):
            keys.append((kind, value))
    return keys


async def grades_of(conn: asyncpg.Connection | asyncpg.Pool, channel_id: str, user_json: dict[str, Any]) -> list[dict[str, str]]:
    """`[{"name", "colour"}]` of every grade assigned to a key the user holds, by name.
    Computed when read, so it holds after merges and imports (the survivor holds the keys)."""
    keys = grade_keys(user_json)
    if not keys:
        return []
    rows = await conn.fetch(
        """SELECT DISTINCT g.name, g.colour FROM grade_holders h
             JOIN grades g ON g.channel_id = h.channel_id AND g.name = h.name
             JOIN unnest($2::text[], $3::text[]) AS k(kind, value) ON h.kind = k.kind AND h.value = k.value
            WHERE h.channel_id = $1
            ORDER BY g.name""",
        channel_id, [k for k, _ in keys], [v for _, v in keys],
    )
    return [{"name": r["name"], "colour": r["colour"]} for r in rows]


async def member_candidates(conn: asyncpg.Connection | asyncpg.Pool, user: User) -> list[str]:
    """U5/U7/U9, current as read: live, unblocked members holding one of the user's
    qualified contacts, most recently updated first (then by id). Only a live, unblocked
    anonymous user or lead has candidates. The same rule as the core's
    `saga.member_candidates`: a member that changed its contact, was blocked or deleted
    since is no longer offered, so staff never approve a stale match."""
    if user.type == "member" or not user.alive or user.blocked:
        return []
    keys = [
        (kind, val.v)
        for key, kind in ((EMAIL, "email"), (MOBILE, "mobile"))
        if (val := user.fields.get(key)) is not None and val.v is not None and val.q
    ]
    if not keys:
        return []
    rows = await conn.fetch(
        """SELECT u.id FROM users u
            WHERE u.id IN (SELECT i.user_id FROM identities i
                             JOIN unnest($2::text[], $3::text[]) AS k(kind, value)
                               ON i.channel_id = $1 AND i.kind = k.kind AND i.value = k.value AND i.qualified)
              AND u.type = 'member' AND NOT u.blocked AND NOT u.deleted AND u.merged_into IS NULL
              AND u.id <> $4
            ORDER BY u.updated_at DESC, u.id""",
        user.channel_id, [k for k, _ in keys], [v for _, v in keys], user.id,
    )
    return [r["id"] for r in rows]


async def review_candidates(
    conn: asyncpg.Connection | asyncpg.Pool, channel_id: str, *, after: str | None = None, limit: int = 100,
) -> list[tuple[str, list[str]]]:
    """The review queue of U5 as read now: (source user id, its current candidates) for
    every live, unblocked anonymous user or lead that has one, in id order after `after`
    (keyset pagination), at most `limit`."""
    rows = await conn.fetch(
        """SELECT u.state FROM users u
            WHERE u.id IN (SELECT si.user_id FROM identities si
                             JOIN identities mi ON mi.channel_id = si.channel_id AND mi.kind = si.kind
                                               AND mi.value = si.value AND mi.qualified AND mi.user_id <> si.user_id
                             JOIN users m ON m.id = mi.user_id AND m.type = 'member' AND NOT m.blocked
                            WHERE si.channel_id = $1 AND si.kind IN ('email', 'mobile') AND si.qualified)
              AND u.type <> 'member' AND NOT u.blocked AND u.id > $2
            ORDER BY u.id LIMIT $3""",
        channel_id, after or "", limit,
    )
    out = []
    for row in rows:
        source = stored_user(row["state"])
        out.append((source.id, await member_candidates(conn, source)))
    return out


# -- the HTTP API's and the console's reads (docs/contract.md, "HTTP API") ----------------

MAX_PAGE = 100


class BadCursor(ValueError):
    """A pagination cursor this API did not hand out."""


def encode_cursor(*parts: str | int) -> str:
    """Opaque to clients: the keyset position after the page's last row."""
    return base64.urlsafe_b64encode(orjson.dumps(list(parts))).decode().rstrip("=")


def decode_cursor(cursor: str, *types: type) -> list[Any]:
    try:
        parts = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise BadCursor("cursor: not a cursor of this list") from None
    if not isinstance(parts, list) or len(parts) != len(types) or not all(
        type(p) is t for p, t in zip(parts, types, strict=True)
    ):
        raise BadCursor("cursor: not a cursor of this list")
    return parts


async def survivor_of(conn: asyncpg.Connection | asyncpg.Pool, channel_id: str, user_id: str) -> str | None:
    """Where a merged id ended up, following the chain of merges (U8); None if unknown."""
    return await conn.fetchval(
        """WITH RECURSIVE chain(id, target, depth) AS (
               SELECT id, merged_into, 0 FROM users WHERE id = $2 AND channel_id = $1
               UNION ALL
               SELECT u.id, u.merged_into, c.depth + 1 FROM users u JOIN chain c ON u.id = c.target
                WHERE c.depth < 100)
           SELECT id FROM chain WHERE target IS NULL""",
        channel_id, user_id,
    )


@dataclass(frozen=True, slots=True)
class UserFilter:
    """The filters of `GET /v1/channels/{ch}/users`; identifiers already cleaned (G1)."""

    member_id: str | None = None
    veil_id: str | None = None
    email: str | None = None
    mobile: str | None = None
    q: str | None = None
    type: str | None = None
    tag: str | None = None
    grade: str | None = None
    blocked: bool | None = None
    # The console's contact list (issue 13): leads and members only (C1), masked or not
    # (I17), last seen within a range (epoch ms, inclusive).
    contact_list: bool = False
    masked: bool | None = None
    seen_after: int | None = None
    seen_before: int | None = None


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def search_users(
    conn: asyncpg.Connection | asyncpg.Pool, channel_id: str, f: UserFilter, *, limit: int = 50, cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Live users (not deleted, not merged away) matching every filter, in id order, one
    page; with the cursor of the next page or None. `q` matches a prefix of the name
    (case-insensitive), of an e-mail or of a mobile number; masked users (I17) never
    match it, since their personal data is hidden."""
    limit = max(1, min(limit, MAX_PAGE))
    q_ids = await _sparse(conn, *q_matches_sql(channel_id, f.q)) if f.q is not None else None
    tag_ids = await _sparse(conn, *tag_matches_sql(channel_id, f.tag)) if f.tag is not None else None
    sql, args = search_sql(channel_id, f, limit=limit, cursor=cursor, q_ids=q_ids, tag_ids=tag_ids)
    rows = await conn.fetch(sql, *args)
    users = [stored_user(r["state"]) for r in rows[:limit]]
    items = []
    for user, row in zip(users, rows, strict=False):
        view = user_view(user)
        view["grades"] = row["grades"] or []
        items.append(view)
    return items, encode_cursor(users[-1].id) if len(rows) > limit else None


Q_SPARSE = 5000
"""`q` (or `tag`) matching at most this many users is answered from the list of their
ids (index scans: the prefix's ranges, the tags' GIN), then the page of them in id
order; a broader match walks the channel's users in id order, testing each, and stops
at the page's end (dense matches are found fast). Either way no plan sorts a million
matches, and none walks a million users for a rare value (PostgreSQL cannot estimate
how rare a prefix or a tag is, and picked that walk for a tag nobody had: 24 s)."""


async def _sparse(conn: asyncpg.Connection | asyncpg.Pool, sql: str, args: list[Any]) -> list[str] | None:
    """The matching ids when there are at most Q_SPARSE, else None (walk instead)."""
    ids = sorted({r[0] for r in await conn.fetch(sql, *args)})
    return ids if len(ids) <= Q_SPARSE else None


def tag_matches_sql(channel_id: str, tag: str) -> tuple[str, list[Any]]:
    """Ids of live users with staff tag `tag`, at most Q_SPARSE + 1 (the users_tag_list GIN,
    which holds only users with tags: `tags <> '{}'`, implied by `@>` a tag but written
    out, as the planner uses a partial index only for a predicate the query states)."""
    return (
        f"""SELECT id FROM users WHERE tags @> ARRAY[$2]::text[] AND tags <> '{{}}'::text[] AND channel_id = $1
              AND NOT deleted AND merged_into IS NULL LIMIT {Q_SPARSE + 1}""",
        [channel_id, tag],
    )


def _q_patterns(q: str) -> tuple[str, str | None]:
    """LIKE patterns of `q`: the prefix of an e-mail or of a name (users.name_key,
    lowercased the same way by repository.search_columns), and of a phone (E.164) or None."""
    phone = _phone_prefix(q)
    return _like_prefix(q.strip().lower()), _like_prefix(phone) if phone else None


def q_matches_sql(channel_id: str, q: str) -> tuple[str, list[Any]]:
    """Ids of users whose e-mail, phone or name starts with `q`, at most Q_SPARSE + 1
    (each branch an index range scan: identities' primary key, whose `value` collates as
    "C", and users_name_key_prefix)."""
    prefix, phone = _q_patterns(q)
    branches = [
        "SELECT user_id FROM identities WHERE channel_id = $1 AND kind IN ('email', 'mobile') AND value LIKE $2",
        """SELECT id FROM users WHERE channel_id = $1 AND NOT deleted AND merged_into IS NULL
              AND name_key LIKE $2""",
    ]
    args: list[Any] = [channel_id, prefix]
    if phone is not None:
        branches.append("SELECT user_id FROM identities WHERE channel_id = $1 AND kind IN ('email', 'mobile') AND value LIKE $3")
        args.append(phone)
    return f"SELECT * FROM ({' UNION ALL '.join(f'({b} LIMIT {Q_SPARSE + 1})' for b in branches)}) m LIMIT {Q_SPARSE + 1}", args


def search_sql(
    channel_id: str, f: UserFilter, *, limit: int, cursor: str | None = None, q_ids: list[str] | None = None,
    tag_ids: list[str] | None = None,
) -> tuple[str, list[Any]]:
    """The statement of `search_users` (one more row than `limit`, to know if a next page
    exists) and its arguments; bench/api_bench.py EXPLAINs it. With `q` (`tag`): `q_ids`
    (`tag_ids`) are the ids matching it (few), or None to test each user (many match)."""
    args: list[Any] = [channel_id]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    where = ["u.channel_id = $1", "NOT u.deleted", "u.merged_into IS NULL"]
    for kind, value in (("member", f.member_id), ("veil", f.veil_id), ("email", f.email), ("mobile", f.mobile)):
        if value is not None:
            where.append(
                f"u.id IN (SELECT user_id FROM identities WHERE channel_id = $1 AND kind = '{kind}' AND value = {arg(value)})"
            )
    if f.q is not None:
        where.append("NOT u.masked")
        if q_ids is not None:
            where.append(f"u.id = ANY({arg(q_ids)}::text[])")
        else:
            # Many match: the walk tests each live user it passes with its own e-mail and
            # mobile number (the values of its `identities` rows of those kinds), read
            # from its state, parsed once (OFFSET 0: not inlined, which parsed it once per
            # test); the page ends the walk. Not `u.id IN (identities matching q)`: the
            # planner hashes those matches when they fit in work_mem, and when they do
            # not (a walk is taken because they are many) it tests each user against the
            # whole list (docs/decisions.md, "Issue 14, session 21").
            prefix, phone = _q_patterns(f.q)
            pattern = arg(prefix)
            phone_arg = arg(phone) if phone else None
            likes = " OR ".join(f"c.f -> '{field}' ->> 0 LIKE {p}" for field in (EMAIL, MOBILE)
                                for p in (pattern, phone_arg) if p is not None)
            where.append(
                f"""(u.name_key LIKE {pattern}
                     OR EXISTS (SELECT 1 FROM (SELECT {STATE_FIELDS} AS f OFFSET 0) c WHERE {likes}))"""
            )
    if f.type is not None:
        where.append(f"u.type = {arg(f.type)}")
    if f.blocked is not None:
        where.append(f"u.blocked = {arg(f.blocked)}")
    if f.contact_list:
        where.append("u.type IN ('lead', 'member')")
    if f.masked is not None:
        where.append(f"u.masked = {arg(f.masked)}")
    if f.seen_after is not None:
        where.append(f"u.last_seen_at >= {arg(f.seen_after)}")
    if f.seen_before is not None:
        where.append(f"u.last_seen_at <= {arg(f.seen_before)}")
    if f.tag is not None:
        if tag_ids is not None:
            where.append(f"u.id = ANY({arg(tag_ids)}::text[])")
        else:
            where.append(f"u.tags @> ARRAY[{arg(f.tag)}]::text[]")
    if f.grade is not None:
        where.append("NOT u.masked")
        where.append(
            # The keys that give grades (grade_keys): memberId and qualified contacts.
            f"""u.id IN (SELECT i.user_id FROM grade_holders g
                           JOIN identities i ON i.channel_id = g.channel_id AND i.value = g.value
                                AND i.kind = CASE g.kind WHEN 'memberId' THEN 'member'
                                                         WHEN 'mobileNumber' THEN 'mobile' ELSE 'email' END
                                AND (i.kind = 'member' OR i.qualified)
                          WHERE g.channel_id = $1 AND g.name = {arg(f.grade)})"""
        )
    if cursor is not None:
        (after,) = decode_cursor(cursor, str)
        where.append(f"u.id > {arg(after)}")
    return f"SELECT u.state, {GRADES} FROM users u WHERE {' AND '.join(where)} ORDER BY u.id LIMIT {arg(limit + 1)}", args


def _phone_prefix(q: str) -> str | None:
    """A phone number as staff type it (`+81 90-1234`, `8190…`) as a prefix of the stored
    E.164 form (U9), else None. A national `090…` is not guessed into a country."""
    text = q.strip()
    digits = "".join(c for c in text if c.isdigit())
    if not digits or any(not (c.isdigit() or c in "+- ()") for c in text) or "+" in text[1:]:
        return None
    return "+" + digits


async def user_json(conn: asyncpg.Connection | asyncpg.Pool, user: User) -> dict[str, Any]:
    """The contract's `user` object of a live user with its `grades`, as lists show it
    (without `unification`, which costs a query per user)."""
    view = user_view(user)
    view["grades"] = await grades_of(conn, user.channel_id, view)
    return view


async def activities(
    conn: asyncpg.Connection | asyncpg.Pool, channel_id: str, user_id: str, *, limit: int = 50, cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Chats and behaviour events of a user, newest first (U4: a survivor has its
    sources' too), one page."""
    args: list[Any] = [channel_id, user_id]
    after = ""
    if cursor is not None:
        at, event_id = decode_cursor(cursor, int, str)
        args += [at, event_id]
        after = "AND (occurred_at, event_id) < ($3, $4)"
    limit = max(1, min(limit, MAX_PAGE))
    rows = await conn.fetch(
        f"""SELECT event_id, kind, occurred_at, body FROM activities
             WHERE user_id = $2 AND channel_id = $1 {after}
             ORDER BY occurred_at DESC, event_id DESC LIMIT {limit + 1}""",
        *args,
    )
    items = [{"eventId": r["event_id"], "kind": r["kind"], "occurredAt": r["occurred_at"], **_body(r["body"])} for r in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    return items, encode_cursor(last["occurred_at"], last["event_id"]) if last is not None else None


def _body(body: Any) -> dict[str, Any]:
    return body if isinstance(body, dict) else {"body": body}


async def merges_into(conn: asyncpg.Connection | asyncpg.Pool, channel_id: str, user_id: str) -> list[dict[str, Any]]:
    """G4: every merge that made this user, also those into the users merged into it,
    oldest first, with the winner of every contested key."""
    rows = await conn.fetch(
        """WITH RECURSIVE tree AS (
               SELECT source_id, target_id, causation_id, occurred_at, contested, 0 AS depth
                 FROM merges WHERE channel_id = $1 AND target_id = $2
               UNION ALL
               SELECT m.source_id, m.target_id, m.causation_id, m.occurred_at, m.contested, t.depth + 1
                 FROM merges m JOIN tree t ON m.channel_id = $1 AND m.target_id = t.source_id
                WHERE t.depth < 100)
           SELECT * FROM tree ORDER BY occurred_at, source_id""",
        channel_id, user_id,
    )
    return [
        {"sourceUserId": r["source_id"], "targetUserId": r["target_id"], "causationId": r["causation_id"],
         "occurredAt": r["occurred_at"], "contested": r["contested"]}
        for r in rows
    ]


async def review_queue(
    conn: asyncpg.Connection | asyncpg.Pool, channel_id: str, state: str, *, limit: int = 50, cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """The unification review queue (U5, U6), by source user id: leads with candidate
    members (`candidate`), or sources waiting for their target member's login (`pending`).
    Each item: `{"state", "source": user, "targets": [users]}`."""
    (after,) = decode_cursor(cursor, str) if cursor is not None else ("",)
    limit = max(1, min(limit, MAX_PAGE))
    if state == "candidate":
        queue = await review_candidates(conn, channel_id, after=after or None, limit=limit + 1)
        states = {
            r["id"]: stored_user(r["state"])
            for r in await conn.fetch("SELECT id, state FROM users WHERE id = ANY($1::text[])", [s for s, _ in queue])
        }
        sources = [states[s] for s, _ in queue]
        pairs = [(states[s], targets) for s, targets in queue[:limit] if targets]
    else:
        rows = await conn.fetch(
            """SELECT u.state FROM identities i JOIN users u ON u.id = i.user_id
                WHERE i.channel_id = $1 AND i.kind = 'pending' AND i.user_id > $2
                ORDER BY i.user_id LIMIT $3""",
            channel_id, after, limit + 1,
        )
        sources = [stored_user(r["state"]) for r in rows]
        pairs = [(u, [u.pending_into] if u.pending_into else []) for u in sources[:limit]]
    wanted = sorted({t for _, targets in pairs for t in targets})
    found = {
        r["id"]: stored_user(r["state"])
        for r in await conn.fetch("SELECT id, state FROM users WHERE id = ANY($1::text[])", wanted)
    }
    items = []
    for source, targets in pairs:
        item: dict[str, Any] = {
            "state": state, "source": await user_json(conn, source),
            "targets": [await user_json(conn, found[t]) for t in targets if t in found],
        }
        if state == "pending":
            item["pendingSince"] = source.pending_since
        items.append(item)
    return items, encode_cursor(sources[limit - 1].id) if len(sources) > limit else None


async def channel_settings(conn: asyncpg.Connection | asyncpg.Pool, channel_id: str) -> dict[str, Any]:
    """A channel's settings as the API shows them: the member-hash secret never, only
    whether one is set (H1)."""
    row = await conn.fetchrow(
        "SELECT member_hash_secret IS NOT NULL AS secret_set, mu_limit, field_types FROM channels WHERE channel_id = $1",
        channel_id,
    )
    if row is None:
        return {"channelId": channel_id, "muLimit": None, "fields": {}, "memberHashSecretSet": False}
    return {"channelId": channel_id, "muLimit": row["mu_limit"], "fields": dict(row["field_types"]),
            "memberHashSecretSet": row["secret_set"]}
