"""The pipeline's ordering (services/projection/pipeline.py), with the database left out:
batch N+1 is prepared while N's transaction is open, N+1's transaction starts only
after N's ended, and when N's fails, N and N+1 go by the serial path in order with the
resident copy dropped (nothing prepared on N's in-memory result survives)."""

from __future__ import annotations

import asyncio
from typing import Any

from contracts.topics import Topics
from services.projection.batch import BatchResult, Effects, Parsed
from services.projection.pipeline import Pipeline, Prepared, Written
from services.projection.records import Record
from services.projection.resident import ResidentUsers
from tests.support.infra import wait_for

TOPICS = Topics("t")


def _batch(n: int) -> list[Record]:
    return [Record(TOPICS.sdk_events, 0, n, 1_000 + n, b"ch", b"{}")]


class Traced(Pipeline):
    """A pipeline whose preparation and transaction only record when they run; each
    transaction stays open until the test lets it end (or fail)."""

    def __init__(self, failing: set[int] | None = None) -> None:
        super().__init__(None, TOPICS, ResidentUsers(10), self._serial, self._done)  # type: ignore[arg-type]
        self.trace: list[tuple[str, int]] = []
        self.failing = failing or set()
        self.release: dict[int, asyncio.Event] = {}
        self.marks: dict[tuple[str, int], asyncio.Event] = {}

    def mark(self, what: str, n: int) -> None:
        self.trace.append((what, n))
        self.marks.setdefault((what, n), asyncio.Event()).set()

    async def reached(self, what: str, n: int) -> None:
        await self.marks.setdefault((what, n), asyncio.Event()).wait()

    async def _prepare(self, records: list[Record], parsed: list[Parsed], started: float, generation: int) -> Prepared:
        n = records[0].offset
        self.mark("prepare", n)
        await asyncio.sleep(0)  # a read: the write in flight runs meanwhile
        return Prepared(records=records, started=started, generation=generation, result=BatchResult(),
                        channels=[], observed={}, users=b"", updated=0, identities=[], fx=Effects(),
                        stored_applied=frozenset(), stamp=[], ends={}, clocks={}, changed=[])

    async def _write(self, p: Prepared) -> Written:
        n = p.records[0].offset
        self.mark("begin", n)
        gate = self.release.setdefault(n, asyncio.Event())
        await gate.wait()
        if n in self.failing:
            self.mark("rollback", n)
            raise RuntimeError("injected")
        self.mark("commit", n)
        return Written({}, 0.0)

    async def _serial(self, records: list[Record]) -> BatchResult:
        self.mark("serial", records[0].offset)
        return BatchResult()

    def _done(self, records: list[Record], _result: BatchResult, _elapsed: float) -> None:
        self.mark("done", records[0].offset)


async def _let_end(pipe: Traced, n: int) -> None:
    """Let batch n's transaction end once it began (it begins inside a `feed`)."""
    await pipe.reached("begin", n)
    pipe.release.setdefault(n, asyncio.Event()).set()


async def test_the_next_batch_is_prepared_while_the_one_before_is_open_and_begins_after_it_committed() -> None:
    pipe = Traced()
    await pipe.feed(_batch(1))
    feeding = asyncio.ensure_future(pipe.feed(_batch(2)))
    await pipe.reached("prepare", 2)
    assert ("commit", 1) not in pipe.trace  # prepared while 1's transaction was open
    await _let_end(pipe, 1)
    await feeding
    await _let_end(pipe, 2)
    await pipe.drain()
    assert pipe.trace == [
        ("prepare", 1), ("begin", 1), ("prepare", 2), ("commit", 1), ("done", 1), ("begin", 2), ("commit", 2), ("done", 2),
    ]
    assert pipe.pipelined == 2 and pipe.redone == 0


async def test_a_failed_transaction_sends_it_and_the_batch_prepared_on_it_to_the_serial_path_in_order() -> None:
    pipe = Traced(failing={2})
    resident = pipe.resident
    for n in (1, 2, 3):
        feeding = asyncio.ensure_future(pipe.feed(_batch(n)))
        if n > 1:
            await pipe.reached("prepare", n)  # prepared on n - 1's result, which then ends
            await _let_end(pipe, n - 1)
        await feeding
    await pipe.drain()
    events: list[tuple[str, Any]] = pipe.trace
    # 2 rolled back after 3 was prepared on it: both applied serially, 2 first; 3 never began.
    assert events.index(("prepare", 3)) < events.index(("rollback", 2)) < events.index(("serial", 2)) < events.index(("serial", 3))
    assert ("begin", 3) not in events and ("done", 2) not in events and ("done", 3) not in events
    assert resident.drops >= 1 and pipe.redone == 2 and pipe.pipelined == 1


async def test_a_drop_of_the_resident_copy_while_a_batch_is_prepared_voids_it() -> None:
    """A rebalance drops the resident copy (consumer._SeekToStored) while batch 2 is
    prepared on it: 1 commits (its arguments were built before), 2 goes serially."""
    pipe = Traced()
    await pipe.feed(_batch(1))
    feeding = asyncio.ensure_future(pipe.feed(_batch(2)))
    await pipe.reached("prepare", 2)
    pipe.resident.drop()
    await _let_end(pipe, 1)
    await feeding
    await pipe.drain()
    assert pipe.trace[-3:] == [("commit", 1), ("done", 1), ("serial", 2)]
    assert ("begin", 2) not in pipe.trace


async def test_a_stop_while_a_batch_is_in_flight_finishes_it_and_begins_no_other() -> None:
    """SIGTERM (consumer.run): the batch in flight commits; the one prepared meanwhile
    does not begin (its offsets are not stored: it is read again at the next start)."""
    pipe = Traced()
    stop = asyncio.Event()
    pipe.stopping = stop.is_set
    await pipe.feed(_batch(1))
    feeding = asyncio.ensure_future(pipe.feed(_batch(2)))
    await pipe.reached("prepare", 2)
    stop.set()
    await _let_end(pipe, 1)
    await feeding
    await pipe.drain()
    assert pipe.trace == [("prepare", 1), ("begin", 1), ("prepare", 2), ("commit", 1), ("done", 1)]
    assert pipe.resident.drops == 1  # what 2 changed in memory is gone with it


async def test_after_a_drop_while_a_batch_is_in_flight_the_next_is_prepared_only_once_it_committed() -> None:
    """The copy dropped (a rebalance) after batch 1 was prepared no longer holds what 1
    changed; the store shows it only after 1's commit: 2 is prepared after that, not
    alongside (else 2 would read 1's users as they were before it)."""
    pipe = Traced()
    await pipe.feed(_batch(1))
    pipe.resident.drop()
    feeding = asyncio.ensure_future(pipe.feed(_batch(2)))
    await _let_end(pipe, 1)
    await feeding
    await _let_end(pipe, 2)
    await pipe.drain()
    assert pipe.trace == [
        ("prepare", 1), ("begin", 1), ("commit", 1), ("done", 1), ("prepare", 2), ("begin", 2), ("commit", 2), ("done", 2),
    ]


async def test_the_next_write_begins_when_the_one_before_commits_before_its_outcome_is_taken() -> None:
    """Issue 14, session 23: batch 2's write is queued behind 1's (`_write_after`) and
    begins the moment 1 commits, before `drain` takes 1's outcome (its bookkeeping, the
    `done` callback): the loop does not stand between two transactions."""
    pipe = Traced()
    await pipe.feed(_batch(1))
    feeding = asyncio.ensure_future(pipe.feed(_batch(2)))
    await pipe.reached("prepare", 2)
    # 2 prepared and queued behind 1; its feed took 1 to wait on its outcome (`drain`).
    await wait_for(lambda: pipe._inflight is None, timeout=5, interval=0, message="feed(2) waiting on batch 1")
    await _let_end(pipe, 1)
    await feeding
    await _let_end(pipe, 2)
    await pipe.drain()
    assert pipe.trace == [
        ("prepare", 1), ("begin", 1), ("prepare", 2), ("commit", 1), ("begin", 2), ("done", 1), ("commit", 2), ("done", 2),
    ]
    assert pipe.pipelined == 2 and pipe.redone == 0
