"""Issue 14 item 5: an import does not hold up the other channels of its partition.

A channel's facts are applied in the canonical order of their partition (docs/design.md,
Flow 5), so a fact of another channel published during an import is applied after
every import row published before it. The importer publishes at the service's pace, a
fraction of a second ahead (services/importer/window.py): such a fact is applied while
the import still runs, not after the whole file. With `UNIFIER_IMPORT_LEAD_S=0` (the
whole file at once, as before) this test fails: the visitor waits for the last row."""

from __future__ import annotations

import time
from pathlib import Path

import asyncpg
import pytest
from aiokafka.partitioner import DefaultPartitioner

from services.platform.config import Settings
from services.store import import_log
from services.store.queries import find_user
from tests.support.imports import start_unifier, unifier, write_csv
from tests.support.infra import wait_for
from tests.support.service import Publisher, running_service

pytestmark = pytest.mark.integration

CH = "ch_pacing"
ROWS = 6_000


def _same_partition(channel: str, partitions: int) -> str:
    every = list(range(partitions))
    target = DefaultPartitioner()(channel.encode(), every, every)
    return next(
        name for i in range(10_000)
        if DefaultPartitioner()((name := f"ch_neighbour_{i}").encode(), every, every) == target
    )


async def _applied(pool: asyncpg.Pool) -> int:
    for record in await import_log.list_imports(pool, CH):
        return int(record["created"] + record["updated"] + record["failed"])
    return 0


async def test_issue14_5_a_fact_of_another_channel_of_the_partition_is_applied_while_an_import_runs(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    body = "".join(f"m-{i:05d},false,false\n" for i in range(ROWS))
    members = write_csv(tmp_path / "members.csv", "memberId,unsubscribeEmail,unsubscribeTexting\n" + body)
    neighbour = _same_partition(CH, settings.partitions)

    async with running_service(settings), Publisher(settings) as pub:
        importer = await start_unifier(settings, "import", str(members), "--channel", CH, "--mode", "member")

        async def started() -> bool:
            return await _applied(pool) > 0

        await wait_for(started, timeout=60, message="the service applying the import's rows")
        await pub.sdk({
            "type": "boot", "eventId": "neighbour-1", "channelId": neighbour, "occurredAt": int(time.time() * 1000),
            "veilId": "v-neighbour", "platform": "web", "memberId": "m-neighbour",
        })

        async def neighbour_applied() -> int | None:
            if await find_user(pool, neighbour, "member", "m-neighbour") is None:
                return None
            return await _applied(pool)  # at least what was applied with the visitor

        applied_before = await wait_for(neighbour_applied, timeout=120, message="the other channel's visitor")
        out, err = await importer.communicate()
        assert importer.returncode == 0, err.decode()

    # The visitor did not wait for the whole file.
    assert applied_before < ROWS, f"the other channel's fact was applied only after all {ROWS} rows"


async def test_issue14_5_with_no_service_the_paced_importer_publishes_everything_at_its_timeout_and_exits_3(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """Pacing waits for the service; without one, at `--timeout` the importer publishes
    the rows it held back and exits 3 as before (docs/import.md), so the service applies
    the whole import when it runs."""
    rows = 1_500  # more than the smallest window (500): most of the file is held back at first
    body = "".join(f"m-{i:05d},false,false\n" for i in range(rows))
    members = write_csv(tmp_path / "members.csv", "memberId,unsubscribeEmail,unsubscribeTexting\n" + body)

    late = await unifier(settings, "import", str(members), "--channel", CH, "--mode", "member", "--timeout", "3")
    assert late.code == 3, late.err

    async def completed() -> dict[str, object] | None:
        for record in await import_log.list_imports(pool, CH):
            if record["status"] == "completed":
                return dict(record)
        return None

    async with running_service(settings):
        record = await wait_for(completed, timeout=120, message="the import applied once the service runs")
    assert record["rows"] == rows and record["created"] == rows
