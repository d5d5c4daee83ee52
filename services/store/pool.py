"""The one asyncpg pool: json and jsonb codecs registered once, search_path set to our schema."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import TYPE_CHECKING, Any

import asyncpg
import asyncpg.protocol.protocol as _protocol
import orjson

from services.store.rows import STAGE_USERS

if TYPE_CHECKING:
    from services.platform.config import Settings

log = logging.getLogger(__name__)


# What asyncpg's array codec takes for an array (or a sub-array), as concrete types.
# asyncpg 0.32 asks `isinstance(x, collections.abc.Iterable)`, then `Sized`, of the
# value and of every element of it (codecs/array.pyx, `_is_array_iterable`): a
# Python-level ABCMeta.__instancecheck__ call each, two for a text element. The live
# projection passes ~10 array elements an event (users' columns, applied eventIds,
# identity keys, activities): ~17 such calls an event, half of the codec's work
# (docs/decisions.md, "Issue 14, session 9: array parameters"). Against a tuple of types
# isinstance is answered in C: an exact type match at once, each other type in the tuple
# ~250 instructions more. So `str`, most elements, comes first (Iterable and Sized, then
# excluded as the "trivial container" it is, as before), then the containers this code
# passes as arrays. What changes: an array parameter must be a list, tuple, set or
# frozenset (before: any sized iterable but a str, bytes or mapping; no other is passed
# here); an element that is not a list, tuple, set or frozenset is one element, as
# before. Only the array codec reads these two names (Mapping, read by the record codec
# too, is left as it is); tests/integration/test_store.py pins the names and the
# encodings, so an asyncpg that reads them differently fails there.
ARRAY_CONTAINERS: tuple[type, ...] = (str, list, tuple, set, frozenset)


def _fast_array_checks() -> None:
    if getattr(_protocol, "IterableABC", None) is not None and getattr(_protocol, "SizedABC", None) is not None:
        _protocol.IterableABC = ARRAY_CONTAINERS  # type: ignore[attr-defined]
        _protocol.SizedABC = ARRAY_CONTAINERS  # type: ignore[attr-defined]


_fast_array_checks()


def _encode_jsonb(value: Any) -> bytes:
    return b"\x01" + orjson.dumps(value)


def _decode_jsonb(data: bytes) -> Any:
    return orjson.loads(data[1:])


async def _init(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_encode_jsonb, decoder=_decode_jsonb, format="binary"
    )
    # json's binary form is its text (what a query such as `state::json -> 'k'` answers).
    await conn.set_type_codec("json", schema="pg_catalog", encoder=orjson.dumps, decoder=orjson.loads, format="binary")
    # The session's staging table of the users' rows (repository.save_user_rows).
    await conn.execute(STAGE_USERS)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Returning a connection to the pool: asyncpg still rolls back an open transaction
    and drops listener callbacks, but skips its reset query (`SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`): one round trip on
    every release, 11 % of the API's CPU per command (docs/decisions.md, "HTTP API:
    commands measured"). Nothing here leaves session state behind a release: locks are
    transaction-scoped but the relay's, which it releases itself; SET is always LOCAL;
    LISTENs are removed by their holders (remove_listener runs UNLISTEN)."""


async def create_pool(
    database_url: str, schema: str, *, min_size: int = 1, max_size: int = 4, migrate: bool = True,
    generic_plans: bool = False,
) -> asyncpg.Pool:
    """`migrate=False`: use the schema as it is (its DDL takes table locks: a process
    that only reads and publishes must not queue them behind a running projection's
    batches, nor a batch behind them). `generic_plans=True`:
    PostgreSQL's default plan cache (a prepared statement planned once per connection
    when the plan does not depend on the values), for statements whose plan is the same
    whatever the values (the API's hot reads: planning cost more than executing)."""
    if migrate:
        await ensure_schema(database_url, schema)
    return await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        init=_init,
        reset=_keep_session,
        # random_page_cost 1.1 (default 4, for spinning disks): the working set is cached,
        # and at 4 the planner looked up a small batch's users and identities by a seq
        # scan of both tables (7 ms instead of 2 for 50 keys on 20k identities).
        server_settings={
            "search_path": schema, "application_name": "unifier",
            "plan_cache_mode": "auto" if generic_plans else "force_custom_plan",
            "random_page_cost": "1.1",
        },
    )


async def schema_exists(database_url: str, schema: str) -> bool:
    """Whether `schema` holds the service's tables (a `unifier run` has created them)."""
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f'"{schema}".users') is True
    finally:
        await conn.close()


# schema.sql first: the later scripts may index its tables.
_SCRIPTS = ("schema.sql", "imports.sql", "operations.sql", "lookups.sql")
# The `meta` row naming the scripts a schema was last migrated with (their SHA-256).
SCRIPTS_KEY = "schema.scripts"
_DEADLOCK_ATTEMPTS = 5


def _scripts() -> tuple[list[str], str]:
    """The migration scripts' texts, and their digest."""
    texts = [resources.files("services.store").joinpath(script).read_text() for script in _SCRIPTS]
    return texts, hashlib.sha256("\0".join(texts).encode()).hexdigest()


async def ensure_schema(database_url: str, schema: str) -> None:
    """Create the schema and its tables if missing, and bring an older one up to this
    version (idempotent; safe for racing instances).

    A schema already migrated by these very scripts is left alone, without a statement
    that locks a table: DDL does, even `CREATE INDEX IF NOT EXISTS` of an index that
    exists, and an importer or admin command starting beside a running projection then
    queued behind its batch and it behind them — PostgreSQL saw a deadlock and the import
    failed (issue 14, session 21). A migration that still meets one (a new version's first
    start beside running instances) is retried."""
    texts, digest = _scripts()
    conn = await asyncpg.connect(database_url)
    try:
        if await _migrated_with(conn, schema) == digest:
            return
        for attempt in range(1, _DEADLOCK_ATTEMPTS + 1):
            try:
                async with conn.transaction():
                    # Serialise concurrent migrations of the same schema.
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"unifier-migrate:{schema}")
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                    await conn.execute(f'SET LOCAL search_path TO "{schema}"')
                    for text in texts:
                        await conn.execute(text)
                    await conn.execute(
                        "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2",
                        SCRIPTS_KEY, digest,
                    )
                return
            except asyncpg.DeadlockDetectedError:
                # PostgreSQL rolled this migration back and let the other side through.
                if attempt == _DEADLOCK_ATTEMPTS:
                    raise
                log.warning("schema migration of %s deadlocked with a running transaction; retrying", schema)
                await asyncio.sleep(0.1 * attempt)
    finally:
        await conn.close()


async def _migrated_with(conn: asyncpg.Connection, schema: str) -> str | None:
    """The digest of the scripts `schema` was last migrated with (None: none recorded)."""
    meta = await conn.fetchval("SELECT to_regclass($1)::text", f'"{schema}".meta')
    if meta is None:
        return None
    value: str | None = await conn.fetchval(f'SELECT value FROM "{schema}".meta WHERE key = $1', SCRIPTS_KEY)
    return value


DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    TimeoutError,
    asyncpg.PostgresConnectionError,  # the connection is gone
    asyncpg.InterfaceError,  # ... and asyncpg noticed while using it
    asyncpg.InternalClientError,  # a connection left mid-protocol by a terminated backend
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash shutdown, cannot connect now
)
"""Errors that mean "the database went away", not "this batch is wrong": the work is
retried on a fresh connection, never dropped or half-applied (each unit is one
transaction)."""


@asynccontextmanager
async def borrow(source: asyncpg.Connection | asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """The given connection, or one borrowed from the given pool for the block: for
    functions that callers use both inside their own transaction and on their own."""
    if isinstance(source, asyncpg.Pool):
        async with source.acquire() as conn:
            yield conn
    else:
        yield source


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the configured database, else on the embedded one under the data dir
    (joined if `unifier run` is running, started otherwise)."""
    if settings.database_url:
        pool = await create_pool(settings.database_url, settings.db_schema)
        try:
            yield pool
        finally:
            await pool.close()
        return
    from services.platform.embedded import EmbeddedForbidden, EmbeddedPostgres

    if not settings.embedded_allowed:
        raise EmbeddedForbidden("UNIFIER_EMBEDDED=0: set DATABASE_URL")

    async with EmbeddedPostgres(settings.data_dir / "pg") as pg:
        pool = await create_pool(pg.url, settings.db_schema)
        try:
            yield pool
        finally:
            await pool.close()
