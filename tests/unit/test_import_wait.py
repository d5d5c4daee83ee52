"""Issue 14 (import ≥ 15,000 rows/s): the importer's poll for its import's end is at most
0.1 s apart, so that an import is reported done at most 0.1 s after its last batch
commits (0.5 s apart cost a 100k-row import ~2 % of its rate), and polls no faster than
it did at first (20 ms)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from services.importer import run


def test_issue14_the_poll_for_the_end_is_at_most_a_tenth_of_a_second_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    imp = object.__new__(run.Import)
    imp.channel, imp.import_id, imp.finished_event = "web", "imp", "imp:finished:1"
    imp.progress = None
    imp.deadline = time.monotonic() + 60
    polls = 0
    sleeps: list[float] = []

    async def import_record(_pool: object, _channel: str, _import_id: str) -> dict[str, Any] | None:
        nonlocal polls
        polls += 1
        if polls < 40:  # applied after 39 polls: long enough to reach the cap
            return None
        return {"finished_event_id": "imp:finished:1", "created": 3, "updated": 0, "failed": 0}

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    imp.pool = None
    monkeypatch.setattr(run.import_log, "import_record", import_record)
    monkeypatch.setattr(run.asyncio, "sleep", sleep)
    result = asyncio.run(imp._wait())
    assert result.created == 3
    assert len(sleeps) == 39
    assert sleeps[0] == pytest.approx(0.02)
    assert max(sleeps) == pytest.approx(0.1)
    assert sleeps == sorted(sleeps)
