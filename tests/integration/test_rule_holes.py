"""Issue 11, item 3: the rule holes of the hostile-input review, end to end through the
real broker and PostgreSQL (docs/domain.md U6, U8, D1b; docs/decisions.md)."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import orjson
import pytest

from contracts.topics import Topics
from services.domain.ids import fact_user_id
from services.platform.config import Settings
from services.projection.records import MAX_AHEAD_MS
from services.replay.digest import state_digest
from services.retention.retention import RETENTION_MS, expired_users
from services.store.queries import find_user
from tests.integration.test_replay import replay, side_schemas
from tests.support.infra import wait_for
from tests.support.service import Publisher, read_topic, running_service

pytestmark = pytest.mark.integration

CH = "ch_holes"
T0 = 1_746_316_800_000
HOUR = 3_600_000
DAY = 24 * HOUR


def ev(event_id: str, type_: str, at: int, **fields: Any) -> dict[str, Any]:
    if "." in type_:
        fields.setdefault("actor", "staff-1")
    return {"eventId": event_id, "type": type_, "channelId": CH, "occurredAt": at, **fields}


async def applied(pool: asyncpg.Pool, n: int) -> bool:
    return (await pool.fetchval("SELECT coalesce(sum(next_offset), 0) FROM inbox_offsets")) >= n


async def dead_letters(settings: Settings) -> list[dict[str, Any]]:
    return [v for _, v in await read_topic(settings, Topics(settings.topic_prefix).dead_letter) if v is not None]


async def test_u6_pending_cancelled_when_source_becomes_member(settings: Settings, pool: asyncpg.Pool) -> None:
    """Lead L pending into member M (U5); L logs in as another member (it becomes that
    member, U2); M logs in. Before: `MergeRefused` escaped the core and the service
    stopped. Now the pending unification is gone with L's own login, and M's login
    merges nothing."""
    async with running_service(settings) as service, Publisher(settings) as pub:
        await pub.command(ev("m", "member.upsert", T0, memberId="mem-1", profile={"email": "hana@example.jp"}))
        await pub.sdk(ev("b", "boot", T0 + HOUR, veilId="v-lead", platform="web"))
        await wait_for(lambda: applied(pool, 2))
        lead = await find_user(pool, CH, "veil", "v-lead")
        member = await find_user(pool, CH, "member", "mem-1")
        assert lead is not None and member is not None
        await pub.command(
            ev("p", "profile.update", T0 + 2 * HOUR, userId=lead["id"], profile={"email": "hana@example.jp"}),
            ev("a", "unification.approve", T0 + 3 * HOUR, sourceUserId=lead["id"], targetUserId=member["id"]),
        )
        await wait_for(lambda: applied(pool, 4))
        pending = await find_user(pool, CH, "id", lead["id"])
        assert pending is not None and pending["unification"]["pendingInto"] == member["id"]

        await pub.sdk(ev("l2", "boot", T0 + 4 * HOUR, veilId="v-lead", platform="web", memberId="mem-2"))
        await pub.sdk(ev("l1", "login", T0 + DAY, veilId="v-member", memberId="mem-1"))
        await wait_for(lambda: applied(pool, 6))
        assert not service.done()  # the service is still running

    became = await find_user(pool, CH, "id", lead["id"])
    assert became is not None and became["type"] == "member" and became["memberId"] == "mem-2"
    assert became["unification"] == {"candidates": [], "pendingInto": None}
    target = await find_user(pool, CH, "member", "mem-1")
    assert target is not None and target["mergedUserIds"] == []
    assert await pool.fetchval("SELECT count(*) FROM merges") == 0


async def test_u8_delete_naming_a_merged_lead_is_rejected_and_the_survivor_stays(settings: Settings, pool: asyncpg.Pool) -> None:
    """`user.delete` naming a lead already merged into member M erased M before. Now it
    is dead-lettered with code `merged_user`, the reason naming M, and M is untouched."""
    lead_id = fact_user_id(CH, "lead")
    async with running_service(settings), Publisher(settings) as pub:
        await pub.command(
            ev("m", "member.upsert", T0, memberId="mem-1", profile={"email": "taro@example.jp"}),
            ev("lead", "lead.create", T0 + HOUR, profile={"email": "taro@example.jp"}),
        )
        await wait_for(lambda: applied(pool, 2))
        member = await find_user(pool, CH, "member", "mem-1")
        assert member is not None
        await pub.command(
            ev("a", "unification.approve", T0 + 2 * HOUR, sourceUserId=lead_id, targetUserId=member["id"]),
            ev("d", "user.delete", T0 + 3 * HOUR, userId=lead_id),
            ev("blk", "user.block", T0 + 3 * HOUR, userId=lead_id),
        )
        await wait_for(lambda: applied(pool, 5))
        letters = await wait_for(
            lambda: _with_code(settings, "merged_user", 2), message="two merged_user dead letters"
        )

    assert {letter["offset"] for letter in letters} == {3, 4}
    assert all(member["id"] in letter["error"]["message"] for letter in letters)
    assert await find_user(pool, CH, "id", lead_id) == {"id": lead_id, "mergedInto": member["id"]}
    survivor = await find_user(pool, CH, "member", "mem-1")
    assert survivor is not None and survivor["id"] == member["id"]
    assert survivor["blocked"] is False and survivor["mergedUserIds"] == [lead_id]


async def _with_code(settings: Settings, code: str, n: int) -> list[dict[str, Any]] | None:
    found = [letter for letter in await dead_letters(settings) if letter["error"]["code"] == code]
    return found if len(found) >= n else None


FAR = 4_102_444_800_000  # 2100-01-01


async def test_b4_a_far_future_time_is_bounded_deterministically_and_cannot_dodge_retention(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """A producer dates a contact fact in 2100, in `occurredAt` and in the record
    timestamp. Before: the lead's last contact was 2100, so the B4 sweep never found it
    and its values beat every later edit. Now the record time is bounded by the
    partition's clock (the earlier record's time + MAX_AHEAD_MS), the bound is stored
    with the offsets, and a rebuild bounds it alike (same digest)."""
    topics = Topics(settings.topic_prefix)
    async with running_service(settings), Publisher(settings) as pub:
        sent_at = int(time.time() * 1000)
        await pub.sdk(ev("b", "boot", T0, veilId="v-early", platform="web"))
        future = ev("far", "contact", FAR, veilId="v-far", email="far@example.jp")
        await (await pub.producer.send(topics.sdk_events, orjson.dumps(future), key=CH.encode(), timestamp_ms=FAR))
        await wait_for(lambda: applied(pool, 2))

    lead = await find_user(pool, CH, "veil", "v-far")
    assert lead is not None and lead["type"] == "lead"
    assert lead["createdAt"] < sent_at + MAX_AHEAD_MS + 60_000  # not 2100
    clock = await pool.fetchval("SELECT max(clock) FROM inbox_offsets WHERE topic = $1", topics.sdk_events)
    assert clock is not None and clock < sent_at + MAX_AHEAD_MS + 60_000
    # B4: two years and two days after the facts, the sweep finds the lead.
    expired = await expired_users(pool, sent_at + RETENTION_MS + 2 * MAX_AHEAD_MS)
    assert (CH, lead["id"]) in expired

    live = await state_digest(pool)
    try:
        assert await replay(settings, "--rebuild", "--drop-archive") == {"events": 2, "digest": live}
        assert await pool.fetchval("SELECT max(clock) FROM inbox_offsets WHERE topic = $1", topics.sdk_events) == clock
    finally:
        await _drop_side_schemas(settings)


async def test_event_ids_are_remembered_for_seven_days_of_event_time_and_the_table_stops_growing(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """A duplicate eventId within the window is skipped; the channel's facts eight days
    later forget it (its row is swept in that batch: the clock moved more than half a
    window), so `applied_events` holds a window, not the history; the same eventId
    sent after that is a new fact. A rebuild skips the same facts and keeps the same rows."""
    async with running_service(settings), Publisher(settings) as pub:
        await pub.sdk(
            ev("e1", "contact", T0, veilId="v1", email="first@example.jp"),
            ev("e1", "contact", T0 + DAY, veilId="v1", email="second@example.jp"),  # a duplicate: skipped
        )
        await wait_for(lambda: applied(pool, 2))
        assert (await find_user(pool, CH, "veil", "v1") or {})["profile"] == {"email": "first@example.jp"}
        await pub.sdk(ev("e2", "boot", T0 + 8 * DAY, veilId="v2", platform="web"))
        await wait_for(lambda: applied(pool, 3))
        rows = sorted(tuple(r) for r in await pool.fetch("SELECT event_id, at FROM applied_events"))
        assert rows == [("e2", T0 + 8 * DAY)]  # e1 forgotten: older than 7 days of event time
        await pub.sdk(ev("e1", "contact", T0 + 8 * DAY + 1, veilId="v1", email="third@example.jp"))
        await wait_for(lambda: applied(pool, 4))
    assert (await find_user(pool, CH, "veil", "v1") or {})["profile"] == {"email": "third@example.jp"}
    rows = sorted(tuple(r) for r in await pool.fetch("SELECT channel_id, event_id, at FROM applied_events"))

    live = await state_digest(pool)
    try:
        assert await replay(settings, "--rebuild", "--drop-archive") == {"events": 4, "digest": live}
        assert sorted(tuple(r) for r in await pool.fetch("SELECT channel_id, event_id, at FROM applied_events")) == rows
    finally:
        await _drop_side_schemas(settings)


async def test_an_expired_event_id_not_yet_swept_is_forgotten_and_a_rebuild_remembers_the_same_window(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """Issue 14, session 12 (helper "forget"): a channel's expired rows are swept only
    when its clock moves half a window past the last sweep (repository.
    raise_clocks). Until then the row is in the table but forgotten all the same
    (contract "Inbound envelope": the window is 7 days of event time): the eventId is
    a new fact, its row renewed. The remembered set — the rows within each channel's
    window, and the clocks — is what a rebuild writes; a sweep makes the tables equal."""
    from services.projection.window import WINDOW_MS
    from services.store import repository as repo

    async with running_service(settings), Publisher(settings) as pub:
        await pub.sdk(ev("e0", "boot", T0, veilId="v0", platform="web"),
                      ev("e1", "contact", T0, veilId="v1", email="first@example.jp"))
        await wait_for(lambda: applied(pool, 2))
        await pub.sdk(ev("e2", "boot", T0 + 6 * DAY, veilId="v2", platform="web"))  # swept: nothing expired yet
        await wait_for(lambda: applied(pool, 3))
        await pub.sdk(ev("e3", "boot", T0 + 7 * DAY + HOUR, veilId="v3", platform="web"))  # a day past: no sweep
        await wait_for(lambda: applied(pool, 4))
        rows = sorted(tuple(r) for r in await pool.fetch("SELECT event_id, at FROM applied_events"))
        assert rows == [("e0", T0), ("e1", T0), ("e2", T0 + 6 * DAY), ("e3", T0 + 7 * DAY + HOUR)]
        await pub.sdk(ev("e1", "contact", T0 + 7 * DAY + 2 * HOUR, veilId="v1", email="second@example.jp"))
        await wait_for(lambda: applied(pool, 5))
    assert (await find_user(pool, CH, "veil", "v1") or {})["profile"] == {"email": "second@example.jp"}  # not a duplicate
    remembered_sql = """SELECT a.channel_id, a.event_id, a.at FROM applied_events a
                          JOIN applied_clocks k ON k.channel_id = a.channel_id AND a.at >= k.clock - $1::bigint"""
    everything = sorted(tuple(r) for r in await pool.fetch("SELECT channel_id, event_id, at FROM applied_events"))
    assert everything == [(CH, "e0", T0), (CH, "e1", T0 + 7 * DAY + 2 * HOUR), (CH, "e2", T0 + 6 * DAY),
                          (CH, "e3", T0 + 7 * DAY + HOUR)]  # e1 renewed, e0 expired and not swept
    remembered = sorted(tuple(r) for r in await pool.fetch(remembered_sql, WINDOW_MS))
    clocks = sorted(tuple(r) for r in await pool.fetch("SELECT channel_id, clock FROM applied_clocks"))
    assert clocks == [(CH, T0 + 7 * DAY + 2 * HOUR)]
    assert remembered == [r for r in everything if r[1] != "e0"]
    # What the batches' sweeps do a channel at a time, all at once: e0 goes, nothing else.
    assert await repo.sweep_applied(pool, WINDOW_MS) == 1
    assert sorted(tuple(r) for r in await pool.fetch("SELECT channel_id, event_id, at FROM applied_events")) == remembered

    live = await state_digest(pool)
    try:
        assert await replay(settings, "--rebuild", "--drop-archive") == {"events": 5, "digest": live}
        assert sorted(tuple(r) for r in await pool.fetch("SELECT channel_id, event_id, at FROM applied_events")) == remembered
        assert sorted(tuple(r) for r in await pool.fetch("SELECT channel_id, clock FROM applied_clocks")) == clocks
    finally:
        await _drop_side_schemas(settings)


async def _drop_side_schemas(settings: Settings) -> None:
    assert settings.database_url is not None
    conn = await asyncpg.connect(settings.database_url)
    try:
        for schema in await side_schemas(settings.database_url, settings.db_schema):
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()
