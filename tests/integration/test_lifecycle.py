"""B1–B4 end to end: block, unblock and delete (by user id and by memberId) as
`user-changed` shows them and as they bind later facts; the retention sweep's decisions
travel as facts; a deleted user's chat messages remain without the name they were
written under."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from contracts.topics import Topics
from services.domain.ids import fact_user_id, member_user_id, veil_user_id
from services.platform.config import Settings
from services.retention.retention import sweep
from services.store.pool import create_pool
from services.store.queries import find_user
from tests.support.infra import wait_for
from tests.support.service import Publisher, read_topic, running_service

pytestmark = pytest.mark.integration

CH = "ch_life"
T0 = 1_672_531_200_000  # 2023-01-01: the sweep time must not be after the log (event time is bounded by it)
DAY = 86_400_000


def ev(event_id: str, type_: str, at: int, **fields: Any) -> dict[str, Any]:
    return {"eventId": event_id, "type": type_, "channelId": CH, "occurredAt": at, **fields}


async def test_b4_retention_sweep_deletes_silent_users_and_b2_keeps_their_chats_anonymised(settings: Settings) -> None:
    assert settings.database_url and settings.kafka_bootstrap
    topics = Topics(settings.topic_prefix)
    pool = await create_pool(settings.database_url, settings.db_schema)
    try:
        async with running_service(settings), Publisher(settings) as pub:
            await pub.sdk(
                ev("b1", "boot", T0, veilId="v-old", platform="web", memberId="m-old", name="Taro"),
                ev("c1", "chat", T0 + 1000, veilId="v-old", chatId="chat-1", medium="web", message={"messageId": "msg-1", "text": "hello"}),
                ev("b2", "boot", T0 + 700 * DAY, veilId="v-new", platform="web", memberId="m-new"),
            )
            await wait_for(lambda: _count(pool, "SELECT count(*) FROM activities", 1))
            body = await pool.fetchval("SELECT body FROM activities WHERE event_id = 'c1'")
            assert body["authorName"] == "Taro"  # U4: kept as written

            now = T0 + 2 * 365 * DAY + 10 * DAY  # m-old silent > 2 years, m-new not
            assert await sweep(pool, settings.kafka_bootstrap, topics, now) == 1
            await wait_for(lambda: _gone(pool, "m-old"), message="m-old deleted")
            assert await sweep(pool, settings.kafka_bootstrap, topics, now) == 0
            changes = await wait_for(lambda: _deleted_published(settings, topics))
        assert await find_user(pool, CH, "member", "m-new") is not None
        body = await pool.fetchval("SELECT body FROM activities WHERE event_id = 'c1'")
        assert body == {"chatId": "chat-1", "medium": "web", "messageId": "msg-1", "text": "hello"}  # B2
        assert changes[-1][1] is None  # tombstone after `deleted`
    finally:
        await pool.close()


async def _count(pool: Any, sql: str, n: int) -> bool:
    return (await pool.fetchval(sql)) >= n


async def _gone(pool: Any, member_id: str) -> bool:
    return await pool.fetchval("SELECT count(*) FROM users WHERE deleted") == 1 and await find_user(pool, CH, "member", member_id) is None


async def _deleted_published(settings: Settings, topics: Topics) -> list[tuple[str | None, Any]] | None:
    got = await read_topic(settings, topics.user_changed)
    deleted = [i for i, (_k, v) in enumerate(got) if v is not None and v["change"] == "deleted"]
    if not deleted:
        return None
    key = got[deleted[0]][0]
    return [(k, v) for k, v in got if k == key]


async def test_b1_b2_b3_u6_block_unblock_and_delete_reach_user_changed_and_bind_later_facts(settings: Settings) -> None:
    """Story: staff block a lead — it is published `blocked`, cannot be unified (U6), and
    its later activity still applies (it stays blocked); staff unblock it, then delete
    it: `deleted` with `user: null` and a tombstone; a later edit of that id is refused
    and its browser starts a new anonymous user (B2). The site deletes a withdrawn
    member by memberId (B3): the same; its next login is a new member, and the lead
    that listed it as a candidate no longer does."""
    assert settings.database_url
    topics = Topics(settings.topic_prefix)
    pool = await create_pool(settings.database_url, settings.db_schema)
    lead_id, member_id = veil_user_id(CH, "v-lead"), member_user_id(CH, "mem-1")
    lead2_id = fact_user_id(CH, "l2")
    try:
        async with running_service(settings), Publisher(settings) as pub:
            await pub.sdk(
                ev("b1", "boot", T0, veilId="v-member", platform="web", memberId="mem-1", profile={"email": "taro@example.jp"}),
                ev("b2", "boot", T0 + 1000, veilId="v-lead", platform="web"),
                ev("c1", "contact", T0 + 2000, veilId="v-lead", email="lead@example.jp"),
            )
            await wait_for(lambda: _applied(pool, 3))
            await pub.command(
                cmd("k1", "user.block", T0 + DAY, userId=lead_id),
                cmd("a1", "unification.approve", T0 + DAY + 1, sourceUserId=lead_id, targetUserId=member_id),
                cmd("l2", "lead.create", T0 + DAY + 2, profile={"email": "taro@example.jp"}),
            )
            await wait_for(lambda: _applied(pool, 6))
            blocked = await find_user(pool, CH, "id", lead_id)
            assert blocked is not None and blocked["blocked"] is True  # listed, as a blocked user (B1)
            lead2 = await find_user(pool, CH, "id", lead2_id)
            assert lead2 is not None and lead2["unification"]["candidates"] == [member_id]
            await pub.sdk(ev("c2", "contact", T0 + 2 * DAY, veilId="v-lead", mobileNumber="+819012345678"))
            await wait_for(lambda: _applied(pool, 7))
            await pub.command(
                cmd("u1", "user.unblock", T0 + 3 * DAY, userId=lead_id),
                cmd("d1", "user.delete", T0 + 3 * DAY + 1, userId=lead_id),
                cmd("p1", "profile.update", T0 + 3 * DAY + 2, userId=lead_id, profile={"name": "back?"}),
                cmd("d2", "member.delete", T0 + 3 * DAY + 3, memberId="mem-1"),
            )
            await wait_for(lambda: _applied(pool, 11))
            await pub.sdk(
                ev("b3", "boot", T0 + 4 * DAY, veilId="v-lead", platform="web"),
                ev("b4", "boot", T0 + 4 * DAY + 1, veilId="v-member", platform="web", memberId="mem-1"),
            )
            await wait_for(lambda: _applied(pool, 13))
            changes = await wait_for(lambda: _by_user(settings, topics, 4), message="user-changed of four users")
            letters = await wait_for(lambda: read_topic(settings, topics.dead_letter), message="two dead letters")

        lead_msgs = changes[lead_id]
        assert [(m["change"], m["version"], m["causationId"], m["changedKeys"]) for m in lead_msgs[:-1]] == [
            ("created", 1, "c1", lead_msgs[0]["changedKeys"]),
            ("blocked", 2, "k1", ["blocked"]),
            ("updated", 3, "c2", ["profile.mobileNumber"]),  # B1: a blocked user's activity applies …
            ("unblocked", 4, "u1", ["blocked"]),
            ("deleted", 5, "d1", []),
        ]
        assert lead_msgs[1]["user"]["blocked"] is True and lead_msgs[2]["user"]["blocked"] is True  # … and it stays blocked
        assert lead_msgs[3]["user"]["blocked"] is False
        assert (lead_msgs[4]["user"], lead_msgs[4]["mergedInto"], lead_msgs[5]) == (None, None, None)  # then a tombstone
        member_msgs = changes[member_id]
        assert [m and (m["change"], m["version"], m["causationId"], m["user"]) for m in member_msgs[1:]] == [
            ("deleted", 2, "d2", None), None,
        ]
        assert member_msgs[0]["change"] == "created"
        assert [(v["error"]["code"], orjson.loads(v["value"])["eventId"]) for _k, v in letters] == [
            ("invalid_unification", "a1"), ("unknown_user", "p1"),
        ]  # U6: a blocked user is not unified; B2: a deleted id names no one

        assert await find_user(pool, CH, "id", lead_id) is None and await find_user(pool, CH, "id", member_id) is None
        again = await find_user(pool, CH, "veil", "v-lead")
        assert again is not None and again["type"] == "anonymous" and again["id"] != lead_id and again["profile"] == {}
        rejoined = await find_user(pool, CH, "member", "mem-1")
        assert rejoined is not None and rejoined["id"] != member_id and rejoined["profile"] == {}  # B3: a new person
        assert [m["change"] for m in changes[rejoined["id"]]] == ["created"]
        assert again["id"] not in changes  # anonymous: not published
        assert await pool.fetchval("SELECT count(*) FROM merges") == 0
        lead2 = await find_user(pool, CH, "id", lead2_id)
        assert lead2 is not None and lead2["unification"] == {"candidates": [], "pendingInto": None}
    finally:
        await pool.close()


def cmd(event_id: str, type_: str, at: int, **fields: Any) -> dict[str, Any]:
    return ev(event_id, type_, at, actor="staff-1", **fields)


async def _applied(pool: Any, n: int) -> bool:
    return bool(await pool.fetchval("SELECT coalesce(sum(next_offset), 0) FROM inbox_offsets") >= n)


async def _by_user(settings: Settings, topics: Topics, n: int) -> dict[str, list[Any]] | None:
    by_user: dict[str, list[Any]] = {}
    for key, value in await read_topic(settings, topics.user_changed):
        assert key is not None
        by_user.setdefault(key.split(":", 1)[1], []).append(value)
    return by_user if len(by_user) >= n and sum(m is None for msgs in by_user.values() for m in msgs) >= 2 else None


async def test_b2_deletion_removes_behaviour_events_and_contested_values_of_merge_records(settings: Settings) -> None:
    """B2 (issue 16): a deleted member's behaviour events are removed, also those its
    merged visitor brought along (U4); its chats stay without the author's name; the
    record of the merge into it stays (G4) with which side won each contested key, but
    not the values — the person's e-mail, phone and name. Another user's are untouched."""
    assert settings.database_url
    pool = await create_pool(settings.database_url, settings.db_schema)
    try:
        async with running_service(settings), Publisher(settings) as pub:
            await pub.command(
                ev("m", "member.upsert", T0, actor="staff-1", memberId="m-1", name="Taro Member",
                   profile={"email": "taro@example.jp", "mobileNumber": "+819012345678"}),
                ev("o", "member.upsert", T0, actor="staff-1", memberId="m-2", name="Other",
                   profile={"email": "other@example.jp"}),
            )
            await pub.sdk(
                ev("b1", "boot", T0 + 500, veilId="v-anon", platform="web", name="Hana Visitor"),
                ev("t1", "track", T0 + 1000, veilId="v-anon", name="viewed", properties={"page": "/a"}),
                ev("c1", "contact", T0 + 2000, veilId="v-anon", email="typed@example.jp", mobileNumber="+819099999999"),
                ev("ch", "chat", T0 + 3000, veilId="v-anon", chatId="chat-1", medium="web", message={"messageId": "x", "text": "hi"}),
                ev("l1", "login", T0 + 4000, veilId="v-anon", memberId="m-1", name="Taro"),
                ev("t2", "track", T0 + 5000, veilId="v-anon", name="bought", properties={"sku": "1"}),
                ev("t3", "track", T0 + 5000, veilId="v-other", name="viewed", properties={}),
                ev("l2", "login", T0 + 6000, veilId="v-other", memberId="m-2"),
            )
            await wait_for(lambda: _count(pool, "SELECT count(*) FROM merges", 2))
            member_id = member_user_id(CH, "m-1")
            contested = await pool.fetchval("SELECT contested FROM merges WHERE target_id = $1", member_id)
            assert contested["profile.email"]["source"] == "typed@example.jp"  # G4: the values, while it lives
            await pub.command(ev("d", "member.delete", T0 + DAY, actor="api", memberId="m-1"))
            await wait_for(lambda: _gone(pool, "m-1"), message="m-1 deleted")

        rows = await pool.fetch("SELECT event_id, kind, body FROM activities WHERE user_id = $1 ORDER BY event_id", member_id)
        assert [(r["event_id"], r["kind"]) for r in rows] == [("ch", "chat")]  # B2: events gone, the chat stays
        assert "authorName" not in rows[0]["body"] and rows[0]["body"]["text"] == "hi"
        record = await pool.fetchrow("SELECT source_id, causation_id, contested FROM merges WHERE target_id = $1", member_id)
        assert (record["source_id"], record["causation_id"]) == (veil_user_id(CH, "v-anon"), "l1")  # G4: kept
        assert record["contested"] == {k: {"winner": v["winner"]} for k, v in contested.items()}
        assert set(record["contested"]) >= {"name", "profile.email", "profile.mobileNumber"}
        text = orjson.dumps(record["contested"]).decode()
        assert all(x not in text for x in ("taro@example.jp", "typed@example.jp", "+8190", "Taro", "Hana"))
        other = await pool.fetchval("SELECT contested FROM merges WHERE target_id = $1", member_user_id(CH, "m-2"))
        kept = await pool.fetchval("SELECT count(*) FROM activities WHERE event_id = 't3'")
        assert kept == 1 and other is not None  # another person's data is not touched
    finally:
        await pool.close()
