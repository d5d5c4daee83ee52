"""The live projection, pipelined (issue 14 item 4): batch N+1 is prepared in memory —
decoded, its users found, the core run, every statement's arguments built — while batch
N's transaction commits, so that Python's work overlaps PostgreSQL's.

Writes stay strictly sequential: N+1's transaction starts after N's committed (one
write task at a time). What N+1 is prepared on must be what the serial path
(batch.apply_batch) would read after N committed; why each input is (docs/decisions.md,
"Issue 14, session 8: pipelining the live projection"; imports: "Issue 14, session 11:
an import's rows on the pipelined path"):

- users: the resident copy holds every user N changed (advanced to the revision N's
  commit gives them, and pinned against eviction until N committed), so what the store
  is asked for is a user N did not change, the same before and after N's commit;
- the eventId window: the store's rows overlaid with what N applied (idempotent);
- MU budgets are counted after N committed; grade commands and an import's start and
  finish go by the serial path with nothing in flight (`serial_only`);
- an import's rows (`import.row`, chunks): the import book read from the store, its row
  marks overlaid with N's (`_book_after`), as the eventId window is; the users N's rows
  wrote are let go once N committed, as apply_batch lets them go;
- offsets, clocks and the channel fence are checked in N+1's own transaction.

When anything fails — N's write (conflict, fence, a record the store refuses, an
outage), N+1's preparation or its checks, a drop of the resident copy meanwhile (a
rebalance) — everything in memory is dropped, as a restart would, and the batches in
hand are applied by the serial path (`serial`: retries, isolation, outages waited out)
from the committed state. Then pipelining resumes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg

from contracts.topics import Topics
from services.domain.directory import Identity
from services.domain.imports import ImportBook
from services.domain.user import User
from services.platform.gc_tuning import paused as gc_paused
from services.store import import_log, rowcodec
from services.store import repository as repo

from .batch import (
    _MAX_LOAD_ROUNDS,
    BatchResult,
    Effects,
    Parsed,
    _written_by_imports,
    add_keys,
    parse_records,
    run_facts,
    write_rest_unfinished,
)
from .records import Partition, Record, clocks_after, ends_after
from .resident import ResidentUsers
from .window import WINDOW_MS, AppliedWindow, event_pairs

log = logging.getLogger("unifier.projection")

T = TypeVar("T")
Serial = Callable[[list[Record]], Awaitable[BatchResult]]
Done = Callable[[list[Record], BatchResult, float], None]

_SERIAL_TYPES = ("import.", "grade.")
_PIPELINED_IMPORT = "import.row"  # of the import facts, only rows are prepared ahead


_SLICE = 200  # records, facts or users prepared between two turns of the write in flight


def _slices(items: list[T]) -> list[list[T]]:
    return [items[i : i + _SLICE] for i in range(0, len(items), _SLICE)]


async def _let_the_write_on() -> None:
    """One turn of the event loop: the write in flight sends its next statement if
    PostgreSQL answered the last one. Without it the write advances only where the
    preparation reads, and PostgreSQL idles while the core runs (~25 µs a fact)."""
    await asyncio.sleep(0)


class _Void(Exception):
    """A prepared batch whose write did not begin (`Pipeline._write_after`)."""


class Diverged(repo.Conflict):
    """The store is not where the pipelined batch was prepared to follow (another
    instance applied its records or wrote its channels): it is applied serially."""


def serial_only(parsed: list[Parsed]) -> bool:
    """Facts whose batch is not prepared ahead: grade commands (their definitions are
    read from the store) and an import's start (it writes the import's definition and
    the channel's imported types, which the next batch reads), and, once an import too,
    its finish (kept on the path that needs no argument). An import's rows are prepared
    ahead: what they read beyond users (the definition, the row mark) is what the batch
    before leaves (`_book_after`). So the batch in flight never holds a start."""
    for p in parsed:
        if p.fact is not None:
            kind = p.fact.type
            if kind.startswith(_SERIAL_TYPES) and kind != _PIPELINED_IMPORT:
                return True
    return False


@dataclass(slots=True)
class Prepared:
    """A batch applied in memory, with everything its transaction writes."""

    records: list[Record]
    started: float
    generation: int  # resident.drops when it was prepared: a drop since voids it
    result: BatchResult
    channels: list[str]
    observed: dict[str, int | None]  # tokens read before its users, channels not known then
    users: bytes  # repo.save_user_rows' payload: the rows of the users it updates, encoded
    updated: int  # how many rows `users` holds
    identities: list[tuple[User, frozenset[Identity] | None, frozenset[Identity]]]
    fx: Effects
    stored_applied: frozenset[tuple[str, str]]
    stamp: list[str]  # channels whose users it changed
    ends: dict[Partition, int]
    clocks: dict[Partition, int]
    changed: list[str]  # the users it advanced: pinned until it committed
    window_clocks: dict[str, int] = field(default_factory=dict)  # its channels' clocks after it
    book: ImportBook | None = None  # its import rows' book: written with it, read by the next
    imported: list[str] = field(default_factory=list)  # users its import rows wrote: not kept after it
    new_users: bytes = b""  # repo.copy_new_users' payload: the new users it copies (COPY_NEW_FROM), encoded
    copied: int = 0  # how many rows `new_users` holds


@dataclass(slots=True)
class Written:
    tokens: dict[str, int]
    elapsed: float


class Pipeline:
    def __init__(
        self, pool: asyncpg.Pool, topics: Topics, resident: ResidentUsers, serial: Serial, done: Done,
        *, outbox: bool = True, stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.pool = pool
        self.stopping = stopping  # a stop was asked for: no batch begins after the one in flight
        self.topics = topics
        self.resident = resident
        self.serial = serial  # the serial path: apply_batch with retries and isolation
        self.done = done  # told of every batch committed here (not of those `serial` applies)
        self.outbox = outbox
        self._inflight: tuple[Prepared, asyncio.Task[Written]] | None = None
        self.pipelined = 0  # batches committed as prepared ahead
        self.redone = 0  # batches applied serially because something failed (tests, logs)

    async def feed(self, records: list[Record]) -> None:
        """Prepare `records` while the batch before commits, then start their write.
        Raises what the serial path raises (consumer.Stopped)."""
        # No cyclic collection from the preparation until the batch before committed, as
        # the serial path pauses it for a whole batch (batch.apply_batch): a collection
        # while the write is awaited would walk everything the prepared batch allocated
        # (and, promoted, the resident users) for nothing. Collections run between feeds.
        with gc_paused():
            await self._feed(records)

    async def _feed(self, records: list[Record]) -> None:
        started = time.perf_counter()
        parsed = await self._parse(records)
        if serial_only(parsed):
            waited = self.busy
            await self.drain()
            if not (waited and self.stopping()):
                await self.serial(records)
            return
        if self._inflight is not None and self._inflight[0].generation != self.resident.drops:
            # The copy was dropped (a rebalance) after the batch in flight was prepared:
            # it no longer holds what that batch changed, which the store shows only
            # once it committed. So this one is prepared after it, not alongside.
            await self.drain()
        generation = self.resident.drops
        prepared: Prepared | None = None
        try:
            prepared = await self._prepare(records, parsed, started, generation)
        except Exception as err:
            log.warning("batch of %d records not prepared ahead (%s: %s); applying it serially",
                        len(records), type(err).__name__, str(err)[:200])
        except BaseException:
            self.resident.drop()  # cancelled half-way: what it changed in memory goes
            raise
        waited = self.busy
        # Its write is queued behind the batch in flight's now, and starts the moment that
        # one commits, not once this loop comes back to take the outcome (`drain` below,
        # ~15 ms a batch later during an import: the loop runs the relay, the fetches, the
        # bookkeeping). It writes only what the checks below would let through.
        chained = None
        if prepared is not None:
            if self._inflight is not None:
                chained = asyncio.create_task(self._write_after(self._inflight[1], prepared))
            elif self.resident.drops == prepared.generation:  # nothing in flight: it begins now
                chained = asyncio.create_task(self._write(prepared))
        committed = await self.drain(pinned=prepared.changed if prepared is not None else ())
        if chained is not None and prepared is not None and committed:
            # Writing, or void (a drop or a stop met when the batch before committed,
            # `_write_after`): the next `drain` takes its outcome either way.
            self._inflight = (prepared, chained)
            return
        if chained is not None:  # the batch before failed: it did not write (_Void, taken here)
            await asyncio.gather(chained, return_exceptions=True)
        if waited and self.stopping():
            # The batch in flight is finished (above); this one was only prepared, and
            # is read again at the next start (its offsets were not stored).
            self.resident.drop()
            return
        self.resident.drop()  # it holds what `prepared` changed, which will not commit
        self.redone += 1
        await self.serial(records)

    async def _parse(self, records: list[Record]) -> list[Parsed]:
        """parse_records, yielding to the write in flight every ~_SLICE facts: a chunk of
        import rows is up to 500 facts (~7 µs each), so records are counted by the rows
        they hold, not one a record."""
        topics = self.topics
        parsed: list[Parsed] = []
        if not any(r.topic == topics.import_rows for r in records):
            for part in _slices(records):
                parsed.extend(parse_records(topics, part))
                await _let_the_write_on()
            return parsed
        since = 0
        for r in records:
            more = parse_records(topics, [r])
            parsed.extend(more)
            since += len(more)
            if since >= _SLICE:
                since = 0
                await _let_the_write_on()
        return parsed

    async def drain(self, pinned: list[str] | tuple[()] = ()) -> bool:
        """Wait for the batch in flight. Committed: its channels' tokens noted, the
        resident copy trimmed to its budget (but not `pinned`), `done` told; True.
        Failed: everything in memory dropped and the batch applied by the serial path;
        False (then a batch prepared after it is void)."""
        if self._inflight is None:
            return True
        prepared, task = self._inflight
        self._inflight = None
        try:
            # A turn first and one after: a write queued behind this one (`_write_after`)
            # then waits on it before this does and begins before the bookkeeping below.
            await _let_the_write_on()
            written = await task
            await _let_the_write_on()
        except _Void as void:
            # Not written: what it was prepared on went (a drop), or a stop came, when the
            # batch before it committed. Applied serially, as `_feed` applies a batch
            # whose preparation a drop voided; at a stop it is read again at the next start.
            self.resident.drop()
            if not self.stopping():
                log.info("pipelined batch of %d records not written (%s); applying it serially", len(prepared.records), void)
                self.redone += 1
                await self.serial(prepared.records)
            return False
        except Exception as err:
            log.warning("pipelined batch of %d records not committed (%s: %s); applying it serially",
                        len(prepared.records), type(err).__name__, str(err)[:200])
            self.resident.drop()
            self.redone += 1
            await self.serial(prepared.records)
            return False
        self.pipelined += 1
        if self.resident.drops == prepared.generation:
            self.resident.written(written.tokens, pinned, forget=prepared.imported)
        self.done(prepared.records, prepared.result, written.elapsed)
        return True

    @property
    def busy(self) -> bool:
        """A batch is in flight (its outcome not yet taken by `drain`)."""
        return self._inflight is not None

    @property
    def writing(self) -> bool:
        """A batch's transaction is still running (consumer.py gathers the next batch
        meanwhile: gathering.py)."""
        return self._inflight is not None and not self._inflight[1].done()

    async def written(self, within: float) -> None:
        """Wait until the batch in flight has finished writing, `within` seconds at most;
        its outcome is left to `drain`."""
        if self._inflight is not None:
            await asyncio.wait([self._inflight[1]], timeout=within)

    async def settle(self) -> None:
        """Wait until the batch in flight committed or failed (a rebalance reads the
        stored offsets after it); its outcome is taken by the next `feed` or `drain`."""
        if self._inflight is not None:
            await asyncio.wait([self._inflight[1]])

    # -- preparing ---------------------------------------------------------------------------

    async def _prepare(self, records: list[Record], parsed: list[Parsed], started: float, generation: int) -> Prepared:
        resident = self.resident
        inflight = self._inflight[0] if self._inflight is not None else None
        uncommitted = frozenset(inflight.changed) if inflight is not None else frozenset()
        failed_at = int(time.time() * 1000)  # only stamps dead letters
        result = BatchResult()
        facts = [p.fact for p in parsed if p.fact is not None]
        channels = sorted({f.channel_id for f in facts})
        async with self.pool.acquire() as conn:
            # Tokens first, users after: a write by another instance in between changes
            # the token, which this batch's transaction then finds (Pipeline._write).
            unknown = [c for c in channels if c not in resident.tokens]
            read = await repo.channel_tokens(conn, unknown)
            observed: dict[str, int | None] = {c: read.get(c) for c in unknown}
            # No row: the store holds none of the channel's users (schema.sql,
            # channel_writers); `_write` voids the batch if another writer's row is
            # there by then (expected: ours).
            resident.seen_empty(c for c in unknown if c not in read)
            window = await self._window(conn, facts, channels, inflight)
            settings = await repo.load_channels(conn, channels)
            directory = resident.directory
            await self._load(conn, facts, uncommitted)
            if self._inflight is not None and any(s.mu_limit is not None for s in settings.values()):
                # I17: the budget is counted from the store, which must hold N's users
                # (failed, N voids this batch: counted before it, the count is not used).
                await asyncio.wait([self._inflight[1]])
            book = await import_log.prepare(conn, facts, settings, directory)
            if book is not None and inflight is not None and inflight.book is not None:
                _book_after(book, inflight.book)
        if resident.directory is not directory:
            raise Diverged("the resident users were dropped while the batch was prepared")
        fx = Effects()
        for part in _slices(parsed):
            fx.extend(run_facts(directory, part, settings, window, self.topics, result, outbox=self.outbox, failed_at=failed_at))
            await _let_the_write_on()
        changed_users = list(directory.changed.values())
        # As repo.save_users: many new users (an import batch's) go by COPY, their rows
        # built here like the others', each set encoded at once as its COPY's payload.
        copied, updated_users = repo.new_to_copy(changed_users, resident.revs)
        new_rows: list[tuple[Any, ...]] = []
        for some in _slices(copied):
            new_rows.extend(repo.user_records(some, resident.revs))
            await _let_the_write_on()
        rows: list[tuple[Any, ...]] = []
        for some in _slices(updated_users):
            rows.extend(repo.user_records(some, resident.revs))
            await _let_the_write_on()
        new_users = rowcodec.encode(new_rows, repo.USER_TYPES) if new_rows else b""
        users = rowcodec.encode(rows, repo.USER_TYPES) if rows else b""
        if resident.directory is not directory:  # dropped while it yielded
            raise Diverged("the resident users were dropped while the batch was prepared")
        ids = directory.moved_identities(changed_users)
        stamp = sorted({u.channel_id for u in changed_users})
        # As apply_batch: the users an import's rows wrote are let go once it committed.
        imported = _written_by_imports(facts, directory) if book is not None else []
        ends = ends_after(records)
        advanced = resident.advance()  # the revisions its rows carry; the next batch starts from them
        return Prepared(
            records=records, started=started, generation=generation, result=result, channels=channels,
            observed=observed, users=users, updated=len(rows), new_users=new_users, copied=len(new_rows), identities=ids, fx=fx, stored_applied=window.stored, stamp=stamp,
            ends=ends, clocks=clocks_after(records), changed=advanced,
            window_clocks=dict(window.clocks), book=book, imported=imported,
        )

    async def _window(
        self, conn: asyncpg.Connection, facts: list[Any], channels: list[str], inflight: Prepared | None,
    ) -> AppliedWindow:
        """The eventId window of the facts' channels after the batch in flight: the
        store's rows (read before or after its commit) overlaid with what it applied."""
        pairs = event_pairs(facts)
        rows, clocks = await repo.applied_window(conn, pairs, channels)
        if inflight is not None:
            wanted, mine = set(pairs), set(channels)
            rows.extend(a for a in inflight.fx.applied if (a[0], a[1]) in wanted)  # later rows win
            for c, t in inflight.window_clocks.items():
                if c in mine:
                    clocks[c] = max(clocks.get(c, t), t)
        return AppliedWindow(rows, clocks)

    async def _load(self, conn: asyncpg.Connection, facts: list[Any], uncommitted: frozenset[str]) -> None:
        """batch._load_resident without the lock: the store is asked only for what the
        resident copy lacks, which the batch in flight did not change."""
        resident = self.resident
        ids: set[str] = set()
        keys: set[repo.Key] = set()
        for part in _slices(facts):
            add_keys(part, ids, keys)
            await _let_the_write_on()
        for _ in range(_MAX_LOAD_ROUNDS):
            if not ids and not keys:
                break
            want_ids, want_keys = resident.missing(ids, keys)
            if want_ids or want_keys:
                rows = await repo.load_users(conn, want_ids, want_keys)
                resident.loaded(want_ids, want_keys, rows, uncommitted)
            reached = resident.reached(ids, keys)
            ids = {u.merged_into for u in reached if u.merged_into}
            keys = {(u.channel_id, "pending", u.id) for u in reached if u.type == "member"}

    # -- writing -----------------------------------------------------------------------------

    async def _write_after(self, before: asyncio.Task[Written], p: Prepared) -> Written:
        """`_write(p)` as soon as `before` (the batch in flight when `p` was prepared)
        committed; `_Void` without writing if it did not, or if the resident copy `p` was
        prepared on was dropped meanwhile, or a stop was asked for (`_feed`'s checks,
        made when they can first be)."""
        await asyncio.wait([before])
        if before.cancelled() or before.exception() is not None:
            raise _Void("the batch before it did not commit")
        if self.resident.drops != p.generation:
            raise _Void("the resident users were dropped after it was prepared")
        if self.stopping():
            raise _Void("a stop was asked for")
        # The channels `before` stamped: what this write's fence expects of them (`drain`
        # notes them too, maybe after this write began).
        self.resident.tokens.update(before.result().tokens)
        return await self._write(p)

    async def _write(self, p: Prepared) -> Written:
        """The prepared batch's transaction: what batch._apply_batch writes, in its order,
        after checking that the store is where the batch was prepared to follow."""
        partitions = sorted(p.ends)
        async with self.pool.acquire() as conn, conn.transaction():
            # The inbox fence and the channel fence in one round trip (repo.lock_batch).
            stored, tokens, own = await repo.lock_batch(conn, partitions, p.channels)
            for r in p.records:
                if r.offset < stored[(r.topic, r.partition)]:
                    raise Diverged(f"{r.topic}/{r.partition} is stored at {stored[(r.topic, r.partition)]}, past {r.offset}")
            known = self.resident.tokens  # ours, as of the last commit (N's included)
            for c, token in tokens.items():
                if c in known:
                    expected: int | None = known[c]
                elif c in p.observed:  # not known when its users were read: the token then
                    expected = p.observed[c] if p.observed[c] is not None else own  # no row: ours inserted it
                else:  # known then, forgotten since (a drop): nothing to vouch for the reads
                    expected = None
                if token != expected:
                    raise Diverged(f"channel {c} was written by another transaction ({token}, expected {expected})")
            if p.new_users:
                await repo.copy_new_users(conn, p.new_users)
            await repo.save_user_rows(conn, p.users, p.updated)
            await repo.save_identities(conn, p.identities)
            await write_rest_unfinished(conn, p.fx, p.stored_applied)
            if p.book is not None:
                await import_log.save(conn, p.book)
            p.result.next_offsets = {k: max(v, stored[k]) for k, v in p.ends.items()}
            # write_rest's clocks and outbox, the chats' lookups and the positions: one
            # statement (issue 14, session 15).
            stamped = await repo.finish_batch(
                conn, p.fx.applied, WINDOW_MS, p.fx.messages, p.fx.activities if self.outbox else (),
                p.result.next_offsets, p.clocks, p.stamp,
            )
        return Written({**tokens, **stamped}, time.perf_counter() - p.started)


def _book_after(book: ImportBook, inflight: ImportBook) -> None:
    """The import book of a batch prepared while `inflight` (a batch of import rows, no
    start or finish: serial_only) commits, as the store holds it after that commit.

    `book` was read from the store before or after that commit. Definitions: written
    only by an import's start, which `inflight` has none of, so the same either way.
    Row marks (`imports.last_row`): `inflight` began from the stored mark (or the one
    the batch before it left, overlaid likewise), only moved it up (imports.row_applied),
    and its commit stores the greater of the two (import_log._save_tallies): so the
    mark after the commit is `inflight`'s, and the greater of the two is right whichever
    was read. Nothing else moves a mark: an import's rows are on its channel's
    partition, whose records the batch's transaction checks no one else applied
    (Pipeline._write). Counts and failed rows are added by each batch to what is
    stored: not read."""
    for key, mark in inflight.through.items():
        if key in book.through and mark > book.through[key]:
            book.through[key] = mark
