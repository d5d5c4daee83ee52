"""Issue 2 end to end: SDK facts and commands through a real Kafka-protocol broker into
PostgreSQL, and what the service publishes on user-changed and dead-letter."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import asyncpg
import pytest

from contracts.outbound import DeadLetter, UserChanged
from contracts.topics import Topics
from services.platform.config import Settings
from services.store.queries import find_user
from tests.support.infra import wait_for
from tests.support.service import Publisher, read_topic, running_service

pytestmark = pytest.mark.integration

CH = "ch_e2e"
T0 = 1_767_225_600_000
MIN = 60_000


def ev(event_id: str, type_: str, at: int, **fields: Any) -> dict[str, Any]:
    return {"eventId": event_id, "type": type_, "channelId": CH, "occurredAt": at, **fields}



async def applied(pool: asyncpg.Pool, n: int) -> bool:
    return (await pool.fetchval("SELECT coalesce(sum(next_offset), 0) FROM inbox_offsets")) >= n


async def test_c1_c2_u2_visitor_becomes_lead_then_merges_into_member(settings: Settings, pool: asyncpg.Pool) -> None:
    """An anonymous visitor (C1: not published) leaves an e-mail (C2: lead, published with
    all it gathered), then logs in as an existing member (U2: merged at once)."""
    async with running_service(settings), Publisher(settings) as pub:
        await pub.command(ev("m1", "member.upsert", T0, actor="api", memberId="mem-1", profile={"email": "taro@example.jp"}, name="Taro"))
        await pub.sdk(
            ev("b1", "boot", T0 + MIN, veilId="veil-1", platform="web", device={"browser": "chrome", "os": "mac"}, language="ja", country="JP"),
            ev("b2", "boot", T0 + 2 * MIN, veilId="veil-1", platform="web"),
            ev("c1", "contact", T0 + 3 * MIN, veilId="veil-1", mobileNumber="+81 090-1234-5678"),
            ev("l1", "login", T0 + 4 * MIN, veilId="veil-1", memberId="mem-1"),
        )
        await wait_for(lambda: applied(pool, 5), message="5 facts applied")
        changes = await wait_for(lambda: _user_changes(settings, 4), message="user-changed published")

    member = await find_user(pool, CH, "member", "mem-1")
    assert member is not None and member["type"] == "member"
    assert member["profile"] == {"email": "taro@example.jp", "mobileNumber": "+819012345678"}
    assert member["qualified"] == ["email"]  # C4: the typed mobile number is unqualified
    assert member["web"]["browser"] == "chrome" and member["language"] == "ja"
    assert member["sessionsCount"] == 1  # S1: two boots two minutes apart are one session
    lead_id = member["mergedUserIds"][0]
    assert await find_user(pool, CH, "id", lead_id) == {"id": lead_id, "mergedInto": member["id"]}  # U8

    by_user: dict[str, list[dict[str, Any]]] = {}
    for _key, value in changes:
        if value is not None:
            UserChanged.model_validate(value)  # every message matches the contract
            by_user.setdefault(value["userId"], []).append(value)
    lead_msgs = by_user[lead_id]
    assert [m["change"] for m in lead_msgs] == ["created", "merged"]  # never published while anonymous
    assert lead_msgs[0]["user"]["web"]["browser"] == "chrome"  # carries what it gathered
    assert lead_msgs[1]["mergedInto"] == member["id"] and lead_msgs[1]["user"] is None
    assert (f"{CH}:{lead_id}", None) in changes  # the tombstone follows
    member_msgs = by_user[member["id"]]
    assert [m["version"] for m in member_msgs] == list(range(1, len(member_msgs) + 1))
    assert member_msgs[-1]["causationId"] == "l1" and "mergedUserIds" in member_msgs[-1]["changedKeys"]


async def _user_changes(settings: Settings, at_least: int) -> list[tuple[str | None, Any]] | None:
    got = await read_topic(settings, Topics(settings.topic_prefix).user_changed)
    return got if len(got) >= at_least else None


async def test_dead_letters_carry_reason_and_consumption_goes_on(settings: Settings, pool: asyncpg.Pool) -> None:
    """CONTRACT: bad JSON, unknown type, ill-typed fields, a placeholder id (G1) and a
    bad member hash (H1) each go to the dead-letter topic with a code; nothing changes;
    the good fact after them is applied."""
    secret = "s3cret"
    await pool.execute("INSERT INTO channels (channel_id, member_hash_secret) VALUES ($1, $2)", CH, secret)
    good_hash = hmac.new(secret.encode(), b"mem-9", hashlib.sha256).hexdigest()
    topics = Topics(settings.topic_prefix)
    async with running_service(settings), Publisher(settings) as pub:
        await pub.send(topics.sdk_events, [b"{not json", b'{"type": "teleport", "eventId": "x", "channelId": "ch_e2e", "occurredAt": 1}'], key=CH)
        await pub.sdk(
            ev("bad-type", "boot", "yesterday", veilId="v", platform="web"),  # type: ignore[arg-type]
            ev("bad-id", "boot", T0, veilId="v-1", platform="web", memberId="undefined"),
            ev("bad-hash", "login", T0, veilId="v-1", memberId="mem-9", memberHash="0" * 64),
            ev("no-hash", "login", T0, veilId="v-1", memberId="mem-9"),
            ev("good", "login", T0 + 1, veilId="v-1", memberId="mem-9", memberHash=good_hash),
        )
        await wait_for(lambda: applied(pool, 7), message="7 records consumed")
        letters = await wait_for(lambda: _at_least(settings, topics.dead_letter, 6), message="6 dead letters")

    codes = sorted(DeadLetter.model_validate(v).error.code for _k, v in letters)
    assert codes == sorted(["bad_json", "unknown_type", "invalid_fields", "placeholder_identifier", "invalid_member_hash", "invalid_member_hash"])
    assert all(k == CH for k, _v in letters)  # keyed by the original key
    assert any(v["value"] == "{not json" for _k, v in letters)  # the original text, kept
    member = await find_user(pool, CH, "member", "mem-9")
    assert member is not None and member["memberId"] == "mem-9"
    assert await pool.fetchval("SELECT count(*) FROM users WHERE channel_id = $1", CH) == 1  # the rejected changed nothing


async def _at_least(settings: Settings, topic: str, n: int) -> list[tuple[str | None, Any]] | None:
    got = await read_topic(settings, topic)
    return got if len(got) >= n else None


async def test_event_id_applied_once_and_restart_resumes_from_stored_offsets(settings: Settings, pool: asyncpg.Pool) -> None:
    """CONTRACT idempotency: a second message with an applied eventId is ignored; a
    restarted service continues from the offsets stored in PostgreSQL (DESIGN Flow 2)."""
    delivered = ev("d1", "marketing.delivered", T0 + MIN, actor="system", userId="PLACEHOLDER", campaignId="cmp-1")
    async with running_service(settings), Publisher(settings) as pub:
        await pub.command(ev("m1", "member.upsert", T0, actor="api", memberId="mem-1", profile={}))
        await wait_for(lambda: applied(pool, 1))
        member = await find_user(pool, CH, "member", "mem-1")
        assert member is not None
        delivered["userId"] = member["id"]
        await pub.command(delivered, delivered)
        await wait_for(lambda: applied(pool, 3))
    async with running_service(settings), Publisher(settings) as pub:
        await pub.command(delivered, ev("d2", "marketing.delivered", T0 + 2 * MIN, actor="system", userId=member["id"], campaignId="cmp-2"))
        await wait_for(lambda: applied(pool, 5))
    after = await find_user(pool, CH, "member", "mem-1")
    assert after is not None and after["deliveredCampaigns"] == ["cmp-1", "cmp-2"]
    assert await pool.fetchval("SELECT count(*) FROM applied_events") == 3  # m1, d1, d2


async def test_t1_same_member_id_in_two_channels_is_two_users(settings: Settings, pool: asyncpg.Pool) -> None:
    async with running_service(settings), Publisher(settings) as pub:
        await pub.sdk(
            ev("a", "boot", T0, veilId="veil-x", platform="web", memberId="mem-1"),
            {**ev("b", "boot", T0, veilId="veil-x", platform="web", memberId="mem-1"), "channelId": "ch_other"},
        )
        await wait_for(lambda: applied(pool, 2))
    one = await find_user(pool, CH, "member", "mem-1")
    other = await find_user(pool, "ch_other", "member", "mem-1")
    assert one is not None and other is not None and one["id"] != other["id"]
    assert await find_user(pool, CH, "id", other["id"]) is None
