"""I12 and idempotency: an importer killed midway. Its lock lapses with its lease (no
heartbeat any more), a later import closes the dead attempt as abandoned, and importing
the same file again resumes the import without applying any row twice."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from services.importer.run import STALL_ENV
from services.platform.config import Settings
from services.store import import_log
from services.store.queries import find_user
from tests.support.imports import kill, start_unifier, unifier, write_csv
from tests.support.infra import wait_for
from tests.support.service import running_service

pytestmark = pytest.mark.integration

CH = "ch_crash"
ROWS = 300
STALL_AT = 120



async def test_i12_killed_importer_lock_lapses_and_the_same_file_resumes_without_applying_a_row_twice(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    # A list column appends (I8): a row applied twice would show its item twice.
    body = "".join(f'm-{i:03d},"[""bought-{i}""]",false,false\n' for i in range(ROWS))
    members = write_csv(tmp_path / "members.csv", "memberId,purchases,unsubscribeEmail,unsubscribeTexting\n" + body)
    other = write_csv(tmp_path / "other.csv", "memberId,name\nm-000,Renamed\n")
    args = ("--channel", CH, "--mode", "member", "--map", "purchases=profile.purchases:list", "--lease", "1.5")

    async with running_service(settings):
        importer = await start_unifier(settings, "import", str(members), *args, **{STALL_ENV: str(STALL_AT)})

        async def applied_part() -> str | None:
            for record in await import_log.list_imports(pool, CH):
                if record["created"] == STALL_AT:
                    return str(record["import_id"])
            return None

        killed_id = await wait_for(applied_part, timeout=60, message=f"{STALL_AT} rows applied")
        holder = await import_log.lock_holder(pool, CH)
        assert holder is not None and holder.import_id == killed_id
        refused = await unifier(settings, "import", str(other), "--channel", CH, "--mode", "member")
        assert refused.code == 2 and "another import is running" in refused.err  # its heartbeat still runs
        await kill(importer)

        async def lapsed() -> bool:
            h = await import_log.lock_holder(pool, CH)
            return h is None or h.expires_in_s <= 0

        await wait_for(lapsed, timeout=15, message="the killed importer's lease to lapse")

        ran = await unifier(settings, "import", str(other), "--channel", CH, "--mode", "member")
        assert ran.code == 0, ran.err
        assert ran.json()["updated"] == 1
        record = await import_log.import_record(pool, CH, killed_id)
        assert record is not None and record["status"] == "abandoned"  # closed by the next importer
        assert record["rows"] == STALL_AT and record["created"] == STALL_AT

        resumed = await unifier(settings, "import", str(members), *args)
        assert resumed.code == 0, resumed.err
        assert resumed.json() == {"importId": killed_id, "created": ROWS, "updated": 0, "failed": 0}

    record = await import_log.import_record(pool, CH, killed_id)
    assert record is not None and (record["status"], record["attempts"], record["rows"]) == ("completed", 2, ROWS)
    # Each row once by the import's row mark (issue 14 item 5), no eventId stored per row.
    assert await pool.fetchval(
        "SELECT last_row FROM imports WHERE channel_id = $1 AND import_id = $2", CH, killed_id
    ) == ROWS + 1  # row 1 is the header
    applied_rows = await pool.fetchval(
        "SELECT count(*) FROM applied_events WHERE channel_id = $1 AND event_id ~ $2", CH, f"^{killed_id}:[0-9]+$"
    )
    assert applied_rows == 0
    assert await pool.fetchval("SELECT count(*) FROM users WHERE channel_id = $1 AND type = 'member'", CH) == ROWS
    for i in (0, STALL_AT - 1, STALL_AT, ROWS - 1):
        user = await find_user(pool, CH, "member", f"m-{i:03d}")
        assert user is not None and user["profile"]["purchases"] == [f"bought-{i}"], user
    assert await import_log.lock_holder(pool, CH) is None


async def test_the_same_file_after_a_completed_import_is_a_new_import(settings: Settings, pool: asyncpg.Pool, tmp_path: Path) -> None:
    members = write_csv(tmp_path / "m.csv", 'memberId,purchases,unsubscribeEmail,unsubscribeTexting\nm-1,"[""a""]",false,false\n')
    args = ("--channel", CH, "--mode", "member", "--map", "purchases=profile.purchases:list")
    async with running_service(settings):
        first = await unifier(settings, "import", str(members), *args)
        second = await unifier(settings, "import", str(members), *args)
    assert first.code == second.code == 0, second.err
    assert first.json()["created"] == 1 and second.json() == {"importId": first.json()["importId"] + "-2", "created": 0, "updated": 1, "failed": 0}
    user = await find_user(pool, CH, "member", "m-1")
    assert user is not None and user["profile"]["purchases"] == ["a", "a"]  # staff imported it twice on purpose (I8)
