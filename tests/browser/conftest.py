"""Browser tests of the staff console (issue 13): Playwright driving Debian's chromium
against the real service — broker, PostgreSQL, the API with the console on uvicorn.

Chromium is the system's (`/usr/bin/chromium`, `apt-get install chromium
fonts-ipafont-gothic`, or `make browser`); Playwright's own browser downloads are never
used. Without chromium these tests fail in CI (CI=true) and are skipped elsewhere with
what to install. Screenshots of every screen go to tests/artifacts/console/ (ignored by
git) for a reviewer to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from services.store import api_keys
from tests.support.api import LiveApi, live_api, new_channel
from tests.support.infra import Infra, drop_schema, isolated_settings, wait_for
from tests.support.service import Publisher

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("UNIFIER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
INSTALL_HINT = (
    f"chromium not found at {CHROMIUM}: the console's browser tests need it. Install it with "
    "`make browser` (as root: apt-get update && apt-get install -y chromium fonts-ipafont-gothic)."
)
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
VIEWPORT = {"width": 1366, "height": 900}  # a laptop screen

expect.set_options(timeout=20_000)


def chromium_installed() -> bool:
    return os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM) is not None


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not chromium_installed():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@dataclass
class Console:
    """The running service, its console's address, a staff key and a channel of its own."""

    api: LiveApi
    pub: Publisher
    browser: Browser
    channel: str
    key: str
    test: str

    @property
    def url(self) -> str:
        return f"{self.api.base_url}/console"

    @property
    def pool(self) -> Any:
        return self.api.pool

    async def context(self, lang: str = "ja") -> BrowserContext:
        return await self.browser.new_context(
            locale="ja-JP" if lang == "ja" else "en-US", viewport=VIEWPORT,  # type: ignore[arg-type]
            accept_downloads=True,
        )

    async def signed_in(self, lang: str = "ja", key: str | None = None) -> Page:
        """A new browser signed in with `key` (the admin key by default), on the channel's
        customer list."""
        page = await (await self.context(lang)).new_page()
        await sign_in(page, self.url, key or self.key, lang)
        await page.goto(f"{self.url}/c/{self.channel}/customers")
        return page

    async def shot(self, page: Page, name: str) -> None:
        await page.screenshot(path=str(ARTIFACTS / f"{self.test}--{name}.png"), full_page=True)

    # -- facts, as the SDK backends and the API send them ------------------------------
    def ev(self, event_id: str, type_: str, at: int, **fields: Any) -> dict[str, Any]:
        if "." in type_:
            fields.setdefault("actor", "seed")
        return {"eventId": event_id, "type": type_, "channelId": self.channel, "occurredAt": at, **fields}

    async def sdk(self, *events: dict[str, Any]) -> None:
        await self.pub.sdk(*events)
        await self.applied(*(e["eventId"] for e in events))

    async def command(self, *events: dict[str, Any]) -> None:
        await self.pub.command(*events)
        await self.applied(*(e["eventId"] for e in events))

    async def applied(self, *event_ids: str) -> None:
        async def done() -> bool:
            n = await self.pool.fetchval(
                "SELECT count(*) FROM applied_events WHERE channel_id = $1 AND event_id = ANY($2::text[])",
                self.channel, list(event_ids),
            )
            return bool(n == len(set(event_ids)))

        await wait_for(done, timeout=60, message=f"events {event_ids} applied")


async def sign_in(page: Page, url: str, key: str, lang: str = "ja") -> None:
    await page.goto(f"{url}/signin")
    await page.get_by_label("APIキー" if lang == "ja" else "API key").fill(key)
    await page.get_by_role("button", name="サインイン" if lang == "ja" else "Sign in").click()
    await expect(page.get_by_role("button", name="サインアウト" if lang == "ja" else "Sign out")).to_be_visible()


def now_ms() -> int:
    """The seeds' facts happen just before the console's commands (which the API stamps
    with the wall clock), so that event-time decisions see them in that order."""
    return int(time.time() * 1000) - 3_600_000


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def console_service(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveApi]:
    """The whole service with its API and console, one per test module (as the API tests
    share theirs): broker, PostgreSQL schema, uvicorn on a free port."""
    settings = isolated_settings(infra, tmp_path_factory.mktemp("console"))
    try:
        async with live_api(settings) as live:
            yield live
    finally:
        await drop_schema(infra.database_url, settings.db_schema)


@pytest_asyncio.fixture
async def console(console_service: LiveApi, browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Console]:
    """One live service per test module (as the API tests share theirs); each test has a
    channel of its own and a fresh admin key named like a staff member."""
    test = re.sub(r"[^A-Za-z0-9_]+", "_", request.node.name)
    await api_keys.revoke_key(console_service.pool, "staff-yamada")  # a live name is unique
    key = await console_service.key("admin", None, "staff-yamada")
    async with Publisher(console_service.settings) as pub:
        yield Console(console_service, pub, browser, new_channel(), key, test)
