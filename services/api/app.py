"""The app factory: one FastAPI app, one asyncpg pool, one Kafka producer (faststream's
KafkaRouter, whose lifecycle is the app's), one router per resource."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from contracts import CONTRACT_VERSION
from contracts.topics import Topics
from services.platform.config import Settings
from services.platform.kafka import client_options, compression
from services.store.pool import create_pool, schema_exists

from . import problems
from .commands import CommandBus
from .hot import HotReads
from .routes import (
    channel_settings,
    commands,
    grades,
    imports,
    lookups,
    members,
    unifications,
    users,
)

with warnings.catch_warnings():  # "moved to faststream_fastapi": still the 0.7 integration
    warnings.simplefilter("ignore", DeprecationWarning)
    from faststream.kafka.fastapi import KafkaRouter
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

API_VERSION = CONTRACT_VERSION  # the HTTP API is part of the one contract (docs/contract.md)
POOL_SIZE = 10
HOT_POOL_SIZE = 4

_DESCRIPTION = """The HTTP API of Unifier (docs/contract.md, "HTTP API").

Reads come from PostgreSQL; every write becomes a fact on `identity.commands`, applied by
the service like any other. Authenticate with `Authorization: Bearer <key>` (keys from
`unifier api-key create`)."""


def create_app(settings: Settings) -> FastAPI:
    """The API on `settings.database_url` and `settings.kafka_bootstrap` (both resolved:
    the composition root starts or finds embedded ones first)."""
    if not settings.database_url or not settings.kafka_bootstrap:
        raise ValueError("create_app needs settings with database_url and kafka_bootstrap set")
    database_url, topic = settings.database_url, Topics(settings.topic_prefix).commands

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The API migrates only a database nobody has set up yet: beside a running
        # projection its DDL would queue for table locks behind batches, and batches
        # behind it (`unifier run` migrates before it starts the projection).
        migrate = not await schema_exists(database_url, settings.db_schema)
        app.state.pool = await create_pool(database_url, settings.db_schema, max_size=POOL_SIZE, migrate=migrate)
        # The hot reads' own few connections (hot.py), with generic plans: their statements
        # (a user by id, by e-mail) have one plan whatever the values, and planning them
        # cost PostgreSQL more than running them.
        app.state.hot_pool = await create_pool(database_url, settings.db_schema, max_size=HOT_POOL_SIZE, migrate=False,
                                               generic_plans=True)
        app.state.bus = CommandBus(app.state.pool, publish)
        app.state.imports = set()  # imports publishing in the background (routes/imports.py)
        try:
            yield
        finally:
            for task in list(app.state.imports):  # stopped: each says "abandoned" on the log
                task.cancel()
            await asyncio.gather(*app.state.imports, return_exceptions=True)
            await app.state.bus.close()
            if getattr(app.state, "lookups", None) is not None:  # routes/lookups.py made one
                await app.state.lookups.aclose()
            await app.state.hot_pool.close()
            await app.state.pool.close()

    # The producer settings of the rest (relay, importer): acks from every replica,
    # idempotence only where the broker supports it (tansu refuses it, docs/design.md),
    # the configured codec (kafka.producer_options).
    kafka = KafkaRouter(
        settings.kafka_bootstrap, acks="all", enable_idempotence=settings.kafka_idempotence, linger_ms=1,
        compression_type=compression(),
        security=_security(client_options(settings.kafka_bootstrap)),
        schema_url=None, include_in_schema=False, lifespan=lifespan, logger=None,
    )

    async def publish(value: bytes, key: bytes) -> None:
        await kafka.broker.publish(value, topic, key=key)

    app = FastAPI(
        title="Unifier", version=API_VERSION, description=_DESCRIPTION,
        openapi_url="/openapi.json", docs_url="/docs", redoc_url=None,
    )
    app.state.settings = settings
    problems.install(app)
    # The two hot reads' plain successes, before routing (hot.py; everything else, and
    # every refusal, is the routes').
    app.add_middleware(HotReads)
    app.include_router(kafka)
    for module in (users, members, unifications, grades, commands, imports, channel_settings, lookups):
        app.include_router(module.router)
    # -- the staff console (issue 13) is mounted here, at /console/ ----------------------
    from services.console import mount as mount_console

    mount_console(app)
    return app


def _security(options: dict[str, Any]) -> BaseSecurity | None:
    """The broker security every other client uses (services/platform/kafka.py), in
    faststream's terms."""
    protocol = options.get("security_protocol", "PLAINTEXT")
    if protocol == "PLAINTEXT":
        return None
    ssl_context = options.get("ssl_context")
    if not protocol.startswith("SASL_"):
        return BaseSecurity(ssl_context=ssl_context)
    sasl = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}[options["sasl_mechanism"]]
    return sasl(options["sasl_plain_username"], options["sasl_plain_password"], ssl_context=ssl_context,
                use_ssl=protocol == "SASL_SSL")
