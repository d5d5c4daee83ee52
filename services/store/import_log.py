"""The import log, failed rows and the per-channel import lock in PostgreSQL (I12, I15,
I16, I17).

Two sides use it. The projection loads the import book for a batch (`prepare`) and
writes it back in the batch's transaction (`save`), so counts, failed rows and the lock
release commit with the users they describe. The importer and the `unifier import`
commands take and renew the lock and read the log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import asyncpg
import orjson

from services.domain.channel import ChannelSettings
from services.domain.core import Fact
from services.domain.directory import Directory
from services.domain.imports import (
    Column,
    Finished,
    ImportBook,
    ImportChannel,
    ImportDef,
    Started,
)
from services.domain.mu import MuBudget, mu_visible

FAILURES_KEPT_MS = 30 * 24 * 60 * 60 * 1000  # I15: failed rows downloadable for 30 days

# ------------------------------------------------------------------------- projection


async def prepare(
    conn: asyncpg.Connection, facts: Iterable[Fact], settings: dict[str, ChannelSettings], directory: Directory,
    *, complete: bool = False, mu_kept: dict[str, MuBudget] | None = None,
) -> ImportBook | None:
    """The per-batch state beyond users, attached to the channels' settings: the MU
    budget of every channel with a limit (I17, whatever the facts), and the import book
    of a batch with import facts (None when it has none). `complete`: `directory` holds
    every user of its channels (a rebuild's), so the MU count comes from it, not the
    store; `mu_kept` then carries each channel's budget from chunk to chunk (the core
    keeps it exact), so the directory is counted once per channel, not once per chunk."""
    facts = list(facts)
    await _attach_mu_budgets(
        conn, {f.channel_id for f in facts}, settings, directory, complete=complete, kept=mu_kept
    )
    wanted: set[tuple[str, str]] = set()
    for fact in facts:
        if fact.type.startswith("import."):
            wanted.add((fact.channel_id, fact.msg.importId))
    if not wanted:
        return None
    book = ImportBook()
    pairs = sorted(wanted)
    for r in await conn.fetch(
        """SELECT i.channel_id, i.import_id, i.mode, i.key, i.blank, i.tag, i.columns, i.last_row FROM imports i
             JOIN unnest($1::text[], $2::text[]) AS w(c, i) ON i.channel_id = w.c AND i.import_id = w.i""",
        [p[0] for p in pairs], [p[1] for p in pairs],
    ):
        columns = [Column(c["column"], c["key"], c["type"]) for c in r["columns"]]
        lead_key = r["key"] if r["mode"] == "member" else r["key"].removeprefix("profile.")
        book.definitions[(r["channel_id"], r["import_id"])] = ImportDef.build(
            r["channel_id"], r["import_id"], r["mode"], lead_key, r["blank"], r["tag"], columns
        )
        book.through[(r["channel_id"], r["import_id"])] = r["last_row"]
    for ch in {c for c, _ in wanted}:
        s = settings[ch]
        settings[ch] = ImportChannel(**{f.name: getattr(s, f.name) for f in fields(ChannelSettings)}, book=book)
    return book


async def _attach_mu_budgets(
    conn: asyncpg.Connection, channels: set[str], settings: dict[str, ChannelSettings], directory: Directory,
    *, complete: bool, kept: dict[str, MuBudget] | None,
) -> None:
    """I17: each limited channel's visible MU at the start of the batch, which the core
    keeps current fact by fact (services/domain/mu.py)."""
    limited = sorted(ch for ch in channels if settings[ch].mu_limit is not None)
    if not limited:
        return
    if complete:
        known = kept if kept is not None else {}
        counts = {ch: known[ch].visible for ch in limited if ch in known}
        missing = {ch: 0 for ch in limited if ch not in counts}
        if missing:
            for u in directory.users():
                if u.channel_id in missing and mu_visible(u):
                    missing[u.channel_id] += 1
            counts.update(missing)
    else:
        counts = dict(
            await conn.fetch(
                """SELECT channel_id, count(*) FROM users
                    WHERE channel_id = ANY($1::text[]) AND type <> 'anonymous' AND NOT deleted
                      AND merged_into IS NULL AND NOT blocked AND NOT masked
                    GROUP BY channel_id""",
                limited,
            )
        )
    for ch in limited:
        budget = MuBudget(settings[ch].mu_limit or 0, counts.get(ch, 0))
        settings[ch] = replace(settings[ch], mu_budget=budget)
        if complete and kept is not None:
            kept[ch] = budget


async def save(conn: asyncpg.Connection, book: ImportBook) -> None:
    """Write what the batch's import facts did, in the batch's transaction: starts and
    finishes in the order they were applied (a resumed attempt may follow the finish of
    the one before it in the same batch), then the rows' counts and failures."""
    for event in book.events:
        if isinstance(event, Started):
            await _save_started(conn, event)
        else:
            await _save_finished(conn, event)
    if book.tallies:
        await _save_tallies(conn, book)


async def _save_started(conn: asyncpg.Connection, s: Started) -> None:
    d = s.definition
    await conn.execute(
        """INSERT INTO imports AS i (channel_id, import_id, mode, key, blank, tag, actor, file_name,
                                     columns, started_at, last_actor, last_started_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $7, $10)
           ON CONFLICT (channel_id, import_id) DO UPDATE SET
               attempts = i.attempts + 1, last_actor = EXCLUDED.last_actor,
               last_started_at = EXCLUDED.last_started_at, status = 'running',
               rows = NULL, finished_at = NULL, finished_event_id = NULL""",
        d.channel_id, d.import_id, d.mode, d.key, d.blank, d.tag, s.actor, s.file_name,
        [c.to_json() for c in d.columns], s.at,
    )
    if s.new_types:  # I5: declared for the channel; a type declared meanwhile stays
        await conn.execute(
            """INSERT INTO channels AS c (channel_id, imported_types) VALUES ($1, $2)
               ON CONFLICT (channel_id) DO UPDATE SET imported_types = EXCLUDED.imported_types || c.imported_types""",
            d.channel_id, s.new_types,
        )


async def _save_finished(conn: asyncpg.Connection, f: Finished) -> None:
    await conn.execute(
        """UPDATE imports SET status = $3, rows = $4, finished_at = $5, finished_event_id = $6
            WHERE channel_id = $1 AND import_id = $2""",
        f.channel_id, f.import_id, "abandoned" if f.abandoned else "completed", f.rows, f.at, f.event_id,
    )
    # Only the attempt that holds the lock releases it: a late finish of an earlier
    # attempt must not free a lock its successor took.
    await conn.execute("DELETE FROM import_locks WHERE channel_id = $1 AND release_event = $2", f.channel_id, f.event_id)


async def _save_tallies(conn: asyncpg.Connection, book: ImportBook) -> None:
    """The batch's counts, row marks and failures, and the leases kept alive, in one
    statement of data-modifying CTEs (one round trip where these were two or three: a
    pipelined batch's write waits on the loop between its statements; issue 14, session
    23). They write three different tables, each once, so their order does not matter."""
    keys = sorted(book.tallies)
    tallies = [book.tallies[k] for k in keys]
    args: list[Any] = [
        [k[0] for k in keys], [k[1] for k in keys],
        [t.created for t in tallies], [t.updated for t in tallies], [t.failed for t in tallies],
        [book.through.get(k, 0) for k in keys],
    ]
    # The lease of an import lives while its rows are being applied (I12), even after
    # its importer stopped waiting.
    sql = """WITH counted AS (
               UPDATE imports i SET created = i.created + x.c, updated = i.updated + x.u, failed = i.failed + x.f,
                                    last_row = greatest(i.last_row, x.r)
                 FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
                      AS x(ch, id, c, u, f, r)
                WHERE i.channel_id = x.ch AND i.import_id = x.id),
             leased AS (
               UPDATE import_locks l SET lease_until = greatest(l.lease_until, now() + l.lease_ms * interval '1 millisecond')
                 FROM unnest($1::text[], $2::text[]) AS x(ch, id)
                WHERE l.channel_id = x.ch AND l.import_id = x.id)"""
    failures = [(k, f) for k, t in zip(keys, tallies, strict=True) for f in t.failures]
    if failures:
        sql += """,
             failing AS (
               INSERT INTO import_failures (channel_id, import_id, row_number, error_columns, error_reason, cells)
               SELECT x.ch, x.id, x.n, ARRAY(SELECT jsonb_array_elements_text(x.cols::jsonb)), x.reason, x.cells
                 FROM unnest($7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[], $12::jsonb[])
                      AS x(ch, id, n, cols, reason, cells)
               ON CONFLICT DO NOTHING)"""
        args += [
            [k[0] for k, _ in failures], [k[1] for k, _ in failures], [f.row_number for _, f in failures],
            # JSON text: asyncpg would read a list of lists as a 2-D array.
            [orjson.dumps(f.columns).decode() for _, f in failures],
            [f.reason for _, f in failures], [f.cells for _, f in failures],
        ]
    await conn.execute(sql + "\n           SELECT 1", *args)


# -------------------------------------------------------------------------- the lock


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds (or held) a channel's import lock."""

    import_id: str
    owner: str
    actor: str
    release_event: str
    published: int
    acquired_at: Any  # datetime
    expires_in_s: float  # negative: expired


async def acquire_lock(
    conn: asyncpg.Connection, channel_id: str, import_id: str, owner: str, actor: str,
    release_event: str, lease_ms: int,
) -> tuple[bool, Holder | None]:
    """I12: take the channel's import lock. (True, previous holder whose lease had run
    out, or None) when taken; (False, current holder) when another import runs."""
    async with conn.transaction():
        inserted = await conn.fetchval(
            """INSERT INTO import_locks (channel_id, import_id, owner, actor, release_event, lease_ms, lease_until)
               VALUES ($1, $2, $3, $4, $5, $6::bigint, now() + $6::bigint * interval '1 millisecond')
               ON CONFLICT (channel_id) DO NOTHING RETURNING 1""",
            channel_id, import_id, owner, actor, release_event, lease_ms,
        )
        if inserted:
            return True, None
        row = await conn.fetchrow(
            """SELECT import_id, owner, actor, release_event, published, acquired_at,
                      extract(epoch FROM lease_until - now())::float8 AS expires_in_s
                 FROM import_locks WHERE channel_id = $1 FOR UPDATE""",
            channel_id,
        )
        holder = Holder(**dict(row))
        if holder.expires_in_s > 0:
            return False, holder
        await conn.execute(
            """UPDATE import_locks SET import_id = $2, owner = $3, actor = $4, release_event = $5, published = 0,
                      lease_ms = $6::bigint, lease_until = now() + $6::bigint * interval '1 millisecond', acquired_at = now()
                WHERE channel_id = $1""",
            channel_id, import_id, owner, actor, release_event, lease_ms,
        )
        return True, holder


async def renew_lock(conn: asyncpg.Connection | asyncpg.Pool, channel_id: str, owner: str, published: int) -> bool:
    """The importer's heartbeat; False when the lock is no longer this owner's."""
    return bool(
        await conn.fetchval(
            """UPDATE import_locks SET lease_until = greatest(lease_until, now() + lease_ms * interval '1 millisecond'),
                      published = $3
                WHERE channel_id = $1 AND owner = $2 RETURNING 1""",
            channel_id, owner, published,
        )
    )


async def release_lock(conn: asyncpg.Connection | asyncpg.Pool, channel_id: str, owner: str) -> None:
    """Give the lock back before anything was published (a refusal after taking it)."""
    await conn.execute("DELETE FROM import_locks WHERE channel_id = $1 AND owner = $2", channel_id, owner)


async def lock_holder(conn: asyncpg.Connection | asyncpg.Pool, channel_id: str) -> Holder | None:
    row = await conn.fetchrow(
        """SELECT import_id, owner, actor, release_event, published, acquired_at,
                  extract(epoch FROM lease_until - now())::float8 AS expires_in_s
             FROM import_locks WHERE channel_id = $1""",
        channel_id,
    )
    return None if row is None else Holder(**dict(row))


# ---------------------------------------------------------------------------- the log

_LOG_COLUMNS = """import_id, mode, key, blank, tag, actor, file_name, columns, started_at, attempts,
                  last_actor, last_started_at, status, rows, finished_at, finished_event_id,
                  created, updated, failed"""


async def import_record(conn: asyncpg.Connection | asyncpg.Pool, channel_id: str, import_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        f"SELECT {_LOG_COLUMNS} FROM imports WHERE channel_id = $1 AND import_id = $2", channel_id, import_id
    )
    return None if row is None else dict(row)


def log_entry(r: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """An import as `unifier import log` and `GET …/imports` show it (I15, I16)."""
    kept_until = r["finished_at"] + FAILURES_KEPT_MS if r["finished_at"] is not None else None
    return {
        "importId": r["import_id"], "status": r["status"], "mode": r["mode"],
        "key": r["key"], "blank": r["blank"], "tag": r["tag"],
        "actor": r["actor"], "fileName": r["file_name"], "startedAt": r["started_at"],
        "attempts": r["attempts"], "lastActor": r["last_actor"], "lastStartedAt": r["last_started_at"],
        "finishedAt": r["finished_at"], "rows": r["rows"],
        "created": r["created"], "updated": r["updated"], "failed": r["failed"],
        "columns": r["columns"],
        "failuresAvailableUntil": kept_until if r["failed"] and (kept_until is None or kept_until > now_ms) else None,
    }


async def imports_like(conn: asyncpg.Connection | asyncpg.Pool, channel_id: str, base_id: str) -> dict[str, str]:
    """importId → status of the imports whose id is `base_id` or `base_id-N`."""
    rows = await conn.fetch(
        """SELECT import_id, status FROM imports
            WHERE channel_id = $1 AND (import_id = $2 OR import_id LIKE $2 || '-%')""",
        channel_id, base_id,
    )
    return {r[0]: r[1] for r in rows}


async def list_imports(conn: asyncpg.Connection | asyncpg.Pool, channel_id: str, limit: int = 100) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {_LOG_COLUMNS} FROM imports WHERE channel_id = $1 ORDER BY last_started_at DESC, import_id LIMIT $2",
        channel_id, limit,
    )
    return [dict(r) for r in rows]


async def failed_rows(
    conn: asyncpg.Connection, channel_id: str, import_id: str, prefetch: int = 2000,
) -> AsyncIterator[tuple[int, Sequence[str], str, dict[str, str]]]:
    """(rowNumber, errorColumns, errorReason, cells) in row order; needs a transaction."""
    async for r in conn.cursor(
        """SELECT row_number, error_columns, error_reason, cells FROM import_failures
            WHERE channel_id = $1 AND import_id = $2 ORDER BY row_number""",
        channel_id, import_id, prefetch=prefetch,
    ):
        yield r[0], r[1], r[2], r[3]


async def purge_failures(conn: asyncpg.Connection | asyncpg.Pool, now_ms: int) -> None:
    """I15: failed rows are kept 30 days after their import finished."""
    await conn.execute(
        """DELETE FROM import_failures f USING imports i
            WHERE f.channel_id = i.channel_id AND f.import_id = i.import_id
              AND i.finished_at IS NOT NULL AND i.finished_at < $1""",
        now_ms - FAILURES_KEPT_MS,
    )


async def progress(conn: asyncpg.Connection | asyncpg.Pool, channel_id: str, import_id: str) -> dict[str, Any] | None:
    """`GET …/imports/{importId}`: `running` while its importer publishes or waits (its
    lock held), `finished` once every row is applied, `abandoned` when its importer
    was stopped, `timed_out` when its importer gave up waiting (the service may still
    apply the rest: the state then becomes `finished`). None: no such import."""
    # The lock first: an import holds it from its upload until its record says how it
    # ended (the release is in the finish's transaction). Read the other way round, an
    # import applied and released between the two reads was no import at all (a 404).
    holder = await lock_holder(conn, channel_id)
    record = await import_record(conn, channel_id, import_id)
    held = holder is not None and holder.import_id == import_id and holder.expires_in_s > 0
    if record is None and not held:
        return None
    status = record["status"] if record is not None else "running"
    state = {"completed": "finished", "abandoned": "abandoned"}.get(status, "running" if held else "timed_out")
    rows = record["rows"] if record is not None and record["rows"] is not None else (holder.published if held and holder else None)
    created, updated, failed = (record["created"], record["updated"], record["failed"]) if record is not None else (0, 0, 0)
    return {
        "importId": import_id, "state": state, "rows": rows, "applied": created + updated + failed,
        "created": created, "updated": updated, "failed": failed,
    }
