"""Shared fixtures; the logic lives in tests/support/infra.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from services.platform.config import Settings
from tests.support.infra import (
    Infra,
    drop_schema,
    isolated_settings,
    schema_pool,
    session_infrastructure,
)


@pytest.hookimpl(tryfirst=True)  # before xdist turns the groups into node-id suffixes
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`make test` runs on pytest-xdist workers with `--dist loadgroup`: each module goes
    whole to one worker, so its module-scoped service (e.g. the API tests' live API) starts
    once, as in a serial run. A test marked `xdist_group(NAME)` instead goes with every
    other test of NAME, whatever its module — for tests that must not run at the same time
    as each other. Each worker has its own session broker; PostgreSQL is shared, and every
    test has its own schema, topic prefix and consumer group (isolated_settings)."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def infra(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Infra]:
    """The session's broker and PostgreSQL (started on first use, stopped at the end)."""
    async with session_infrastructure(tmp_path_factory.mktemp("infra")) as found:
        yield found


@pytest_asyncio.fixture
async def settings(infra: Infra, tmp_path: Path) -> AsyncIterator[Settings]:
    """Settings with this test's own topic prefix, consumer group and schema; the schema
    is dropped afterwards whoever created it."""
    isolated = isolated_settings(infra, tmp_path)
    yield isolated
    await drop_schema(infra.database_url, isolated.db_schema)


@pytest_asyncio.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A pool on this test's schema (`search_path`), dropped with it afterwards."""
    assert settings.database_url is not None
    async with schema_pool(settings.database_url, settings.db_schema) as pool:
        yield pool


@pytest_asyncio.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """The service's own pool (its codecs; the tables created) on this test's schema."""
    from services.store.pool import create_pool

    assert settings.database_url is not None
    p = await create_pool(settings.database_url, settings.db_schema)
    yield p
    await p.close()
