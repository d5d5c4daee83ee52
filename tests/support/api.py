"""The live HTTP API for the API tests: `unifier run` (projection, relay and the API on
a free port) on the test's broker and schema, keys of every scope, an httpx client."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg
import httpx
import pytest
import pytest_asyncio

from services.platform.config import Settings
from services.runtime.service import run_service
from services.store import api_keys
from services.store.pool import create_pool
from tests.support.infra import Infra, drop_schema, isolated_settings


@dataclass
class LiveApi:
    base_url: str
    settings: Settings
    pool: asyncpg.Pool
    keys: dict[str, str] = field(default_factory=dict)  # name -> key

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30)

    async def key(self, scope: str, channel: str | None = None, name: str | None = None) -> str:
        key, record = await api_keys.create_key(self.pool, scope, channel, name)
        self.keys[record["name"]] = key
        return key


@asynccontextmanager
async def live_api(settings: Settings) -> AsyncIterator[LiveApi]:
    """The whole service with its API; stopped (requests and batch in flight finished) at exit."""
    assert settings.database_url is not None
    stop, ready = asyncio.Event(), asyncio.Event()
    address: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_service(settings, stop, ready=ready, api_address=address))
    await asyncio.wait([task, address], return_when=asyncio.FIRST_COMPLETED, timeout=120)
    if task.done():
        task.result()
    pool = await create_pool(settings.database_url, settings.db_schema, max_size=2)
    try:
        yield LiveApi(f"http://{address.result()}", settings, pool)
    finally:
        await pool.close()
        stop.set()
        await asyncio.wait_for(task, timeout=60)


def new_channel() -> str:
    """A channel no other test uses (tests share one live API per module)."""
    return f"ch_{secrets.token_hex(4)}"


@pytest_asyncio.fixture(scope="module", loop_scope="session", name="module_api")
async def module_api_fixture(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveApi]:
    """One live service with its API for a test module (each test takes its own channel)."""
    settings = isolated_settings(infra, tmp_path_factory.mktemp("api"))
    try:
        async with live_api(settings) as live:
            yield live
    finally:
        await drop_schema(infra.database_url, settings.db_schema)
