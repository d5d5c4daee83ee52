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
