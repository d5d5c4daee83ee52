"""Admin screens (issue 13, item 6): channel settings — the member-hash secret (set and
rotated, never shown, H1), the MU limit (I17), field types (P2) — and dead letters for
SREs (by code, with the reason, retried). Only admin keys reach them."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from contracts.topics import Topics
from services.console.i18n import REFUSALS_EN
from services.store import api_keys
from tests.browser.conftest import Console, now_ms, sign_in
from tests.support.infra import wait_for
from tests.support.service import read_topic

pytestmark = pytest.mark.browser


async def test_console_h1_secret_set_and_rotated_never_shown_mu_limit_and_field_types(console: Console) -> None:
    page = await console.signed_in("ja")
    await page.get_by_role("link", name="チャネル設定").click()
    await expect(page.get_by_text("シークレットは未設定です")).to_be_visible()
    secret = "s3cr3t-never-shown-7f1c"
    await page.get_by_label("新しいシークレット").fill(secret)
    await page.get_by_role("button", name="設定・変更").click()
    await expect(page.get_by_text("シークレットは設定済みです。表示されることはありません。")).to_be_visible()
    assert secret not in await page.content()
    await page.get_by_label("新しいシークレット").fill(secret + "-rotated")
    await page.get_by_role("button", name="設定・変更").click()
    await expect(page.get_by_role("status")).to_contain_text("保存しました")
    stored = await console.pool.fetchval("SELECT member_hash_secret FROM channels WHERE channel_id = $1", console.channel)
    assert stored == secret + "-rotated"

    await page.get_by_role("spinbutton", name="MU上限").fill("1000")
    await page.get_by_role("button", name="MU上限を保存").click()
    await expect(page.get_by_role("spinbutton", name="MU上限")).to_have_value("1000")
    await page.get_by_label("データキー", exact=True).fill("birthday")
    await page.get_by_label("タイプ", exact=True).select_option("date")
    await page.get_by_role("button", name="項目を追加").click()
    await expect(page.get_by_role("table", name="顧客プロフィール情報のタイプ")).to_contain_text("profile.birthday")
    await console.shot(page, "channel-settings")

    # A write key works with customers but not here.
    await api_keys.revoke_key(console.pool, "staff-suzuki")
    writer = await console.api.key("write", None, "staff-suzuki")
    other = await (await console.context("ja")).new_page()
    await sign_in(other, console.url, writer, "ja")
    await other.goto(f"{console.url}/c/{console.channel}/customers")
    await expect(other.get_by_role("link", name="連絡先管理")).to_be_visible()
    await expect(other.get_by_role("link", name="チャネル設定")).to_have_count(0)
    response = await other.goto(f"{console.url}/c/{console.channel}/settings")
    assert response is not None and response.status == 403
    await expect(other.get_by_role("alert")).to_contain_text("admin 権限のキーが必要です")

    # A key bound to a channel sees that channel only.
    await api_keys.revoke_key(console.pool, "staff-ch")
    bound = await console.api.key("admin", "ch_elsewhere", "staff-ch")
    third = await (await console.context("ja")).new_page()
    await sign_in(third, console.url, bound, "ja")
    response = await third.goto(f"{console.url}/c/{console.channel}/customers")
    assert response is not None and response.status == 403
    await expect(third.get_by_role("alert")).to_contain_text("チャネル ch_elsewhere 専用です")


async def test_console_dead_letters_listed_by_code_with_reason_and_retried(console: Console) -> None:
    t = now_ms()
    bad = console.ev("bad-1", "boot", t, veilId="v-1", platform="tv")  # not web|mobile
    await console.pub.sdk(bad)
    topic = Topics(console.api.settings.topic_prefix).dead_letter

    async def published() -> bool:
        return any(v and "bad-1" in v.get("value", "") for _k, v in await read_topic(console.api.settings, topic))

    await wait_for(published, timeout=60, message="the dead letter on its topic")
    page = await console.signed_in("en")
    await page.get_by_role("link", name="Dead letters").click()
    table = page.get_by_role("table", name="Dead letters")
    await expect(table).to_contain_text("platform")  # the reason names the bad field
    await console.shot(page, "dead-letters")
    code = (await table.locator("tbody tr td.mono").first.inner_text()).strip()
    await page.get_by_label("Error code").select_option(code)
    await page.get_by_role("button", name="Show").click()
    await page.get_by_role("button", name=f"Retry every letter with this code: {code}").click()
    await expect(page.get_by_role("status")).to_contain_text("Re-published 1 record(s)")
    # every letter is counted per code with what the code means; the retried one says so
    summary = page.get_by_role("table", name="Letters per code")
    await expect(summary).to_contain_text(code)
    await expect(summary).to_contain_text(REFUSALS_EN[code])
    await expect(page.get_by_role("table", name="Dead letters")).to_contain_text("retried")
