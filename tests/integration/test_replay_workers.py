"""A rebuild's worker processes (services/replay/shards.py) are started first thing, so
their interpreters start while the command checks the log and makes the new schema
(issue 14 item 6), and none outlives a rebuild that stops before handing out jobs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from contracts.topics import Topics
from services.platform.config import Settings
from services.replay import replay
from services.replay.log import LogShort
from services.replay.rebuild import Tally
from tests.integration.test_replay import side_schemas


async def test_workers_start_before_the_log_check_and_are_reaped_when_it_refuses(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps: list[str] = []
    procs: list[asyncio.subprocess.Process] = []
    spawn = replay.spawn

    async def spawned(workers: int) -> list[asyncio.subprocess.Process]:
        steps.append("spawn")
        procs.extend(await spawn(workers))
        return procs

    async def refuse(*_: Any) -> None:
        steps.append("check the log")
        raise LogShort("the log holds less than the live state applied")

    monkeypatch.setattr(replay, "spawn", spawned)
    monkeypatch.setattr(replay, "check_log_holds", refuse)
    assert settings.database_url is not None
    with pytest.raises(LogShort):
        await replay.rebuild(
            settings.database_url, "127.0.0.1:1", Topics(settings.topic_prefix), settings.db_schema,
            replay.Options(workers=3), Tally(out=None),
        )
    assert steps == ["spawn", "check the log"]
    assert len(procs) == 2 and all(p.returncode is not None for p in procs)  # reaped, none left waiting
    # The new schema, made while the log was checked, is dropped with the refusal.
    assert await side_schemas(settings.database_url, settings.db_schema) == []
