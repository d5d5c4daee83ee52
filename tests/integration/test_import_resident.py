"""The users an import writes are not kept resident after its batch (issue 14 item 5:
memory flat in the file size, other channels' users not pushed out), and the state is
the one a projection that keeps them reaches."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import asyncpg
import orjson
import pytest_asyncio

from contracts.topics import Topics
from services.platform.config import Settings
from services.projection.batch import apply_batch
from services.projection.records import Record
from services.projection.resident import ResidentUsers
from services.replay.digest import state_digest
from services.store.pool import create_pool
from tests.support.infra import drop_schema

TOPICS = Topics("t")
IMP_CH, OTHER_CH = "ch_imp", "ch_other"
T0 = 1_767_225_600_000
COLUMNS = [{"column": c, "key": c} for c in ("memberId", "unsubscribeEmail", "unsubscribeTexting")]


@pytest_asyncio.fixture
async def pools(settings: Settings) -> AsyncIterator[list[asyncpg.Pool]]:
    assert settings.database_url is not None
    names = [f"{settings.db_schema}_{k}" for k in ("kept", "forgot")]
    made = [await create_pool(settings.database_url, n) for n in names]
    yield made
    for p in made:
        await p.close()
    for n in names:
        await drop_schema(settings.database_url, n)


class Log:
    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}

    def record(self, topic: str, channel: str, body: dict[str, object]) -> Record:
        offset = self.offsets.get(topic, 0)
        self.offsets[topic] = offset + 1
        value = orjson.dumps({"channelId": channel, "occurredAt": T0 + offset, **body})
        return Record(topic, 0, offset, T0 + offset, channel.encode(), value)

    def rows(self, first: int, last: int, member: str = "m") -> list[Record]:
        return [
            self.record(TOPICS.import_rows, IMP_CH, {
                "eventId": f"imp:{n}", "type": "import.row", "importId": "imp", "rowNumber": n,
                "cells": {"memberId": f"{member}{n}", "unsubscribeEmail": "false", "unsubscribeTexting": "true"},
            })
            for n in range(first, last + 1)
        ]

    def boot(self, channel: str, n: int) -> Record:
        return self.record(TOPICS.sdk_events, channel, {
            "eventId": f"boot-{channel}-{n}", "type": "boot", "veilId": f"v{n}", "platform": "web", "memberId": f"m{n}",
        })


def _batches() -> list[list[Record]]:
    log = Log()
    started = log.record(TOPICS.import_rows, IMP_CH, {
        "eventId": "imp:started:1", "type": "import.started", "importId": "imp", "mode": "member", "key": "memberId",
        "blank": "keep", "actor": "staff", "fileName": "m.csv", "columns": COLUMNS,
    })
    return [
        [log.boot(OTHER_CH, 1), log.boot(OTHER_CH, 2)],
        [started, *log.rows(2, 40)],  # import facts only in the import's channel
        [*log.rows(41, 60), log.boot(OTHER_CH, 3)],  # another channel beside it
        [log.boot(IMP_CH, 5), *log.rows(61, 70)],  # a boot in the import's channel: its users stay
        log.rows(71, 80),
        [log.boot(IMP_CH, 75), log.boot(IMP_CH, 7)],  # members the import wrote, found again in the store
    ]


class Keeping:
    """The projection before: keeps every user it wrote (up to its budget). The real
    ResidentUsers whose commits forget no one, wrapped rather than subclassed: compiled
    (services/compiled_core.py) it is a native class, which no Python class can extend."""

    def __init__(self, budget: int) -> None:
        self.inner = ResidentUsers(budget)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def committed(self, tokens: dict[str, int], forget: Iterable[str] = ()) -> None:
        self.inner.committed(tokens)


async def test_users_an_import_wrote_are_not_kept_resident_and_the_state_is_the_same(pools: list[asyncpg.Pool]) -> None:
    kept_pool, forgot_pool = pools
    kept, forgot = Keeping(10**6), ResidentUsers(10**6)
    held_after = []
    for records in _batches():
        await apply_batch(kept_pool, TOPICS, records, now_ms=0, outbox=False, resident=kept)  # type: ignore[arg-type]
        await apply_batch(forgot_pool, TOPICS, records, now_ms=0, outbox=False, resident=forgot)
        held_after.append(sum(u.channel_id == IMP_CH for u in forgot.directory.users()))
    # Import facts alone in their channel: nothing of it kept; a batch with a boot in the
    # channel keeps its users (that boot's and the import's alike).
    assert held_after[1] == held_after[2] == 0 and held_after[3] == 11
    assert OTHER_CH in {u.channel_id for u in forgot.directory.users()}  # other channels' users stay
    assert sum(u.channel_id == IMP_CH for u in kept.directory.users()) == 79  # m2…m80
    async with kept_pool.acquire() as a, forgot_pool.acquire() as b:
        assert await state_digest(a) == await state_digest(b)
