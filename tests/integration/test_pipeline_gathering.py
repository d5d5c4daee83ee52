"""Group commit in `unifier run` (real broker and PostgreSQL, the pipelined loop;
services/projection/gathering.py, docs/decisions.md "Issue 14, session 21: a paced
import's batches"): records that arrive while a batch's write is in flight are held and
applied as one batch once it ended, instead of the first of them becoming a batch (a
transaction) of its own; the state is a rebuild's and every record is applied once.

The write is held up by a lock the test takes (as test_faults' SIGTERM test does); the
service says at DEBUG what it holds, so the test knows what was gathered before it lets
the write end. The loop's rule with fakes, a rebalance included:
tests/unit/test_consumer_gathering.py."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.platform.config import Settings
from tests.integration.test_faults import (
    Service,
    _waiting_on,
    assert_every_record_applied_or_dead_lettered_once,
    assert_state_is_a_rebuild,
    service,
    services,  # noqa: F401 (fixture)
)
from tests.integration.test_replay import applied_offsets
from tests.support.infra import wait_for
from tests.support.service import Publisher

pytestmark = pytest.mark.integration


def _boot(i: int) -> dict[str, Any]:
    return {
        "type": "boot", "eventId": f"gather-{i}", "channelId": f"ch_gather_{i}", "occurredAt": int(time.time() * 1000),
        "veilId": f"v-{i}", "platform": "web", "memberId": f"m-{i}",
    }


def _held(svc: Service, n: int) -> bool:
    return re.search(rf"(?<!\d){n} records held for the next batch", svc.text()) is not None


async def test_group_commit_records_arriving_while_a_batch_writes_are_one_batch_once_it_ends(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, services: list[Service],  # noqa: F811
) -> None:
    svc = await service(
        settings, tmp_path, services, "run", UNIFIER_PIPELINE="true", UNIFIER_LOG_LEVEL="DEBUG",
    ).start()
    blocker = await asyncpg.connect(settings.database_url)
    try:
        hold = blocker.transaction()
        await hold.start()
        # A batch's applied eventIds cannot be written while we hold this lock.
        await blocker.execute(f'LOCK TABLE "{settings.db_schema}".applied_events IN SHARE MODE')
        async with Publisher(settings) as pub:
            await pub.sdk(_boot(0))
            await wait_for(lambda: _waiting_on(blocker, settings.db_schema), timeout=60, message="batch 0's write held up")
            # One record, then twenty (other channels, other partitions) while it writes:
            # before, the first was fed at once as a batch of its own.
            await pub.sdk(_boot(1))
            await wait_for(lambda: _held(svc, 1), timeout=30, message="the lone record held, not fed")
            await pub.sdk(*(_boot(i) for i in range(2, 22)))
            await wait_for(lambda: _held(svc, 21), timeout=30, message="the twenty gathered with it")
        await hold.rollback()
    finally:
        await blocker.close()

    async def all_applied() -> bool:
        return await applied_offsets(pool) == 22

    await wait_for(all_applied, timeout=60, message="every record applied")
    assert await svc.stop() == 0, svc.text()[-3000:]

    assert re.findall(r"batch: (\d+) records", svc.text()) == ["1", "21"]  # two transactions, not three or more
    await assert_state_is_a_rebuild(settings)
    await assert_every_record_applied_or_dead_lettered_once(settings, pool)
