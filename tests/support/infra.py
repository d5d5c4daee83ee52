"""Infrastructure for the integration and end-to-end tests (docs/design.md, "Infrastructure
for development and tests").

One broker and one PostgreSQL per test session, picked in order: the URLs in
`KAFKA_BOOTSTRAP_SERVERS` / `DATABASE_URL`; containers if a Docker engine answers; else
the embedded tansu broker and the local PostgreSQL on 127.0.0.1:5432 (or an embedded
one). Tests share them but not their names: each gets its own topic prefix, consumer
group and schema, so they can neither see nor disturb each other.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from services.platform.config import Settings
from services.platform.embedded import EmbeddedBroker, EmbeddedPostgres, free_port, wait_for_kafka

log = logging.getLogger(__name__)

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
KAFKA_IMAGE = "apache/kafka:3.9.1"
POSTGRES_IMAGE = "postgres:16-alpine"


@dataclass(frozen=True)
class Infra:
    """Where the session's broker and database are, and what provides them."""

    bootstrap: str
    database_url: str
    kafka_source: str  # "env" | "container" | "embedded"
    postgres_source: str  # "env" | "container" | "local" | "embedded"


@asynccontextmanager
async def session_infrastructure(work_dir: Path) -> AsyncIterator[Infra]:
    """Start (or find) a broker and a database for the session; stop what was started."""
    async with AsyncExitStack() as stack:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
        database_url = os.environ.get("DATABASE_URL", "").strip()
        kafka_source = postgres_source = "env"
        docker = (not bootstrap or not database_url) and docker_available()
        if not bootstrap:
            if docker:
                bootstrap, kafka_source = await _kafka_container(stack), "container"
            else:
                broker = await stack.enter_async_context(EmbeddedBroker(work_dir))
                bootstrap, kafka_source = broker.bootstrap, "embedded"
        if not database_url:
            if docker:
                database_url, postgres_source = await _postgres_container(stack), "container"
            elif await _accepts_connections(LOCAL_POSTGRES):
                database_url, postgres_source = LOCAL_POSTGRES, "local"
            else:
                pg_dir = stack.enter_context(private_dir("unifier-test-pg-"))
                pg = await stack.enter_async_context(EmbeddedPostgres(pg_dir / "pg"))
                database_url, postgres_source = pg.url, "embedded"
        infra = Infra(bootstrap, database_url, kafka_source, postgres_source)
        log.info("test infrastructure: %s", infra)
        yield infra


@contextmanager
def private_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder outside pytest's: every pytest session on the machine chmods
    /tmp/pytest-of-<user> back to 0700 and deletes old runs, which would lock out (or
    delete) an embedded PostgreSQL, whose server runs as another system user."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def docker_available(timeout: float = 1.0) -> bool:
    """Whether a Docker engine answers a ping; False at once when there is no socket."""
    host = os.environ.get("DOCKER_HOST", "")
    if not host and not os.path.exists("/var/run/docker.sock"):
        return False
    try:
        import docker

        return bool(docker.from_env(timeout=max(1, int(timeout))).ping())
    except Exception:
        return False


async def _kafka_container(stack: AsyncExitStack) -> str:
    """A single-node KRaft `apache/kafka`. The advertised port must be known before the
    broker starts, so a free host port is bound instead of a mapped random one."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.docker_client import DockerClient

    host, port = DockerClient().host(), free_port()
    container = DockerContainer(KAFKA_IMAGE).with_bind_ports(9092, port)
    for key, value in {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }.items():
        container.with_env(key, value)
    await asyncio.to_thread(container.start)
    stack.callback(container.stop)
    bootstrap = f"{host}:{port}"
    await wait_for_kafka(bootstrap, timeout=120)
    return bootstrap


async def _postgres_container(stack: AsyncExitStack) -> str:
    from testcontainers.community.postgres import PostgresContainer

    container = PostgresContainer(POSTGRES_IMAGE, driver=None)
    await asyncio.to_thread(container.start)
    stack.callback(container.stop)
    url: str = container.get_connection_url()
    return url


async def _accepts_connections(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


# The projection's consumer-group session in tests (UNIFIER_KAFKA_SESSION_TIMEOUT_MS).
# tansu holds every group join for half the session, at least 1 s: with the default
# 10 s each service start (~70 in the suite) waited 5 s before consuming, and stopping a
# just-started service waited for that join too. 3 s joins in 2 s and still tolerates a
# loaded machine (a heartbeat each second, dropped after 3 s without one).
TEST_SESSION_TIMEOUT_MS = 3000


def isolated_settings(infra: Infra, data_dir: Path) -> Settings:
    """Settings on the session's infrastructure with names no other test uses."""
    tag = secrets.token_hex(4)
    return Settings.from_env({}).replace(
        kafka_bootstrap=infra.bootstrap,
        database_url=infra.database_url,
        topic_prefix=f"t{tag}.",
        consumer_group=f"g{tag}",
        db_schema=f"t_{tag}",
        data_dir=data_dir,
        metrics_port=0,
        http_addr="127.0.0.1:0",
        kafka_session_timeout_ms=TEST_SESSION_TIMEOUT_MS,
    )


@asynccontextmanager
async def schema_pool(database_url: str, schema: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool whose connections work in `schema`, created here and dropped at exit."""
    # Identifiers cannot be bind parameters; Settings validated `schema` as plain.
    await _execute(database_url, f"CREATE SCHEMA IF NOT EXISTS {schema}")
    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=4, server_settings={"search_path": schema}
    )
    try:
        yield pool
    finally:
        await pool.close()
        await drop_schema(database_url, schema)


async def drop_schema(database_url: str, schema: str) -> None:
    """Drop `schema` with everything in it, if it exists."""
    await _execute(database_url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def _execute(database_url: str, sql: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def wait_for(
    predicate: Callable[[], Any] | Callable[[], Awaitable[Any]],
    timeout: float = 30.0,  # noqa: ASYNC109 - the deadline belongs in the failure message
    interval: float = 0.05,
    message: str | None = None,
) -> Any:
    """Poll `predicate` (sync or async) until it returns a truthy value, and return that.

    The way tests wait for an asynchronous effect: a deadline instead of a guessed sleep.
    Raises AssertionError naming the predicate and its last value on timeout.
    """
    deadline = time.monotonic() + timeout
    checks = 0
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        checks += 1
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(
                f"timed out after {timeout}s ({checks} checks) waiting for {what}; "
                f"last value: {value!r}"
            )
        await asyncio.sleep(interval)


async def as_older_version(pool: Any) -> None:
    """The schema as an older version left it: no record of this version's migration
    scripts, so the next start runs them (pool.ensure_schema skips a schema already
    migrated by the same scripts). A test that builds an older layout by hand calls this."""
    from services.store.pool import SCRIPTS_KEY

    await pool.execute("DELETE FROM meta WHERE key = $1", SCRIPTS_KEY)
