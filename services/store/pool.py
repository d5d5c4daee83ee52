"""The one asyncpg pool: json and jsonb codecs registered once, search_path set to our schema."""

from __future__ import annotations

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


async def ensure_schema(database_url: str, schema: str) -> None:
    """Create the schema and its tables if missing (idempotent; safe for racing instances)."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            # Serialise concurrent migrations of the same schema.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"unifier-migrate:{schema}")
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(f'SET LOCAL search_path TO "{schema}"')
            for script in _SCRIPTS:
                await conn.execute(resources.files("services.store").joinpath(script).read_text())
    finally:
        await conn.close()


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
