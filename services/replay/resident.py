"""The rebuild's applier: the users of the channels it rebuilds stay in memory.

The live projection shares its state with other instances, so every batch loads the
users it touches from PostgreSQL, fenced, and writes them back. A rebuild fills a fresh
schema that nobody else writes: the users it has applied are all the users there are.
So it keeps them in one `Directory` for the whole log, keeps the applied eventIds
itself, and writes each user once, at the end, by COPY (`store/bulk.py`) — a visitor
who booted a thousand times is serialised once. What grows with the log rather than
with the users (chats and events, merges) is written every `flush_every` facts; the
applied eventIds still within their window (projection/window.py) at the end. Same
core (`run_facts`) and the same rows as the live projection: the state does not depend on where the writes fall (tests/integration/test_resident.py)
and equals the live service's (tests/integration/test_replay.py).

Memory grows with the users of the rebuilt channels (docs/operations.md, "Replay"):
about 5 KB per user. A build past its `memory_budget` stops with `OverBudget`, and the
rebuild redoes the log batch by batch as the live service applies it, in memory bounded
by the batch (`rebuild._batch_by_batch`): slower, never out of memory.
"""

from __future__ import annotations

import asyncio
import gc
import os
from dataclasses import replace
from operator import attrgetter

import asyncpg

from contracts.topics import Topics
from services.domain.core import Activity
from services.domain.directory import Directory, identities
from services.domain.mu import MuBudget
from services.domain.unification import MergeRecord
from services.projection.batch import (
    BatchResult,
    Effects,
    load_grades,
    parse_records,
    run_facts,
)
from services.projection.facts import facts_of
from services.projection.records import Record
from services.projection.window import AppliedWindow
from services.store import bulk, import_log
from services.store import lookups as lookup_store
from services.store import outcomes as command_outcomes
from services.store import repository as repo
from services.store.repository import survivor

from .procs import phase

DEFAULT_FLUSH_EVERY = 50_000

FINISH_CONNECTIONS = 4
"""`Resident.finish` writes on up to this many connections at once (its pool's size:
with fewer, the parts wait for one another)."""


HELD: list[Resident] = []
"""The users of shard 0 (`shards._here`), applied in the process that runs the rebuild,
kept until it ends: freeing a directory object by object cost ~0.18 s of CPU for
36,000 users (issue 14, session 14), on the rebuild's path before the switch, and the
`unifier replay` command ends without freeing them (`cli._replay`, as a worker does).
Emptied when the build failed (the fallback builds batch by batch)."""


class OverBudget(RuntimeError):
    """The process holding the users outgrew its memory budget."""


def resident_bytes() -> int | None:
    """This process's resident memory (Linux; None elsewhere: no budget is enforced)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def default_budget() -> int | None:
    """Three quarters of the memory available when the rebuild starts (the rest is left
    to PostgreSQL, the broker and the live service on the same machine)."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024 * 3 // 4
    except (OSError, ValueError, IndexError):
        pass
    return None


class Resident:
    """`await r.apply(chunk)` for each canonically ordered chunk, then `await r.finish()`."""

    def __init__(
        self, pool: asyncpg.Pool, topics: Topics, *, flush_every: int = DEFAULT_FLUSH_EVERY,
        memory_budget: int | None = None,
    ) -> None:
        self.pool = pool
        self.memory_budget = memory_budget  # bytes of this process; None: unbounded
        self.topics = topics
        self.flush_every = flush_every
        self.directory = Directory()
        self.seen = AppliedWindow()  # the eventIds applied, within the window (window.py)
        self.channels: set[str] = set()  # of every fact read (a sharded build checks them)
        self._pending = Effects()
        self._mu: dict[str, MuBudget] = {}  # I17: each MU-limited channel's count, kept current by the core
        self.outcomes = HeldOutcomes()  # command_outcomes, written once by `finish`
        # The user ids of the activities written so far (every row's `user_id` is one):
        # the only ones a later merge may have to re-point in the table (`_save_merges`).
        self._written: set[str] = set()
        self._writing: asyncio.Future[None] | None = None  # the last write of pending effects, beside the build

    async def apply(self, records: list[Record]) -> BatchResult:
        parsed = parse_records(self.topics, records)
        facts, channels = facts_of(parsed)
        self.channels |= channels
        result = BatchResult()
        async with self.pool.acquire() as conn:
            settings = await repo.load_channels(conn, channels)
            await load_grades(conn, self.directory, facts)  # none stored yet: marks the channels known
            # CSV import (I12-I17): definitions written by earlier chunks; MU counts
            # from the directory, which holds every user (none is in the store yet).
            imports = await import_log.prepare(conn, facts, settings, self.directory, complete=True, mu_kept=self._mu)
            fx = run_facts(self.directory, parsed, settings, self.seen, self.topics, result, outbox=False, failed_at=0)
            self._pending.extend(fx)
            if imports is not None:
                async with conn.transaction():
                    await import_log.save(conn, imports)
        if len(self._pending.applied) >= self.flush_every:
            # Written beside the next chunks, on a connection of its own: the core goes
            # on while the server takes the rows in (0.2–0.4 s a write of 50,000 facts
            # that the build waited for, issue 14 session 15). Nothing the build reads
            # is written there (activities, merges, erasures, grades of channels already
            # loaded, lookups); one write at a time, in order: a write re-points the
            # activities of those before it (U4).
            await self._wait_written()
            self._writing = asyncio.ensure_future(self._write_apart(self._take_pending()))
        # Users are written at the end from the directory, not from `changed`.
        self.directory.settle()
        # The users held here are long-lived and (nearly) free of reference cycles, yet
        # every full collection walks all of them: with a large heap the cyclic GC took
        # ~40 % of a rebuild's CPU (measured, docs/decisions.md). Frozen objects are
        # still freed by reference counting; `finish` unfreezes them.
        gc.freeze()
        if self.memory_budget is not None and (held := resident_bytes() or 0) > self.memory_budget:
            raise OverBudget(
                f"{held >> 20} MiB held, over the budget of {self.memory_budget >> 20} MiB (--memory-mb)"
            )
        return result

    async def finish(self) -> None:
        """Write what is pending and every user with its identities: four parts that
        touch different tables (the pending effects never read or write `users`,
        `identities`, `applied_events` or `command_outcomes`: activities, merges,
        grades, lookups), each in its own transaction on its own connection, at once.
        One after the other on one connection, the server's COPYs and the rows made here
        took turns; at once, the rows of one are made while the server takes in
        another's (issue 14, sessions 14 and 15). The schema is the build's own and is
        never switched to before the build ends: a part that fails fails the build (its
        fallback empties every table first), the others' commits change nothing."""
        # In id order: the rows land in the heap in the order the digest reads them
        # (by the primary key, replay/digest.py), which then reads pages in turn rather
        # than one page per user (issue 14, session 12).
        users = sorted(self.directory.users(), key=_by_id)
        fx = self._take_pending()  # its outcomes join those held, written below
        # The eventIds the live projection would still hold: the window of each channel.
        self.seen.forget_expired()

        async def pending() -> None:
            await self._wait_written()
            async with self.pool.acquire() as conn:
                await self._write_effects(conn, fx)
                phase("finish: pending written")

        async def applied() -> None:
            async with self.pool.acquire() as conn, conn.transaction():
                await bulk.copy_applied(conn, [(c, e, t) for (c, e), t in self.seen.at.items()], self.seen.clocks)
                await self.outcomes.copy(conn)
                phase("finish: applied, outcomes written")

        async def user_rows() -> None:
            async with self.pool.acquire() as conn, conn.transaction():
                await bulk.copy_users(conn, users)
                phase("finish: users written")

        async def identity_rows() -> None:
            # The directory's index holds every user's identities as of the last chunk
            # (settled): no need to derive them again from each user. The rows go in the
            # primary key's order (channel, kind, value, user; identities_one_owner's is
            # its prefix): each entry of the two unique indexes then lands at the right
            # end of its btree instead of anywhere in it. 65,000 rows: the server's CPU
            # 0.25 → 0.14 s, the COPY's wall 0.52 → 0.30 s, for ~0.05 s of sorting here
            # (bench/replay_identity_order.py; issue 14, session 15).
            known = self.directory.loaded_identities
            rows = sorted([(u.channel_id, kind, value, u.id, q)
                           for u in users if (ids := known(u.id) or identities(u)) for kind, value, q in ids])
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.copy_records_to_table("identities", records=rows, columns=_IDENTITY_COLUMNS)
                phase("finish: identities written")

        # Every part runs to its end before a failure is raised: none is left writing
        # while the caller empties the schema or closes the pool.
        done = await asyncio.gather(pending(), applied(), user_rows(), identity_rows(), return_exceptions=True)
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
        gc.unfreeze()

    async def abandon(self) -> None:
        """The build failed: wait for a write still running beside it (its outcome no
        longer matters), so that nothing writes while the caller empties the schema or
        closes the pool."""
        task, self._writing = self._writing, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def _wait_written(self) -> None:
        """Wait for the write running beside the build; raise its failure (the build's)."""
        task, self._writing = self._writing, None
        if task is not None:
            await task

    async def _write_apart(self, fx: Effects) -> None:
        async with self.pool.acquire() as conn:
            await self._write_effects(conn, fx)

    def _take_pending(self) -> Effects:
        """The effects pending since the last write; their command outcomes join those
        held (no one waits on a rebuild's commands: nothing to announce)."""
        fx, self._pending = self._pending, Effects()
        self.seen.forget_expired()  # memory bounded by the window, not the log
        self.outcomes.save(fx.outcomes)
        return fx

    async def _write_effects(self, conn: asyncpg.Connection, fx: Effects) -> None:
        async with conn.transaction():
            acts = _repointed(fx.activities, fx.merges)
            await bulk.copy_activities(conn, acts)
            await _save_merges(conn, fx.merges, self._written)  # re-points chats written by earlier writes (U4)
            self._written.update([a.user_id for a in acts])
            await repo.erase_personal_data(conn, fx.erased)
            await repo.save_grade_changes(conn, fx.grades)
            await lookup_store.save_changes(conn, fx.lookups)
            await lookup_store.erase(conn, fx.erased)


_IDENTITY_COLUMNS = ("channel_id", "kind", "value", "user_id", "qualified")  # bulk.copy_identities' rows
_MERGE_COLUMNS = ("channel_id", "source_id", "target_id", "causation_id", "occurred_at", "contested")


async def _save_merges(conn: asyncpg.Connection, merges: list[MergeRecord], written: set[str]) -> None:
    """`repository.save_merges` for a build: record the merges (G4), by COPY, and
    re-point to each source's survivor (U4) the activities already in the table, which
    only a user in `written` (the user ids of every activity written so far) can have.
    `save_merges` matched every merge's source against the whole table, at every write:
    a sort of all the activities written so far that found nothing to move nearly every
    time (0–5 rows of ~50,000, 80–110 ms of the server's time at a 200,000-event
    build's last write, measured, issue 14 session 15): a build's activities are held
    until the next write, and `_repointed` re-points those before they are written.
    The same rows move, to the same users; `written` gains the survivors."""
    if not merges:
        return
    await conn.copy_records_to_table(
        "merges", columns=_MERGE_COLUMNS,
        records=[(m.channel_id, m.source_id, m.target_id, m.causation_id, m.occurred_at, m.to_json()["contested"])
                 for m in merges],
    )
    into = {m.source_id: m.target_id for m in merges}
    moved = [s for s in into if s in written]
    if moved:
        # One UPDATE matches each row once: with A merged into B and B into C in the same
        # write, A's chats go to C directly, as across two writes (as save_merges does).
        targets = [survivor(into, s) for s in moved]
        await conn.execute(
            """UPDATE activities a SET user_id = x.t FROM unnest($1::text[], $2::text[]) AS x(s, t)
                WHERE a.user_id = x.s""",
            moved, targets,
        )
        written.update(targets)


_by_id = attrgetter("id")


def _repointed(activities: list[Activity], merges: list[MergeRecord]) -> list[Activity]:
    """U4 for the chats and events not written yet: each one of a merged source goes to
    its survivor, as `save_merges` would re-point it right after the COPY. Done here,
    the rows are written once instead of written and then updated (a new row version
    and index entries each: PostgreSQL's largest cost in a build, measured in
    docs/decisions.md, "Replay: reading the log for less")."""
    if not merges:
        return activities
    into = {m.source_id: m.target_id for m in merges}
    return [a if a.user_id not in into else replace(a, user_id=survivor(into, a.user_id)) for a in activities]


class HeldOutcomes:
    """The rebuild's `command_outcomes` held in memory and written once, by COPY, at the
    end: the table is the build's alone, like the users. Upserted every `flush_every`
    facts (an INSERT … ON CONFLICT from arrays, then the DELETE of the flushed channels'
    old outcomes, each keeping the table's index) it cost ~2.6 µs of PostgreSQL and
    ~1.3 µs of Python per event of a build (docs/decisions.md, "Issue 14, session 9").
    The same rows as `outcomes.save` then `outcomes.forget_and_announce` at the same
    points would leave (tests/integration/test_resident.py): applied wins over a later
    rejection of one eventId, and each flush forgets its channels' outcomes older than
    the channel's latest command minus KEEP_MS. Memory: one tuple per command kept,
    within the build's budget (`OverBudget` reads the process's RSS)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, command_outcomes.Outcome]] = {}  # channel -> eventId -> outcome

    def save(self, rows: list[command_outcomes.Outcome]) -> None:
        for row in rows:  # outcomes.save's ON CONFLICT rule, row by row in fact order
            held = self.rows.setdefault(row[0], {})
            old = held.get(row[1])
            if old is None or row[3] is None or old[3] is not None:
                held[row[1]] = row
        for channel_id in {row[0] for row in rows}:  # outcomes.forget_and_announce
            held = self.rows[channel_id]
            cut = max(row[2] for row in held.values()) - command_outcomes.KEEP_MS
            if any(row[2] < cut for row in held.values()):
                self.rows[channel_id] = {e: row for e, row in held.items() if row[2] >= cut}

    async def copy(self, conn: asyncpg.Connection) -> None:
        records = [row for held in self.rows.values() for row in held.values()]
        if records:
            await conn.copy_records_to_table(
                "command_outcomes", records=records, columns=("channel_id", "event_id", "at", "code", "message"))
