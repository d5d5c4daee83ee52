"""The relay's backlog gauge (`unifier_outbox_backlog`, docs/operations.md: the alert
UnifierOutboxBacklog) without recounting the whole outbox every round (docs/decisions.md,
"Issue 14, session 10": a count per 5,000 rows published cost a relay behind an import
~4 µs of PostgreSQL a row at a 100k backlog)."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import REGISTRY

from services.relay import relay as relay_mod
from services.relay.relay import Relay


class _Conn:
    """What the gauge asks PostgreSQL: the statements, and a backlog to answer with."""

    def __init__(self, backlog: int) -> None:
        self.backlog = backlog
        self.asked: list[str] = []

    async def fetchval(self, query: str, *args: Any) -> int:
        self.asked.append(query)
        return self.backlog


def _gauge() -> float | None:
    return REGISTRY.get_sample_value("unifier_outbox_backlog")


def _relay() -> Relay:
    r = Relay.__new__(Relay)  # the gauge's bookkeeping only: no producer, no pool
    r._backlog_counted_at = -relay_mod._BACKLOG_REFRESH_S
    return r


def test_a_backlog_within_one_fetch_is_the_rows_fetched_and_costs_no_count() -> None:
    async def run() -> None:
        r, conn = _relay(), _Conn(backlog=999_999)
        await r._count_backlog(conn, 42)  # type: ignore[arg-type]
        assert conn.asked == [] and _gauge() == 42

    asyncio.run(run())


def test_a_large_backlog_is_counted_at_most_once_per_refresh_and_again_after_it() -> None:
    """Rounds of full fetches: the first counts, the next ones within the refresh keep
    that count (no statement), one after the refresh counts again."""
    async def run() -> None:
        r, conn = _relay(), _Conn(backlog=120_000)
        batch = relay_mod._BATCH
        await r._count_backlog(conn, batch)  # type: ignore[arg-type]
        conn.backlog = 115_000
        for _ in range(5):
            await r._count_backlog(conn, batch)  # type: ignore[arg-type]
        assert len(conn.asked) == 1 and "sum(n)" in conn.asked[0] and _gauge() == 120_000  # messages, not rows
        r._backlog_counted_at -= relay_mod._BACKLOG_REFRESH_S  # the refresh has passed
        await r._count_backlog(conn, batch)  # type: ignore[arg-type]
        assert len(conn.asked) == 2 and _gauge() == 115_000
        await r._count_backlog(conn, 7)  # type: ignore[arg-type]  # drained: exact again
        assert len(conn.asked) == 2 and _gauge() == 7

    asyncio.run(run())
