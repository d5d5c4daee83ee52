"""Switch the live schema to a rebuilt one, atomically, while the service runs.

One transaction on its own connection:
1. `LOCK TABLE live.inbox_offsets, live.outbox, live.channels, live.import_locks IN
   ACCESS EXCLUSIVE MODE`. Every projection batch starts by writing `inbox_offsets`,
   so this waits for the batch in flight to commit and holds the next one at its
   first statement; the relay's next statement, `channel configure` and the
   importer's lease wait too. Reads (`user show`, the digest) never touch these tables
   and go on.
2. Under the lock, the caller catches the rebuilt schema up to the live offsets (the
   records the live service applied while the rebuild ran), so the rebuilt inbox is
   at or past the live one in every partition and the live service continues after
   the switch without a gap (records it then fetches below the rebuilt offsets are
   skipped by the inbox, and its consumer jumps ahead to the stored offsets).
3. The operational tables (`OPERATIONAL`: channel settings, import leases) are copied
   from the live schema as they are now. The rebuilt outbox is emptied and replaced
   by the live outbox's pending rows, ids kept, sequence moved past them: nothing of
   history is re-sent (every `user-changed` and dead letter in the rebuilt outbox was
   published when it first happened, and re-sending millions of them would flood
   downstream consumers for no change), and nothing the live relay had not yet
   published is lost.
4. `ALTER SCHEMA live RENAME TO archive; ALTER SCHEMA rebuilt RENAME TO live`, commit.

The running service's pool keeps its connections: their `search_path` is the schema
*name*, and PostgreSQL resolves names per statement (and re-plans cached statements
when the search path's schemas change), so the next statement of every open
connection reads the rebuilt tables. A projection batch that was waiting on the lock
may run its first statement (an idempotent `INSERT … ON CONFLICT DO NOTHING` into
`inbox_offsets`) against the archived table; its following statements, which lock
and read the offsets, already resolve to the rebuilt schema, where every inbound
partition has its row. The archive stays for inspection or rollback (rename back)
unless it is dropped.

The digest is taken on a second connection whose REPEATABLE READ snapshot is opened
after the catch-up and before the commit: it sees exactly the rebuilt state the live
service continues from, without holding the lock while it reads every user. A third
connection imports that snapshot and reads the digest's other tables meanwhile. A
rebuild that caught up nothing after its build has the digest already (taken of the
built schema while its indexes were made, replay._rebuild): the state switched to is
that one, and the switch returns it without reading it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

from .digest import digest_in_transaction, share
from .log import Partition
from .rebuild import stored_offsets

OPERATIONAL = ("channels", "import_locks", "outbox_parked", "dead_letter_retries", "api_keys", "lookup_queue")
"""Tables that are not derived from facts (configuration, leases): carried over from
the live schema instead of rebuilt. A new such table must be added here."""

CatchUp = Callable[[asyncpg.Connection, dict[Partition, int]], Awaitable[None]]


async def switch(
    database_url: str, live: str, rebuilt: str, archive: str, catch_up: CatchUp, *, lock_timeout_s: float = 60.0,
    then: Callable[[], Awaitable[None]] | None = None, known: Callable[[], str | None] | None = None,
) -> str:
    """Swap `rebuilt` in as `live` (renaming `live` to `archive`); the digest of the
    state switched to. `catch_up(conn, live_offsets)` runs under the lock; `then()`
    (e.g. dropping the archive) after the switch committed, beside the digest.
    `known()`, asked after the catch-up: the digest of the state switched to when the
    caller has it already (a rebuild that caught up nothing took it while its indexes
    were made), else None: then it is read here, on the snapshot of the switch."""
    conn = await asyncpg.connect(database_url)
    snap = await asyncpg.connect(database_url, server_settings={"search_path": live})
    other = await asyncpg.connect(database_url, server_settings={"search_path": live})  # the digest's other tables
    try:
        snapshot = snap.transaction(isolation="repeatable_read", readonly=True)
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout_s * 1000)}ms'")
            operational = [t for t in OPERATIONAL if await conn.fetchval("SELECT to_regclass($1)", f'"{live}".{t}')]
            locked = ", ".join(f'"{live}".{t}' for t in ("inbox_offsets", "outbox", *operational))
            await conn.execute(f"LOCK TABLE {locked} IN ACCESS EXCLUSIVE MODE")
            await catch_up(conn, await stored_offsets(conn, live))
            digest = known() if known is not None else None
            for table in operational:
                if table != "channels":  # copied by catch_up, before it applies anything
                    await conn.execute(f'DELETE FROM "{rebuilt}".{table}')
                    await conn.execute(f'INSERT INTO "{rebuilt}".{table} SELECT * FROM "{live}".{table}')
            await conn.execute(f'TRUNCATE "{rebuilt}".outbox')
            await conn.execute(
                f'INSERT INTO "{rebuilt}".outbox (id, topic, key, value, n, keys, vals) '  # packs too (schema.sql)
                f'SELECT id, topic, key, value, n, keys, vals FROM "{live}".outbox ORDER BY id'
            )
            await conn.execute(
                f"""SELECT setval('"{rebuilt}".outbox_id_seq',
                       GREATEST((SELECT last_value FROM "{live}".outbox_id_seq), 1))"""
            )
            if digest is None:
                await snapshot.start()
                # The snapshot is taken at the first statement, and exported for the
                # digest's second reader (`digest.share`).
                shared = await snap.fetchval("SELECT pg_export_snapshot()")
            await conn.execute(f'ALTER SCHEMA "{live}" RENAME TO "{archive}"')
            await conn.execute(f'ALTER SCHEMA "{rebuilt}" RENAME TO "{live}"')
        if digest is not None:
            if then is not None:
                await then()
            return digest
        beside = await share(other, shared)
        read, _ = await asyncio.gather(
            digest_in_transaction(snap, other if beside is not None else None), then() if then is not None else _nothing(),
        )
        if beside is not None:
            await beside.commit()
        await snapshot.commit()
        return read
    finally:
        await other.close()
        await snap.close()
        await conn.close()


async def _nothing() -> None:
    return None
