"""Store-level guarantees that need a real PostgreSQL."""

from __future__ import annotations

import pytest

from services.platform.config import Settings
from services.store import repository as repo
from services.store.pool import create_pool

pytestmark = pytest.mark.integration


async def test_offsets_restart_when_the_embedded_broker_brings_an_empty_log(settings: Settings) -> None:
    """`make run` restarted: tansu keeps its log in memory, so offsets stored against the
    previous log would skip the first facts of the new one."""
    assert settings.database_url
    pool = await create_pool(settings.database_url, settings.db_schema)
    try:
        assert await repo.adopt_log(pool, "log-1") is False  # first log: nothing to reset
        await pool.execute("INSERT INTO inbox_offsets VALUES ('t', 0, 45)")
        assert await repo.adopt_log(pool, "log-1") is False  # same log: offsets stand
        assert await pool.fetchval("SELECT next_offset FROM inbox_offsets") == 45
        assert await repo.adopt_log(pool, "log-2") is True
        assert await pool.fetchval("SELECT next_offset FROM inbox_offsets") == 0
    finally:
        await pool.close()


async def test_rejected_commands_of_an_older_schema_move_to_command_outcomes(settings: Settings) -> None:
    """Upgrading (docs/operations.md): the rejections kept before `command_outcomes`
    existed are kept there, stamped with their channel's clock, and the old table goes."""
    assert settings.database_url
    pool = await create_pool(settings.database_url, settings.db_schema)
    try:
        await pool.execute("""CREATE TABLE rejected_commands (channel_id text NOT NULL, event_id text NOT NULL,
                                  code text NOT NULL, message text NOT NULL, PRIMARY KEY (channel_id, event_id))""")
        await pool.execute("INSERT INTO rejected_commands VALUES ('ch', 'e1', 'unknown_user', 'no u_x')")
        await pool.execute("INSERT INTO applied_events VALUES ('ch', 'e0', 1000)")
    finally:
        await pool.close()
    pool = await create_pool(settings.database_url, settings.db_schema)  # migrates
    try:
        rows = [tuple(r) for r in await pool.fetch("SELECT channel_id, event_id, at, code, message FROM command_outcomes")]
        assert rows == [("ch", "e1", 1000, "unknown_user", "no u_x")]
        assert await pool.fetchval("SELECT to_regclass('rejected_commands')") is None
    finally:
        await pool.close()
