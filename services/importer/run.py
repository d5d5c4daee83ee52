"""One import, end to end: check the file and the mapping, take the channel's import
lock (I12), publish `import.started`, the rows and `import.finished`, wait until the
running service has applied them, and report (I15).

The importId names the import's content and settings, so that importing the same file
again after the importer was killed resumes that import: its rows carry the same
eventIds (`{importId}:{rowNumber}`), and the projection skips those it already applied.
Once an import has completed, the same file imported again is a new import
(`{base}-2`, `-3`, …): staff re-import on purpose, and every row is applied again.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import logging
import operator
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg
import orjson

from contracts.limits import MAX_CHUNK_BYTES, MAX_MESSAGE_BYTES
from contracts.topics import Topics
from services.domain.ids import encode_parts
from services.domain.imports import MappingError
from services.platform.config import Settings
from services.platform.embedded import infrastructure
from services.platform.topics import ensure_topics
from services.store import import_log
from services.store import repository as repo
from services.store.pool import create_pool

from . import csvfile
from .failures import write_failures_file
from .mapping import Plan, plan
from .producer import ImportProducer
from .window import SLICE_S, Window

# Fault injection for the crash tests (Settings.import_stall_after_rows): after publishing
# this many rows the importer hangs (rows flushed, lease still renewed) until it is killed.
STALL_ENV = "UNIFIER_IMPORT_STALL_AFTER_ROWS"

# A row's import.row message must pass the service's inbound limit, or it would be
# dead-lettered instead of counted as a failed row.
MAX_ROW_BYTES = MAX_MESSAGE_BYTES
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_LEASE_S = 30.0
_PROGRESS_EVERY_S = 2.0
# The poll for the import's end: 20 ms first, growing to at most 100 ms apart. An import
# is done when its last batch commits, and a poll at most 0.1 s late adds at most 0.1 s
# to it (0.5 s cost a 100k-row import ~2 % of its rate); a poll is one indexed read.
_WAIT_FIRST_S = 0.02
_WAIT_MAX_S = 0.1
_MAX_TAG = 128


# Rows per `import.rows` record, and its size at most: well inside the door's limits
# (contracts/limits.py, MAX_CHUNK_ROWS, MAX_CHUNK_BYTES) with a row of up to 64 KiB added.
CHUNK_ROWS = 500
CHUNK_BYTES = MAX_CHUNK_BYTES - MAX_ROW_BYTES - 1024


class _Chunk:
    """The `import.rows` record being filled: rows as their JSON, joined when it is sent
    (each row is serialised once)."""

    def __init__(self, channel: str, import_id: str) -> None:
        self.channel, self.import_id = channel, import_id
        self.rows: list[bytes] = []
        self.first = 0
        self.size = 0
        # An `import.row` is its envelope and the row's fields: the envelope's size, with
        # the eventId's row number and occurredAt's digits counted apart.
        self._envelope = len(orjson.dumps({
            "eventId": f"{import_id}:", "type": "import.row", "channelId": channel, "occurredAt": _now_ms(),
            "importId": import_id,
        }))

    def one_row_bytes(self, row: bytes, number: int) -> int:
        return self._envelope + len(str(number)) + len(row) - 1  # the row's braces replace one of the envelope's

    def fits(self, row: bytes) -> bool:
        return len(self.rows) < CHUNK_ROWS and self.size + len(row) + 1 <= CHUNK_BYTES

    def add(self, row: bytes, number: int) -> None:
        if not self.rows:
            self.first = number
        self.rows.append(row)
        self.size += len(row) + 1

    def take(self, now: int) -> tuple[bytes, int]:
        head = orjson.dumps({
            "eventId": f"{self.import_id}:rows:{self.first}", "type": "import.rows", "channelId": self.channel,
            "occurredAt": now, "importId": self.import_id,
        })
        value = head[:-1] + b',"rows":[' + b",".join(self.rows) + b"]}"
        n = len(self.rows)
        self.rows, self.size = [], 0
        return value, n


def _row_value(
    number: int, cells: list[str], lines: tuple[int, int], pairs: list[tuple[int, str]], reach: int, width: int,
) -> bytes:
    """A row's JSON in an `import.rows` record: its mapped cells, or why it fails."""
    n = len(cells)
    if n >= reach:
        mapped = {key: cells[i] for i, key in pairs}
    else:
        mapped = {key: cells[i] if i < n else "" for i, key in pairs}
    row: dict[str, Any] = {"rowNumber": number, "cells": mapped}
    if n > width and any(c.strip() for c in cells[width:]):
        row["rowError"] = (
            f"the row has {n} cells but the header names {width} columns;"
            " a cell with a comma must be quoted"
        )
    elif (swallowed := csvfile.swallowed(cells, lines)) is not None:
        row["cells"], row["rowError"] = {}, swallowed
    return orjson.dumps(row)


def _plain_row(positions: tuple[int, ...], keys: list[str]) -> tuple[bytes, Callable[[list[bytes]], tuple[bytes, ...]]]:
    """The JSON of a plain line's row (csvfile.rows) with every mapped cell in it, as
    `_row_value` makes it, ~2× cheaper: the line's text is escaped once, and as no
    escape holds a comma, its parts between commas are the cells' escaped values, put
    in a template of the row with its keys: `template % (number, *pick(parts))`."""
    template = (
        b'{"rowNumber":%d,"cells":{'
        + b",".join(orjson.dumps(key).replace(b"%", b"%%") + b':"%s"' for key in keys)
        + b"}}"
    )
    pick = operator.itemgetter(*positions)
    return template, pick if len(positions) > 1 else lambda parts: (pick(parts),)


class ImportRefused(Exception):
    """Exit 2: nothing was published (I12, I13, a mapping error)."""


class ImportBusy(ImportRefused):
    """Another import is running in the channel (I12)."""


log = logging.getLogger(__name__)


class ImportNotApplied(Exception):
    """Exit 3: the rows were published but not all applied in time."""

    def __init__(self, message: str, result: ImportResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True, slots=True)
class ImportRequest:
    path: Path
    channel: str
    mode: str  # member | lead
    key: str | None = None  # email | mobileNumber (lead imports)
    maps: tuple[str, ...] = ()
    blank: str = "keep"
    tag: str | None = None
    failures: Path | None = None
    actor: str = field(default_factory=lambda: _default_actor())
    timeout_s: float = DEFAULT_TIMEOUT_S
    lease_s: float = DEFAULT_LEASE_S


@dataclass(frozen=True, slots=True)
class ImportResult:
    import_id: str
    created: int
    updated: int
    failed: int

    def to_json(self) -> dict[str, Any]:
        return {"importId": self.import_id, "created": self.created, "updated": self.updated, "failed": self.failed}


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _now_ms() -> int:
    return int(time.time() * 1000)


def import_base_id(channel: str, digest: str, p: Plan, blank: str, tag: str | None) -> str:
    """The same file with the same settings in the same channel names the same import."""
    columns = [c.to_json() for c in p.columns]
    parts = (channel, p.mode, p.key, blank, tag or "", digest, orjson.dumps(columns).decode())
    if any("\x1f" in part for part in parts):
        # Ids v2 (services/domain/ids.py): joined by U+001F, a part holding it could give
        # another input's id; such parts are length-prefixed, after a U+001F no joined
        # name starts with. Other imports keep their ids (a resumed import stays one).
        return "imp_" + hashlib.sha256(b"\x1f" + encode_parts(*parts)).hexdigest()[:24]
    return "imp_" + hashlib.sha256("".join(part + "\x1f" for part in parts).encode()).hexdigest()[:24]


async def run_import(settings: Settings, req: ImportRequest, *, progress: IO[str] | None = None) -> ImportResult:
    """Run one import; raises ImportRefused (exit 2) or ImportNotApplied (exit 3).
    `unifier import` calls this; the HTTP API calls `start_import` and `Import.complete`."""
    check_request(req)
    async with infrastructure(settings) as (bootstrap, database_url):
        pool = await create_pool(database_url, settings.db_schema, max_size=3)
        try:
            started = await start_import(settings, req, pool, bootstrap, progress=progress)
            return await started.complete()
        finally:
            await pool.close()


def check_request(req: ImportRequest) -> None:
    """The checks that need no database: channel, tag, the file itself (I13)."""
    if not req.channel.strip():
        raise ImportRefused("--channel must name a channel")
    tag = req.tag.strip() if req.tag is not None else None
    if tag is not None and not 0 < len(tag) <= _MAX_TAG:
        raise ImportRefused(f"--tag must be 1 to {_MAX_TAG} characters")


async def start_import(
    settings: Settings, req: ImportRequest, pool: asyncpg.Pool, bootstrap: str, *, progress: IO[str] | None = None,
) -> Import:
    """Check the file and the mapping, name the import and take the channel's import
    lock (I12): everything that can refuse it (ImportRefused; ImportBusy when another
    import runs), before anything is published. `complete()` does the rest."""
    check_request(req)
    tag = req.tag.strip() if req.tag is not None else None
    try:
        facts = await asyncio.to_thread(csvfile.inspect, req.path)
        headers = csvfile.header(req.path)
    except csvfile.FileRefused as err:
        raise ImportRefused(str(err)) from None
    declared = await pool.fetchval("SELECT imported_types || field_types FROM channels WHERE channel_id = $1", req.channel)
    try:
        mapping = plan(headers, req.maps, req.mode, req.key, dict(declared or {}))
    except MappingError as err:
        raise ImportRefused(err.reason) from None
    run = Import(settings, req, pool, bootstrap, mapping, tag, len(headers), progress)
    await run.claim(import_base_id(req.channel, facts.sha256, mapping, req.blank, tag))
    return run


class Import:
    """One import between `start_import` (named, lock taken) and `complete()`."""

    def __init__(
        self, settings: Settings, req: ImportRequest, pool: asyncpg.Pool, bootstrap: str, mapping: Plan,
        tag: str | None, width: int, progress: IO[str] | None,
    ) -> None:
        self.settings, self.req, self.pool, self.bootstrap = settings, req, pool, bootstrap
        self.mapping, self.tag, self.width, self.progress = mapping, tag, width, progress
        self.channel = req.channel
        self.read = 0
        self.started_at = time.monotonic()
        self.deadline = self.started_at + req.timeout_s
        self.last_report = self.started_at
        self.finished_sent = False
        self.lock_lost = False
        # How far publishing runs ahead of applying (window.py); lead 0: not paced.
        self.window = Window(lead_s=settings.import_lead_s)
        self.allowed = self.window.rows if settings.import_lead_s > 0 else 1 << 62

    # -- the steps ---------------------------------------------------------------------
    async def claim(self, base_id: str) -> None:
        """Name the import and take the channel's lock (ImportBusy when another runs)."""
        self.import_id = await self._choose_id(base_id)
        attempt = _now_ms()
        self.finished_event = f"{self.import_id}:finished:{attempt}"
        owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.owner = owner
        async with self.pool.acquire() as conn:
            taken, holder = await import_log.acquire_lock(
                conn, self.channel, self.import_id, owner, self.req.actor, self.finished_event,
                int(self.req.lease_s * 1000),
            )
        if not taken:
            assert holder is not None
            raise ImportBusy(
                f"another import is running in channel {self.channel!r}: {holder.import_id} by {holder.actor},"
                f" {holder.published} rows published; one import at a time per channel (I12)."
                f" If its importer was stopped, its lock expires in {max(holder.expires_in_s, 0):.0f} s"
            )
        self.holder = holder
        self.attempt = attempt

    async def complete(self) -> ImportResult:
        """Publish `import.started`, the rows and `import.finished`; wait until the
        service has applied them (ImportNotApplied after the timeout)."""
        holder, attempt, owner = self.holder, self.attempt, self.owner
        topics = Topics(self.settings.topic_prefix)
        producer = ImportProducer(self.bootstrap, topics.import_rows, self.channel)
        started_sent = False
        heartbeat: asyncio.Task[None] | None = None
        try:
            await ensure_topics(self.bootstrap, self.settings.topic_prefix, self.settings.partitions)
            await producer.start()
            await import_log.purge_failures(self.pool, _now_ms())
            if holder is not None:  # its importer died: close that attempt (U: abandoned)
                await producer.send_now(self._finished(holder.import_id, holder.release_event, holder.published, True))
            await producer.send_now(self._started(f"{self.import_id}:started:{attempt}", attempt))
            started_sent = True
            heartbeat = asyncio.create_task(self._heartbeat())
            rows = await self._publish_rows(producer)
            await producer.send_now(self._finished(self.import_id, self.finished_event, rows, False))
            self.finished_sent = True
            self.rows = rows
            result = await self._wait()
        except BaseException:
            if started_sent and not self.finished_sent:
                # Interrupted mid-import: say so on the log, so the lock is released when
                # the service reaches this point (and a re-run resumes the import).
                with contextlib.suppress(Exception):
                    await asyncio.shield(
                        producer.send_now(self._finished(self.import_id, self.finished_event, self.read, True))
                    )
            elif not started_sent:
                with contextlib.suppress(Exception):
                    await import_log.release_lock(self.pool, self.channel, owner)
            raise
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
                with contextlib.suppress(BaseException):
                    await heartbeat
            with contextlib.suppress(Exception):
                await producer.stop()
        if self.req.failures is not None:
            await write_failures_file(self.pool, self.channel, self.import_id, self.mapping.keys, self.req.failures)
        return result

    async def _choose_id(self, base_id: str) -> str:
        """A completed import is not resumed: the same file again is the next generation."""
        statuses = await import_log.imports_like(self.pool, self.channel, base_id)
        generation = 1
        while True:
            candidate = base_id if generation == 1 else f"{base_id}-{generation}"
            if statuses.get(candidate) != "completed":
                return candidate
            generation += 1

    async def _publish_rows(self, producer: ImportProducer) -> int:
        """The rows in `import.rows` chunks (contract 1.3.0): consecutive rows, in row
        order, up to CHUNK_ROWS or CHUNK_BYTES a record, so the broker and the service pay
        per chunk rather than per row. A chunk is cut where the window stops publishing,
        so pacing stays in rows."""
        positions, keys = self.mapping.positions, self.mapping.keys
        pairs = list(zip(positions, keys, strict=True))
        reach = max(positions) + 1
        width = self.width
        stall = self.settings.import_stall_after_rows
        chunk = _Chunk(self.channel, self.import_id)
        template, pick = _plain_row(positions, keys)
        dumps = orjson.dumps
        # A row this long may be too large as a message (one_row_bytes, with a row
        # number of up to 20 digits): only such rows are measured exactly.
        long_row = MAX_ROW_BYTES - chunk.one_row_bytes(b"", 0) - 20
        for number, cells, lines in csvfile.rows(self.req.path):
            if stall and self.read == stall:
                await self._send_chunk(producer, chunk)
                await producer.flush()
                await asyncio.Event().wait()
            if not isinstance(cells, str):
                value = _row_value(number, cells, lines, pairs, reach, width)
            elif reach <= cells.count(",") + 1 <= width:  # a plain line with every mapped cell (_plain_row)
                value = template % (number, *pick(dumps(cells)[1:-1].split(b",")))
            else:
                value = _row_value(number, cells.split(","), lines, pairs, reach, width)
            # A row must fit the service's inbound limit as the one-row `import.row` it
            # stands for (a dead letter of it holds that message; a retry applies it). Its
            # cells are dropped and the reason replaces any other.
            if len(value) > long_row and (size := chunk.one_row_bytes(value, number)) > MAX_ROW_BYTES:
                value = orjson.dumps({"rowNumber": number, "cells": {}, "rowError": (
                    f"the row is too large to import ({size} bytes as a message; the limit is {MAX_ROW_BYTES})"
                )})
            if self.read >= self.allowed:
                await self._send_chunk(producer, chunk)
                await producer.ship()
                await self._wait_for_room(producer)
            elif not chunk.fits(value):
                await self._send_chunk(producer, chunk)
            chunk.add(value, number)
            self.read += 1
        await self._send_chunk(producer, chunk)
        await producer.flush()
        return self.read

    async def _send_chunk(self, producer: ImportProducer, chunk: _Chunk) -> None:
        if not chunk.rows:
            return
        value, rows = chunk.take(_now_ms())
        if not producer.add(value, rows):
            await producer.ship()
            producer.add(value, rows)  # an empty batch takes any record
            if self.lock_lost:
                raise ImportNotApplied("the import lock was lost (the importer stalled past its lease)", self._result(None))
            await self._report(None)

    async def _wait_for_room(self, producer: ImportProducer) -> None:
        """Hold publishing until the window allows more (window.py): other channels of
        the partition are applied behind our rows. The service's progress is the
        offset it stored for the partition (every row counts: applied, skipped as
        applied before, or dead-lettered). At the deadline the rest is published
        anyway, so that the service applies the whole import once it runs (exit 3)."""
        while True:
            if self.lock_lost:
                raise ImportNotApplied("the import lock was lost (the importer stalled past its lease)", self._result(None))
            now = time.monotonic()
            if now >= self.deadline:
                self.allowed = 1 << 62  # give up pacing: publish the rest
                return
            stored = await repo.stored_offsets(self.pool, [producer.topic])
            passed = producer.rows_passed(stored.get((producer.topic, producer.partition), 0))
            self.window.observe(now, passed, self.read)
            self.allowed = self.window.allowed(now, passed, self.read)
            if self.read < self.allowed:
                return
            await self._report(None)
            await asyncio.sleep(SLICE_S)

    async def _wait(self) -> ImportResult:
        interval = _WAIT_FIRST_S
        while True:
            record = await import_log.import_record(self.pool, self.channel, self.import_id)
            if record is not None and record["finished_event_id"] == self.finished_event:
                await self._report(record, final=True)
                return self._result(record)
            if time.monotonic() >= self.deadline:
                raise ImportNotApplied(
                    f"not all rows were applied within {self.req.timeout_s:g} s; is `unifier run` running?"
                    f" The import goes on when the service applies it: see `unifier import log {self.channel}`",
                    self._result(record),
                )
            await self._report(record)
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, _WAIT_MAX_S)

    async def _heartbeat(self) -> None:
        """Renew the lease while this importer lives (I12); a killed importer stops."""
        every = max(self.req.lease_s / 3, 0.05)
        while True:
            await asyncio.sleep(every)
            try:
                held = await import_log.renew_lock(self.pool, self.channel, self.owner, self.read)
            except (OSError, asyncpg.PostgresError):
                continue
            if not held and not self.finished_sent:
                self.lock_lost = True

    # -- messages and reports ----------------------------------------------------------
    def _started(self, event_id: str, at: int) -> bytes:
        return orjson.dumps({
            "eventId": event_id, "type": "import.started", "channelId": self.channel, "occurredAt": at,
            "importId": self.import_id, "mode": self.mapping.mode, "key": self.mapping.key,
            "blank": self.req.blank, "tag": self.tag, "actor": self.req.actor,
            "fileName": self.req.path.name, "columns": [c.to_json() for c in self.mapping.columns],
        })

    def _finished(self, import_id: str, event_id: str, rows: int, abandoned: bool) -> bytes:
        return orjson.dumps({
            "eventId": event_id, "type": "import.finished", "channelId": self.channel,
            "occurredAt": _now_ms(), "importId": import_id, "rows": rows, "abandoned": abandoned,
        })

    def _result(self, record: dict[str, Any] | None) -> ImportResult:
        if record is None:
            return ImportResult(self.import_id, 0, 0, 0)
        return ImportResult(self.import_id, record["created"], record["updated"], record["failed"])

    async def _report(self, record: dict[str, Any] | None, final: bool = False) -> None:
        """Progress on stderr for imports that take a while: rows read, applied, rate."""
        if self.progress is None:
            return
        now = time.monotonic()
        if now - self.last_report < _PROGRESS_EVERY_S and not (final and now - self.started_at >= _PROGRESS_EVERY_S):
            return
        self.last_report = now
        elapsed = max(now - self.started_at, 1e-6)
        if record is None:
            record = await import_log.import_record(self.pool, self.channel, self.import_id)
        applied = 0 if record is None else record["created"] + record["updated"] + record["failed"]
        print(
            f"unifier import {self.import_id}: {self.read} rows read, {applied} applied"
            f" ({applied / elapsed:,.0f} rows/s applied, {elapsed:.1f} s)",
            file=self.progress,
            flush=True,
        )


async def complete_and_log(started: Import) -> None:
    """`started.complete()` in the background of a server process (the API's and the
    console's uploads): nobody waits for the answer, so the outcome goes to the log and,
    as for every import, to the import log."""
    try:
        result = await started.complete()
        log.info("import %s: %d created, %d updated, %d failed", result.import_id, result.created, result.updated, result.failed)
    except ImportNotApplied as err:
        log.warning("import %s: %s", started.import_id, err)
    except Exception:
        log.exception("import %s failed", started.import_id)
