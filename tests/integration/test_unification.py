"""Issue 3 end to end: the guides' unification stories through the real broker and
PostgreSQL — candidates, approval, the delayed-unification saga, cancellation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from services.runtime.config import Settings
from services.runtime.queries import find_user
from services.store.pool import create_pool
from tests.support.infra import wait_for
from tests.support.service import Publisher, running_service

pytestmark = pytest.mark.integration

CH = "ch_uni"
T0 = 1_746_316_800_000
HOUR = 3_600_000
DAY = 24 * HOUR
PHONE = "+819012345678"


def ev(event_id: str, type_: str, at: int, **fields: Any) -> dict[str, Any]:
    if "." in type_:
        fields.setdefault("actor", "staff-1")
    return {"eventId": event_id, "type": type_, "channelId": CH, "occurredAt": at, **fields}


@pytest_asyncio.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    assert settings.database_url
    p = await create_pool(settings.database_url, settings.db_schema)
    yield p
    await p.close()


async def applied(pool: asyncpg.Pool, n: int) -> bool:
    return (await pool.fetchval("SELECT coalesce(sum(next_offset), 0) FROM inbox_offsets")) >= n


async def test_u10_u5_line_chatter_given_a_phone_by_staff_and_approved_merges_at_once(settings: Settings, pool: asyncpg.Pool) -> None:
    async with running_service(settings), Publisher(settings) as pub:
        await pub.command(ev("m", "member.upsert", T0, memberId="mem-1", profile={"mobileNumber": PHONE}))
        await pub.sdk(ev("line", "chat", T0 + HOUR, veilId="line:U123", chatId="c1", medium="line", message={"messageId": "x", "text": "hi"}))
        await wait_for(lambda: applied(pool, 2))
        lead = await find_user(pool, CH, "veil", "line:U123")
        assert lead is not None and lead["type"] == "lead" and lead["unification"]["candidates"] == []  # U10
        await pub.command(ev("p", "profile.update", T0 + 2 * HOUR, userId=lead["id"], profile={"mobileNumber": "+81 090-1234-5678"}))
        await wait_for(lambda: applied(pool, 3))
        member = await find_user(pool, CH, "member", "mem-1")
        assert member is not None
        cand = await find_user(pool, CH, "id", lead["id"])
        assert cand is not None and cand["unification"]["candidates"] == [member["id"]]  # U5
        await pub.command(ev("a", "unification.approve", T0 + 3 * HOUR, sourceUserId=lead["id"], targetUserId=member["id"]))
        await wait_for(lambda: applied(pool, 4))
    assert await find_user(pool, CH, "id", lead["id"]) == {"id": lead["id"], "mergedInto": member["id"]}
    merged = await find_user(pool, CH, "veil", "line:U123")
    assert merged is not None and merged["id"] == member["id"]
    assert await pool.fetchval("SELECT user_id FROM activities WHERE event_id = 'line'") == member["id"]  # U4: the chat moved


async def test_u5_booted_lead_approved_merges_only_at_the_members_next_login(settings: Settings, pool: asyncpg.Pool) -> None:
    async with running_service(settings), Publisher(settings) as pub:
        await pub.command(ev("m", "member.upsert", T0, memberId="mem-1", profile={"email": "hana@example.jp"}))
        await pub.sdk(ev("b", "boot", T0 + HOUR, veilId="v-lead", platform="web"))
        await wait_for(lambda: applied(pool, 2))
        lead = await find_user(pool, CH, "veil", "v-lead")
        assert lead is not None
        await pub.command(ev("p", "profile.update", T0 + 2 * HOUR, userId=lead["id"], profile={"email": "Hana@Example.jp "}))
        await wait_for(lambda: applied(pool, 3))
        member = await find_user(pool, CH, "member", "mem-1")
        assert member is not None
        await pub.command(ev("a", "unification.approve", T0 + 3 * HOUR, sourceUserId=lead["id"], targetUserId=member["id"]))
        await wait_for(lambda: applied(pool, 4))
        waiting = await find_user(pool, CH, "id", lead["id"])
        assert waiting is not None and waiting["unification"]["pendingInto"] == member["id"]  # both readable
        await pub.sdk(ev("l", "boot", T0 + DAY, veilId="v-member", platform="web", memberId="mem-1"))
        await wait_for(lambda: applied(pool, 5))
    assert await find_user(pool, CH, "id", lead["id"]) == {"id": lead["id"], "mergedInto": member["id"]}
    record = await pool.fetchrow("SELECT target_id, causation_id FROM merges WHERE source_id = $1", lead["id"])
    assert tuple(record) == (member["id"], "l")  # G4: caused by the login


async def test_u6_pending_unification_cancelled_by_deleting_the_source(settings: Settings, pool: asyncpg.Pool) -> None:
    async with running_service(settings), Publisher(settings) as pub:
        await pub.command(ev("m", "member.upsert", T0, memberId="mem-1", profile={}))
        await pub.sdk(ev("b", "boot", T0 + HOUR, veilId="v-lead", platform="web"),
                      ev("c", "contact", T0 + HOUR, veilId="v-lead", email="x@example.jp"))
        await wait_for(lambda: applied(pool, 3))
        lead = await find_user(pool, CH, "veil", "v-lead")
        member = await find_user(pool, CH, "member", "mem-1")
        assert lead is not None and member is not None
        await pub.command(
            ev("a", "unification.approve", T0 + 2 * HOUR, sourceUserId=lead["id"], targetUserId=member["id"]),
            ev("d", "user.delete", T0 + 3 * HOUR, userId=lead["id"]),
        )
        await pub.sdk(ev("l", "login", T0 + DAY, veilId="v-member", memberId="mem-1"))
        await wait_for(lambda: applied(pool, 6))
    assert await find_user(pool, CH, "id", lead["id"]) is None  # deleted, not merged
    assert await pool.fetchval("SELECT count(*) FROM merges") == 0
