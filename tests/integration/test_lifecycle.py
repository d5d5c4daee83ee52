"""B2/B4 end to end: the retention sweep's decisions travel as facts; a deleted user's
chat messages remain without the name they were written under."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.topics import Topics
from services.runtime.config import Settings
from services.runtime.queries import find_user
from services.saga.retention import sweep
from services.store.pool import create_pool
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
