"""The customer-lookup panel (issue 15 item 2, seed 004 §2-1 (2) 顧客情報照会): on the
customer detail staff see a form per lookup with the bound parameters filled from the
customer, look the customer up in the company's system (a real HTTP server on
loopback) and read the answer, or why it failed; automatic lookups show what they filled."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import expect

from tests.browser.conftest import Console, now_ms
from tests.support.api import LiveApi, live_api
from tests.support.company import Company, company_server
from tests.support.infra import Infra, drop_schema, isolated_settings, wait_for


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def company() -> AsyncIterator[Company]:
    async with company_server() as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def console_service(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveApi]:
    """The console's service, allowed to call the loopback company (tests only)."""
    settings = isolated_settings(infra, tmp_path_factory.mktemp("console-lookups")).replace(
        lookup_allow_networks="127.0.0.0/8", lookup_kek=base64.b64encode(b"k" * 32).decode(), lookup_timeout=1.0)
    try:
        async with live_api(settings) as live:
            yield live
    finally:
        await drop_schema(infra.database_url, settings.db_schema)


def definition(url: str, **changes: object) -> dict[str, object]:
    return {
        "url": url, "params": [{"label": "会員番号", "name": "memberNo", "required": True, "bind": "memberId"}],
        "results": [{"label": "ランク", "key": "rank"}, {"label": "都市", "key": "city"}],
        "connections": [{"result": "rank", "profileKey": "rank"}], **changes,
    }


async def test_console_lookup_panel_looks_a_customer_up_and_shows_failures_and_automatic_fills(
    console: Console, company: Company,
) -> None:
    t = now_ms()
    async with console.api.client(console.key) as http:
        for name, path, extra in (("基幹CRM", "/plain", {"media": ["line"]}), ("遅いAPI", "/slow", {})):
            r = await http.put(f"/v1/channels/{console.channel}/lookups/{name}", json=definition(company.url(path), **extra),
                               params={"wait": 10})
            assert r.status_code == 200, r.text
    await console.command(console.ev("m1", "member.upsert", t, memberId="m-1", name="山田太郎", profile={}))
    await console.sdk(
        console.ev("lg", "login", t + 1, veilId="line:U1", memberId="m-1"),
        console.ev("c1", "chat", t + 2, veilId="line:U1", chatId="c-1", medium="line"),
    )
    user_id = await console.pool.fetchval(
        "SELECT user_id FROM identities WHERE channel_id = $1 AND kind = 'member' AND value = 'm-1'", console.channel)

    async def filled() -> bool:
        return bool(await console.pool.fetchval("SELECT count(*) FROM lookup_results WHERE user_id = $1", user_id))

    await wait_for(filled, timeout=30, message="the automatic lookup recorded")

    page = await console.signed_in("ja")
    await page.goto(f"{console.url}/c/{console.channel}/customers/{user_id}")
    panel = page.locator("#lookups")
    crm = panel.get_by_role("form", name="基幹CRM")
    await expect(crm.get_by_label("会員番号")).to_have_value("m-1")  # bound to the customer's memberId
    await expect(panel.get_by_text("入力したフィールド: profile.rank")).to_be_visible()  # automatic, on the LINE chat
    await crm.get_by_role("button", name="照会").click()
    answer = panel.get_by_role("table", name="基幹CRMの照会結果")
    await expect(answer.get_by_role("row", name="ランク gold")).to_be_visible()
    await expect(answer.get_by_role("row", name="都市 Osaka")).to_be_visible()
    await console.shot(page, "lookup-answer")

    await panel.get_by_role("form", name="遅いAPI").get_by_role("button", name="照会").click()
    await expect(panel.get_by_role("alert")).to_contain_text("照会に失敗しました(timeout)")
    await console.shot(page, "lookup-timeout")
