"""Customers (issue 13, items 1 and 2; seeds 000, 001, 003, 004): the contact list with
search, filters, MU and pages; the detail with provenance, sessions, timeline; block,
unblock and delete with what is lost."""

from __future__ import annotations

import re

from playwright.async_api import expect

from tests.browser.conftest import Console, now_ms

MIN = 60_000


async def seed(c: Console) -> None:
    t = now_ms()
    await c.command(
        c.ev("m1", "member.upsert", t, memberId="m-1", name="山田太郎", profile={"email": "taro@example.jp", "mobileNumber": "+819011112222"}),
        c.ev("l1", "lead.create", t, profile={"email": "hanako@example.jp"}),
        c.ev("l2", "lead.create", t, profile={"email": "blocked@example.jp"}),
    )
    await c.sdk(
        c.ev("b1", "boot", t + MIN, veilId="v-taro", platform="web", memberId="m-1", language="ja", country="JP",
             device={"browserName": "Chrome", "osName": "macOS"}),
        c.ev("ch1", "chat", t + 2 * MIN, veilId="v-taro", chatId="c-1", medium="web", message={"messageId": "x1", "text": "配送について質問です"}),
        c.ev("tr1", "track", t + 3 * MIN, veilId="v-taro", name="Purchase", properties={"amount": 3000}),
        c.ev("b2", "boot", t + MIN, veilId="v-anon", platform="web"),  # anonymous: never listed (C1)
        c.ev("b3", "boot", t + MIN, veilId="v-typed", platform="mobile"),
        c.ev("ct", "contact", t + 2 * MIN, veilId="v-typed", email="typed@example.jp"),  # unqualified (C4)
    )
    blocked = await c.pool.fetchval("SELECT user_id FROM identities WHERE channel_id = $1 AND kind = 'email' AND value = 'blocked@example.jp'", c.channel)
    await c.command(c.ev("blk", "user.block", t + 4 * MIN, userId=blocked))


async def test_console_customers_list_c1_b1_c5_search_filters_and_pages(console: Console) -> None:
    await seed(console)
    page = await console.signed_in("ja")
    results = page.locator("#results")
    await expect(page.get_by_text("MU（リード＋メンバー、ブロック顧客を除く）：3")).to_be_visible()  # C5
    rows = results.get_by_role("row")
    await expect(rows).to_have_count(4)  # header + member + two leads: no anonymous (C1), no blocked (B1)
    await expect(results.get_by_role("link", name="山田太郎")).to_be_visible()
    await expect(results.get_by_text("blocked@example.jp")).to_have_count(0)
    await console.shot(page, "customers-list")

    await page.get_by_label("検索", exact=True).fill("hana")  # prefix of an e-mail, live (htmx)
    await expect(rows).to_have_count(2)
    await expect(results.get_by_role("link", name="hanako@example.jp")).to_be_visible()
    await page.get_by_label("検索", exact=True).fill("m-1")  # an identifier: the memberId
    await expect(results.get_by_role("link", name="山田太郎")).to_be_visible()
    await page.get_by_label("検索", exact=True).fill("090-1111")  # a phone as staff type it
    await expect(rows).to_have_count(2)
    await expect(results.get_by_role("link", name="山田太郎")).to_be_visible()
    await page.get_by_label("検索", exact=True).fill("")
    await page.get_by_label("顧客区分").select_option("member")
    await expect(rows).to_have_count(2)
    await expect(page).to_have_url(re.compile(r"type=member"))  # the filter is in the address
    await console.shot(page, "customers-filtered")

    await page.get_by_role("link", name="ブロック顧客管理").click()  # B1: listed only there
    await expect(page.get_by_role("heading", name="ブロック顧客管理")).to_be_visible()
    await expect(results.get_by_role("link", name="blocked@example.jp")).to_be_visible()
    await expect(results.get_by_role("row")).to_have_count(2)

    await page.goto(f"{console.url}/c/{console.channel}/customers?limit=2")  # keyset pages
    await expect(rows).to_have_count(3)
    await page.get_by_role("link", name="次のページ").click()
    await expect(rows).to_have_count(2)
    await expect(page.get_by_role("link", name="最初のページ")).to_be_visible()

    # Seed 000: staff add a lead by hand with an e-mail or a phone; it is qualified (C4).
    await page.get_by_text("リード顧客を追加").click()
    await page.get_by_label("メール", exact=True).fill("new.lead@example.jp")
    await page.get_by_role("button", name="リードを追加").click()
    await expect(page.get_by_role("heading", name="new.lead@example.jp")).to_be_visible()
    await expect(page.get_by_role("region", name="顧客プロフィール").get_by_role("row", name="profile.email")).to_contain_text("認証済み")


async def test_console_customer_detail_provenance_timeline_block_unblock_delete(console: Console) -> None:
    await seed(console)
    page = await console.signed_in("ja")
    await page.locator("#results").get_by_role("link", name="山田太郎").click()
    await expect(page.get_by_role("heading", name="山田太郎")).to_be_visible()
    profile = page.get_by_role("region", name="顧客プロフィール")
    email_row = profile.get_by_role("row", name="profile.email")
    await expect(email_row).to_contain_text("taro@example.jp")
    await expect(email_row).to_contain_text("認証済み")  # C4: the API's member data is qualified
    await expect(email_row).to_contain_text("メンバー情報")
    activity = page.get_by_role("region", name="セッションと使用機器")
    await expect(activity).to_contain_text("ja")
    await expect(activity).to_contain_text("JP")
    await expect(activity).to_contain_text("browserName=Chrome")
    timeline = page.get_by_role("region", name="タイムライン（チャットとイベント）")
    await expect(timeline).to_contain_text("配送について質問です")
    await expect(timeline).to_contain_text("Purchase")
    await console.shot(page, "customer-detail")

    await page.goto(f"{console.url}/c/{console.channel}/customers?q=typed")
    await page.locator("#results").get_by_role("link", name="typed@example.jp").click()
    await expect(page.get_by_role("region", name="顧客プロフィール").get_by_role("row", name="profile.email")).to_contain_text("未認証")

    # A value the service refuses comes back with its reason; nothing changed (G1).
    edit = page.get_by_role("region", name="顧客情報の修正")
    await edit.get_by_label("携帯番号").fill("12345")
    await edit.get_by_role("button", name="保存").click()
    await expect(page.get_by_role("alert")).to_contain_text("実行できませんでした")
    await console.shot(page, "edit-refused")

    await page.get_by_role("button", name="ブロック", exact=True).click()
    await expect(page.get_by_role("status")).to_contain_text("MUにカウントされず")  # B1 said in words
    await expect(page.get_by_text("ブロック中")).to_be_visible()
    await page.get_by_role("button", name="ブロック解除").click()
    await expect(page.get_by_role("status")).to_contain_text("完了しました")
    await expect(page.get_by_role("button", name="ブロック", exact=True)).to_be_visible()

    await page.get_by_role("link", name="削除…").click()
    dialog = page.get_by_role("alertdialog")
    await expect(dialog).to_contain_text("元に戻せません")  # B2: what is lost, what stays
    await expect(dialog).to_contain_text("会話のメッセージ内容")
    await console.shot(page, "delete-confirmation")
    await dialog.get_by_role("button", name="削除する").click()
    await expect(page.get_by_role("heading", name="連絡先管理")).to_be_visible()
    await expect(page.locator("#results").get_by_role("link", name="typed@example.jp")).to_have_count(0)
