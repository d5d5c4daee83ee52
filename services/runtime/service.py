"""`unifier run`: the projection, the unification saga (inside the projection's
transactions) and the outbox relay in one process, until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from contracts.topics import Topics
from services.projection.consumer import Projection
from services.relay.relay import Relay
from services.store import repository as repo
from services.store.pool import create_pool

from . import metrics
from .config import Settings
from .embedded import embedded_log_id, infrastructure
from .topics import ensure_topics

log = logging.getLogger("unifier")


async def run_service(settings: Settings, stop: asyncio.Event | None = None, *, ready: asyncio.Event | None = None) -> None:
    if stop is None:  # run as the process's main service: stop on SIGTERM/SIGINT
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
    topics = Topics(settings.topic_prefix)
    async with infrastructure(settings) as (bootstrap, database_url):
        await ensure_topics(bootstrap, settings.topic_prefix, settings.partitions)
        pool = await create_pool(database_url, settings.db_schema, max_size=6)
        if not settings.kafka_bootstrap and (log_id := embedded_log_id(settings.data_dir)) is not None:
            if await repo.adopt_log(pool, log_id):
                log.warning("the embedded broker started with an empty log: inbound offsets restart at 0")
        projection = Projection(pool, bootstrap, topics, settings.consumer_group, settings.batch_max)
        relay = Relay(pool, bootstrap, f"unifier-relay:{settings.db_schema}")
        server = await metrics.serve(
            settings.metrics_port, lambda: {"projection": projection.healthy, "relay": relay.healthy}
        )
        tasks = [asyncio.create_task(projection.run(stop), name="projection"), asyncio.create_task(relay.run(stop), name="relay")]
        log.info("unifier running: topics %s*, schema %s", settings.topic_prefix, settings.db_schema)
        if ready is not None:
            ready.set()
        try:
            done, _ = await asyncio.wait([*tasks, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task in tasks and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            stop.set()
            await asyncio.gather(*tasks)
        finally:
            stop.set()
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            server.close()
            await pool.close()
            log.info("unifier stopped cleanly")
