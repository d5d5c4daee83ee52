"""What became of each command (docs/decisions.md, "HTTP API: commands measured").

`command_outcomes` holds one row per command of `identity.commands` the projection
decided: applied (`code` NULL) or rejected with its dead letter's code and reason. It is
written in the batch's transaction, so an outcome is there exactly when the command's
effects are, and it is what `GET …/commands/{eventId}` reads — also for a command older
than the eventId window, which `applied_events` has forgotten (projection/window.py).

It is kept for `KEEP_MS` (90 days) of the channel's command time: each batch that
decides commands of a channel deletes that channel's outcomes older than its latest
command minus `KEEP_MS`. Commands are the staff's and the product's writes, a small
share of the facts, so 90 days is small beside `applied_events`' 7 days of every fact.

`forget_and_announce` tells the HTTP API processes waiting on commands (`?wait=`) what was
decided, by NOTIFY on `unifier_commands` from the same transaction: delivered at
commit, never before, so a waiter told "applied" reads the applied user.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import orjson

KEEP_MS = 90 * 24 * 60 * 60 * 1000
CHANNEL = "unifier_commands"
"""The NOTIFY channel. Payload: the schema's name, a newline, then a JSON list of
[channelId, eventId, "a"|"r"] (applied / rejected): PostgreSQL's channels are per
database, and tests and benches share databases with a schema each."""
_PAYLOAD_BYTES = 7000  # NOTIFY refuses payloads of 8,000 bytes and more

Outcome = tuple[str, str, int, str | None, str | None]
"""(channel, eventId, event time, code, reason); code None: applied."""


async def save(conn: asyncpg.Connection, rows: Sequence[Outcome]) -> None:
    """Store the outcomes, in fact order. Applied wins: a rejection never replaces an
    applied outcome of the same eventId (a repeat of an applied command past the
    eventId window may be refused where the first was applied)."""
    kept = decisive(rows)
    if kept:
        await conn.execute(
            """INSERT INTO command_outcomes (channel_id, event_id, at, code, message)
               SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[])
               ON CONFLICT (channel_id, event_id) DO UPDATE
                  SET at = EXCLUDED.at, code = EXCLUDED.code, message = EXCLUDED.message
                WHERE EXCLUDED.code IS NULL OR command_outcomes.code IS NOT NULL""",
            *[list(col) for col in zip(*kept, strict=True)],
        )


def decisive(rows: Sequence[Outcome]) -> list[Outcome]:
    """One outcome per (channel, eventId), in fact order: the last, but an applied one
    is not replaced by a later rejection (one statement cannot touch a row twice)."""
    kept: dict[tuple[str, str], Outcome] = {}
    for row in rows:
        old = kept.get((row[0], row[1]))
        if old is None or row[3] is None or old[3] is not None:
            kept[(row[0], row[1])] = row
    return list(kept.values())


async def forget_and_announce(
    conn: asyncpg.Connection, channel_ids: Sequence[str], decided: Sequence[tuple[str, str, bool]],
    keep_ms: int = KEEP_MS,
) -> None:
    """Delete the outcomes of `channel_ids` older than their latest command - keep_ms,
    and NOTIFY the (channel, eventId, applied?) decided in this transaction (a command
    skipped as a repeat of an applied eventId counts as applied). One statement: a
    round trip less in every batch that decides commands. After `save`, so that the
    clocks include this batch's commands."""
    if not channel_ids and not decided:
        return
    await conn.execute(
        f"""WITH forgotten AS (
                DELETE FROM command_outcomes o
                 USING (SELECT c, (SELECT max(at) FROM command_outcomes WHERE channel_id = c) AS clock
                          FROM unnest($1::text[]) AS c) k
                 WHERE o.channel_id = k.c AND o.at < k.clock - $2::bigint
                RETURNING 1)
            SELECT pg_notify('{CHANNEL}', current_schema() || E'\\n' || x) FROM unnest($3::text[]) AS x""",
        sorted(set(channel_ids)), keep_ms, payloads(decided),
    )


def payloads(decided: Sequence[tuple[str, str, bool]]) -> list[str]:
    """`decided` as JSON lists of at most _PAYLOAD_BYTES each (ids are bounded by the
    inbound limits, so one entry always fits)."""
    out: list[str] = []
    chunk: list[list[str]] = []
    size = 0
    for channel, event_id, applied in decided:
        entry = [channel, event_id, "a" if applied else "r"]
        n = len(orjson.dumps(entry)) + 1
        if chunk and size + n > _PAYLOAD_BYTES:
            out.append(orjson.dumps(chunk).decode())
            chunk, size = [], 0
        chunk.append(entry)
        size += n
    if chunk:
        out.append(orjson.dumps(chunk).decode())
    return out


def parse(payload: str, schema: str) -> list[tuple[str, str, bool]]:
    """The (channel, eventId, applied?) of a notification for `schema` (none for others)."""
    named, _, body = payload.partition("\n")
    if named != schema or not body:
        return []
    try:
        return [(str(c), str(e), flag == "a") for c, e, flag in orjson.loads(body)]
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return []
