"""The pipelined projection in `unifier run` (real broker, PostgreSQL, relay): commits
that fail while the next batch sits prepared in memory change nothing in the outcome.
The reference is what a rebuild of the same log gives (test_faults.py)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from contracts.topics import Topics
from services.platform.config import Settings
from services.replay import workload
from tests.integration.test_faults import (
    Service,
    _outbox_empty,
    assert_every_record_applied_or_dead_lettered_once,
    assert_state_is_a_rebuild,
    assert_versions_have_no_gaps,
    service,
    services,  # noqa: F401 (fixture)
)
from tests.integration.test_replay import CHANNELS, configure_hashed_channels, publish_rounds
from tests.support.infra import wait_for
from tests.support.service import read_topic

pytestmark = pytest.mark.integration


async def test_commits_killed_under_a_pipelined_stream_end_in_the_state_of_a_rebuild(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, services: list[Service],  # noqa: F811
) -> None:
    """Crash safety, G3: every 9th statement writing users kills its own backend (as a
    PostgreSQL restart would) — mostly a pipelined batch's transaction, while the next
    batch was already applied in memory on its result. Each time everything in memory
    is dropped and both batches go by the serial path from the committed offsets; the
    state is a rebuild's, every record applied or dead-lettered once, no user-changed
    version missing."""
    await configure_hashed_channels(pool)
    await pool.execute("""
        CREATE SEQUENCE fault_count;
        CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF nextval('fault_count') % 9 = 0 THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF;
          RETURN NULL;
        END $$;
        CREATE TRIGGER fault AFTER INSERT OR UPDATE ON users FOR EACH STATEMENT EXECUTE FUNCTION fault();
    """)
    rounds = workload.mixed_rounds(3000, rounds=3, channels=CHANNELS, poison_every=97)
    svc = await service(settings, tmp_path, services, "run", UNIFIER_BATCH_MAX="150").start()
    await publish_rounds(settings, pool, rounds)
    await wait_for(lambda: _outbox_empty(pool), message="outbox relayed")
    assert await svc.stop() == 0, svc.text()[-3000:]
    await pool.execute("DROP TRIGGER fault ON users")

    assert await pool.fetchval("SELECT last_value FROM fault_count") >= 18  # the faults fired
    assert svc.says("pipelined batch of") and svc.says("not committed")  # a pipelined commit failed
    await assert_state_is_a_rebuild(settings)
    await assert_every_record_applied_or_dead_lettered_once(settings, pool)
    assert_versions_have_no_gaps(await read_topic(settings, Topics(settings.topic_prefix).user_changed))
