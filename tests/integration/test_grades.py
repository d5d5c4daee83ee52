"""Grades (D2) and staff cancelling a pending unification (U6), end to end: commands on
the real broker, state in PostgreSQL, read as `unifier user show` prints it, and rebuilt
by replay to the same digest."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from contracts.topics import Topics
from services.domain.ids import fact_user_id
from services.platform.config import Settings
from services.replay.digest import state_digest
from services.store.queries import find_user, grades_of
from tests.integration.test_replay import replay, side_schemas
from tests.support.infra import wait_for
from tests.support.service import Publisher, read_topic, running_service

pytestmark = pytest.mark.integration

CH = "ch_grades"
T0 = 1_746_316_800_000
HOUR = 3_600_000


def ev(event_id: str, type_: str, at: int, **fields: Any) -> dict[str, Any]:
    if type_.split(".")[0] in ("grade", "unification", "member", "lead", "profile", "user"):
        fields.setdefault("actor", "staff-1")
    return {"eventId": event_id, "type": type_, "channelId": CH, "occurredAt": at, **fields}


async def applied(pool: asyncpg.Pool, n: int) -> bool:
    return (await pool.fetchval("SELECT coalesce(sum(next_offset), 0) FROM inbox_offsets")) >= n


async def grades(pool: asyncpg.Pool, by: str, value: str) -> list[str]:
    user = await find_user(pool, CH, by, value)
    assert user is not None and "grades" in user, user
    # D2: the grades read with the user in one statement (queries.GRADES) are those of
    # the keys grade_keys names (grades_of), masked users and unqualified contacts too.
    assert user["grades"] == await grades_of(pool, CH, user), user
    return [f"{g['name']} {g['colour']}" for g in user["grades"]]


async def codes(settings: Settings) -> list[str]:
    letters = await read_topic(settings, Topics(settings.topic_prefix).dead_letter)
    return sorted(v["error"]["code"] for _, v in letters if v is not None)


def member_import(import_id: str, at: int, member_id: str, email: str) -> list[dict[str, Any]]:
    """What `unifier import --mode member` publishes for a one-row file."""
    head = {"channelId": CH, "occurredAt": at, "importId": import_id}
    return [
        {"eventId": f"{import_id}:started", "type": "import.started", **head, "mode": "member", "key": "memberId",
         "blank": "keep", "tag": None, "actor": "staff-1", "fileName": "members.csv",
         "columns": [{"column": c, "key": k} for c, k in (("memberId", "memberId"), ("email", "profile.email"),
                                                          ("unsubscribeEmail", "unsubscribeEmail"),
                                                          ("unsubscribeTexting", "unsubscribeTexting"))]},
        {"eventId": f"{import_id}:2", "type": "import.row", **head, "rowNumber": 2,
         "cells": {"memberId": member_id, "profile.email": email, "unsubscribeEmail": "false", "unsubscribeTexting": "false"}},
        {"eventId": f"{import_id}:finished", "type": "import.finished", **head, "rows": 1},
    ]


async def test_d2_a_customer_shows_the_grades_of_its_keys_after_merges_and_imports_and_replay_rebuilds_them(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """Grades are held by keys: the member shows the grade of its e-mail at once, the
    grade of a merged lead's e-mail after the merge, the grade of a memberId once an
    import creates that member; an undefined grade is refused (`unknown_grade`); removing
    a grade removes it everywhere; a rebuild gives the same state and digest."""
    lead_id = fact_user_id(CH, "lead")
    topics = Topics(settings.topic_prefix)
    async with running_service(settings), Publisher(settings) as pub:
        await pub.command(
            ev("g1", "grade.define", T0, name="VIP", colour="#FFD700"),
            ev("g2", "grade.define", T0, name="Gold", colour="#c0c0c0"),
            ev("m", "member.upsert", T0 + HOUR, memberId="mem-1", profile={"email": "taro@example.jp"}),
            ev("lead", "lead.create", T0 + HOUR, profile={"email": "hanako@example.jp", "mobileNumber": "+819012345678"}),
            ev("a1", "grade.assign", T0 + 2 * HOUR, name="VIP", kind="email", value=" Taro@Example.JP "),
            ev("a2", "grade.assign", T0 + 2 * HOUR, name="Gold", kind="mobileNumber", value="+81 90-1234-5678"),
            ev("a3", "grade.assign", T0 + 2 * HOUR, name="Gold", kind="memberId", value="mem-2"),
            ev("bad", "grade.assign", T0 + 2 * HOUR, name="Silver", kind="email", value="taro@example.jp"),
        )
        await wait_for(lambda: applied(pool, 8))
        assert await grades(pool, "member", "mem-1") == ["VIP #ffd700"]
        assert await grades(pool, "id", lead_id) == ["Gold #c0c0c0"]

        # U5/U4: the lead (never booted) merged into the member brings its keys along.
        await pub.command(
            ev("p", "profile.update", T0 + 3 * HOUR, userId=lead_id, profile={"email": "taro@example.jp"}),
            ev("ap", "unification.approve", T0 + 3 * HOUR, sourceUserId=lead_id, targetUserId=(await find_user(pool, CH, "member", "mem-1") or {})["id"]),
        )
        await publish_import(pub, topics, member_import("imp_1", T0 + 4 * HOUR, "mem-2", "jiro@example.jp"))
        await wait_for(lambda: applied(pool, 13))
        assert await grades(pool, "member", "mem-1") == ["Gold #c0c0c0", "VIP #ffd700"]
        assert await grades(pool, "member", "mem-2") == ["Gold #c0c0c0"]

        await pub.command(ev("r", "grade.remove", T0 + 5 * HOUR, name="VIP"))
        await wait_for(lambda: applied(pool, 14))
        assert await grades(pool, "member", "mem-1") == ["Gold #c0c0c0"]
        assert await pool.fetchval("SELECT count(*) FROM grade_holders WHERE name = 'VIP'") == 0
        assert await wait_for(lambda: _has(settings, "unknown_grade")) == ["unknown_grade"]

    live = await state_digest(pool)
    try:
        assert await replay(settings, "--rebuild", "--drop-archive") == {"events": 14, "digest": live}
        assert await grades(pool, "member", "mem-1") == ["Gold #c0c0c0"]
        assert sorted(tuple(r) for r in await pool.fetch("SELECT name, kind, value FROM grade_holders")) == [
            ("Gold", "memberId", "mem-2"), ("Gold", "mobileNumber", "+819012345678"),
        ]
    finally:
        await _drop_side_schemas(settings)


async def publish_import(pub: Publisher, topics: Topics, rows: list[dict[str, Any]]) -> None:
    await pub.send(topics.import_rows, rows)


async def _has(settings: Settings, code: str) -> list[str] | None:
    found = [c for c in await codes(settings) if c == code]
    return found or None


async def _drop_side_schemas(settings: Settings) -> None:
    assert settings.database_url is not None
    conn = await asyncpg.connect(settings.database_url)
    try:
        for schema in await side_schemas(settings.database_url, settings.db_schema):
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()


async def test_u6_staff_cancel_a_pending_unification_and_cancelling_none_is_rejected(settings: Settings, pool: asyncpg.Pool) -> None:
    async with running_service(settings), Publisher(settings) as pub:
        await pub.command(ev("m", "member.upsert", T0, memberId="mem-1", profile={"email": "hana@example.jp"}))
        await pub.sdk(ev("b", "boot", T0 + HOUR, veilId="v-lead", platform="web"))
        await wait_for(lambda: applied(pool, 2))
        lead = await find_user(pool, CH, "veil", "v-lead")
        member = await find_user(pool, CH, "member", "mem-1")
        assert lead is not None and member is not None
        await pub.command(
            ev("p", "profile.update", T0 + 2 * HOUR, userId=lead["id"], profile={"email": "hana@example.jp"}),
            ev("a", "unification.approve", T0 + 3 * HOUR, sourceUserId=lead["id"], targetUserId=member["id"]),
            ev("c1", "unification.cancel", T0 + 4 * HOUR, sourceUserId=lead["id"]),
            ev("c2", "unification.cancel", T0 + 4 * HOUR, sourceUserId=lead["id"]),
        )
        await pub.sdk(ev("l", "login", T0 + 5 * HOUR, veilId="v-member", memberId="mem-1"))
        await wait_for(lambda: applied(pool, 7))
        assert await wait_for(lambda: _has(settings, "not_pending")) == ["not_pending"]

    kept = await find_user(pool, CH, "id", lead["id"])
    assert kept is not None and kept["unification"] == {"candidates": [member["id"]], "pendingInto": None}
    assert await pool.fetchval("SELECT count(*) FROM merges") == 0
