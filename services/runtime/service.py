"""`unifier run`: the projection, the unification saga (inside the projection's
transactions) and the outbox relay in one process, until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from aiokafka.errors import KafkaError

import services.domain as domain
from contracts.topics import Topics
from services.api.app import create_app
from services.api.server import serve
from services.lookup.worker import run_worker
from services.platform import metrics
from services.platform.config import Settings
from services.platform.embedded import embedded_log_id, infrastructure
from services.platform.topics import ensure_topics
from services.projection.consumer import Projection
from services.relay.relay import Relay
from services.runtime.projections import run_extra_projections
from services.runtime.relay_process import run_relay_process
from services.store import repository as repo
from services.store.pool import DATABASE_UNAVAILABLE, create_pool

log = logging.getLogger("unifier")
T = TypeVar("T")


async def run_service(
    settings: Settings, stop: asyncio.Event | None = None, *, ready: asyncio.Event | None = None,
    api_address: asyncio.Future[str] | None = None,
    api_started: Callable[[str, Settings], Awaitable[None]] | None = None,
) -> None:
    """Run until `stop` (default: SIGTERM/SIGINT). `api_address` receives the address
    the HTTP API listens on (UNIFIER_HTTP_ADDR; port 0 picks a free one); `api_started`
    is then called with it and the settings of the broker and database in use (the
    embedded ones' addresses filled in), e.g. to greet a newcomer (`make run`)."""
    if stop is None:  # run as the process's main service: stop on SIGTERM/SIGINT
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
    topics = Topics(settings.topic_prefix)
    async with infrastructure(settings) as (bootstrap, database_url):
        # Health is served from the first moment, so an orchestrator sees "degraded"
        # while the broker or the database is still away, rather than a crash loop.
        parts: dict[str, Callable[[], bool]] = {"broker": lambda: False, "database": lambda: False}
        server = await metrics.serve(
            settings.metrics_port, lambda: {name: ok() for name, ok in parts.items()},
            host=settings.metrics_host, read_timeout=settings.metrics_read_timeout,
        )
        try:
            async def topics_exist() -> bool:
                await ensure_topics(bootstrap, settings.topic_prefix, settings.partitions)
                return True

            if not await until_up("broker", topics_exist, stop):
                return
            parts["broker"] = lambda: True
            pool = await until_up("database", lambda: create_pool(database_url, settings.db_schema, max_size=6), stop)
            if pool is None:
                return
            parts["database"] = lambda: True
            try:
                api = settings.replace(kafka_bootstrap=bootstrap, database_url=database_url)
                await _serve(settings, topics, bootstrap, pool, stop, parts, ready, (api, api_address, api_started))
            finally:
                await pool.close()
        finally:
            server.close()
    log.info("unifier stopped cleanly")


async def _serve(
    settings: Settings, topics: Topics, bootstrap: str, pool: asyncpg.Pool, stop: asyncio.Event,
    parts: dict[str, Callable[[], bool]], ready: asyncio.Event | None,
    api: tuple[Settings, asyncio.Future[str] | None, Callable[[str, Settings], Awaitable[None]] | None],
) -> None:
    if not settings.kafka_bootstrap and (log_id := embedded_log_id(settings.data_dir)) is not None:
        if await repo.adopt_log(pool, log_id):
            log.warning("the embedded broker started with an empty log: inbound offsets restart at 0")
    projection = Projection(
        pool, bootstrap, topics, settings.consumer_group, settings.batch_max, settings.resident_users,
        session_timeout_ms=settings.kafka_session_timeout_ms, assignor=settings.partition_assignor, pipelined=settings.pipelined,
    )
    parts["projection"] = lambda: projection.healthy
    api_settings, bound, api_started = api
    # The relay stops only after the projection has committed its last batch, so that
    # batch's changes leave with this process instead of waiting for the next start.
    relay_stop = asyncio.Event()
    consuming = asyncio.create_task(projection.run(stop), name="projection")
    if settings.relay_process:  # in a process of its own (relay_process.py), given the broker and database in use
        parts["relay"] = lambda: False
        relaying = asyncio.create_task(run_relay_process(api_settings, relay_stop, parts), name="relay")
    else:
        relay = Relay(
            pool, bootstrap, f"unifier-relay:{settings.db_schema}", idempotence=settings.kafka_idempotence,
            max_message_bytes=settings.max_message_bytes,
        )
        parts["relay"] = lambda: relay.healthy
        relaying = asyncio.create_task(relay.run(relay_stop), name="relay")
    # The HTTP API stops with `stop` too: requests in flight finish, new ones are refused.
    bound = bound if bound is not None else asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(serve(create_app(api_settings), settings.http_addr, stop, bound=bound), name="http-api")
    # Automatic lookups (seed 004 §2): outside the projection's transactions.
    looking_up = asyncio.create_task(run_worker(settings, pool, bootstrap, topics.commands, stop, parts), name="lookups")
    # UNIFIER_PROJECTION_PROCESSES − 1 more projection processes in the same group
    # (projections.py); they are given the broker and database in use, never embedded ones.
    extras = asyncio.create_task(run_extra_projections(api_settings, stop), name="projection-processes")
    tasks = [consuming, relaying, serving, looking_up, extras]

    async def announce() -> None:  # beside the tasks above: its end must not stop the service
        if api_started is not None:
            try:
                await api_started(await bound, api_settings)
            except Exception:
                log.exception("the api_started hook failed")

    announcing = asyncio.create_task(announce(), name="api-started")
    log.info("unifier running: topics %s*, schema %s, domain core %s (UNIFIER_CORE)",
             settings.topic_prefix, settings.db_schema, domain.CORE)
    if ready is not None:
        ready.set()
    try:
        done, _ = await asyncio.wait([*tasks, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task in tasks and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        stop.set()
        await consuming
        await extras  # their last batches' changes leave with the relay below
        await serving
        await looking_up
        relay_stop.set()
        await relaying
    finally:
        stop.set()
        relay_stop.set()
        announcing.cancel()
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def until_up(what: str, connect: Callable[[], Awaitable[T]], stop: asyncio.Event) -> T | None:
    """`connect()` retried with backoff (capped at 10 s) until it succeeds; None if told
    to stop first. Each failure is logged with its cause."""
    failures = 0
    while not stop.is_set():
        try:
            return await connect()
        except (*DATABASE_UNAVAILABLE, KafkaError) as err:
            failures += 1
            delay = min(0.5 * 2 ** min(failures, 5), 10.0)
            log.warning("%s unavailable (%s: %s); retrying in %.1f s", what, type(err).__name__, err, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    return None
