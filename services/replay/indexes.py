"""A build's secondary indexes, made after the rows are in (docs/decisions.md, "Replay:
rebuild at the limit").

A resident build (`resident.py`) writes `users`, `identities`, `applied_events` and
`command_outcomes` once, at its end, by COPY. Every secondary index of those tables would otherwise be kept up
row by row during that COPY — a GIN entry per user for the tags and a JSON parse per
user for the name prefix among them — where `CREATE INDEX` over the loaded table sorts
once: measured on 35,813 users, the COPY with all indexes took 1.9–2.1 s of the
server's time against 0.3 s without them plus 0.8 s to build them after.

Only non-unique indexes are deferred. Unique ones stay, because they are constraints:
a row the store refuses must fail the COPY that wrote it (the build then redoes the log
batch by batch, `rebuild._batch_by_batch`, which also needs every index and gets them
back first). The indexes are dropped in the fresh schema before anything is written and
made again before the catch-up, the dry-run comparison or the switch reads the schema,
so nothing but the build ever sees the schema without them; a build that dies between
the two leaves a schema that is never switched to (a rebuild never reuses leftovers).
"""

from __future__ import annotations

import asyncio

import asyncpg

DEFERRED_TABLES = ("users", "identities", "applied_events", "command_outcomes")


async def defer(pool: asyncpg.Pool) -> list[str]:
    """Drop the non-unique indexes of DEFERRED_TABLES in the pool's schema; their
    definitions (schema-qualified `CREATE INDEX` statements) for `restore`."""
    rows = await pool.fetch(
        """SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i
             JOIN pg_class c ON c.oid = i.indexrelid
             JOIN pg_class t ON t.oid = i.indrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
            WHERE n.nspname = current_schema() AND t.relname = ANY($1::text[]) AND NOT i.indisunique
            ORDER BY c.relname""",
        list(DEFERRED_TABLES),
    )
    if rows:
        await pool.execute("DROP INDEX " + ", ".join(f'"{r[0]}"' for r in rows))
    return [r[1] for r in rows]


RESTORE_CONNECTIONS = 4
"""Indexes made at once by `restore` (the build's pool holds as many connections). More
than the two cores: an index build also waits (its writes and the sync of its file at the
end), and with two at a time the ten indexes of a 200k-event build took 1.7–2.1 s of wall
time where four at a time took 1.1–1.5 (docs/decisions.md, "Issue 14, session 12")."""


async def restore(pool: asyncpg.Pool, definitions: list[str]) -> None:
    """Make the indexes `defer` dropped, up to RESTORE_CONNECTIONS at once on the
    pool's connections (the build is over: the cores are free for PostgreSQL's sorts)."""
    queue = list(definitions)

    async def worker() -> None:
        async with pool.acquire() as conn:
            while queue:
                await conn.execute(queue.pop(0))

    await asyncio.gather(*(worker() for _ in range(min(len(queue), RESTORE_CONNECTIONS, pool.get_max_size()))))
