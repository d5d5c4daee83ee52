"""Unification (issue 13, item 3; seed 002, seed 004's manual merge): candidates with the
U3 preview computed by the domain's own merge, approval, the pending queue with cancel,
and the manual merge dialog that refuses what U1 forbids."""

from __future__ import annotations

from playwright.async_api import expect

from tests.browser.conftest import Console, now_ms

MIN = 60_000


async def test_console_u10_u5_line_lead_given_phone_by_staff_preview_u3_approve_merges_at_once(console: Console) -> None:
    """Seed 002, example 3: a LINE chatter gets a phone number from staff; it matches a
    member, the candidate appears, the preview shows which value wins each key (U3),
    approval merges at once (never booted), the member shows the merge (G4, U4, U8)."""
    t = now_ms()
    await console.command(console.ev("m", "member.upsert", t, memberId="m-2", name="佐藤花子",
                                     profile={"mobileNumber": "+819012345678", "company": "旧商事"}))
    await console.sdk(console.ev("line", "chat", t + MIN, veilId="line:U123", chatId="c-line", medium="line",
                                 message={"messageId": "x", "text": "LINEからの問い合わせです"}))
    page = await console.signed_in("ja")
    await page.get_by_label("検索", exact=True).fill("line:U123")  # a veilId finds the lead
    await expect(page.locator("#results").get_by_role("row")).to_have_count(2)
    await page.locator("#results").get_by_role("link").first.click()
    await expect(page.get_by_text("リード", exact=True)).to_be_visible()

    edit = page.get_by_role("region", name="顧客情報の修正")
    await edit.get_by_label("携帯番号").fill("+81 090-1234-5678")
    await edit.get_by_label("プロフィールキー").fill("company")
    await edit.get_by_label("値", exact=True).fill("ACME")
    await edit.get_by_role("button", name="保存").click()
    await expect(page.get_by_role("status")).to_contain_text("完了しました")
    candidates = page.get_by_role("region", name="ユニフィケーション候補")
    await expect(candidates.get_by_role("link", name="佐藤花子")).to_be_visible()  # U5
    await console.shot(page, "lead-with-candidate")

    await page.get_by_role("link", name="ユニフィケーション").click()
    queue = page.get_by_role("table", name="ユニフィケーション候補")
    await expect(queue).to_contain_text("佐藤花子")
    await console.shot(page, "unification-queue")
    await queue.get_by_role("link", name="プレビュー").click()
    preview = page.get_by_role("table", name="項目ごとに採用される値（U3）")
    # Both qualified; member data beats lead data (U3): the member's company stays.
    await expect(preview.get_by_role("row", name="profile.company")).to_contain_text("旧商事")
    await expect(preview.get_by_role("row", name="profile.company").locator("td.wins").first).to_contain_text("旧商事")
    await expect(preview.get_by_role("row", name="profile.mobileNumber")).to_contain_text("+819012345678")
    await expect(page.get_by_text("承認するとすぐに統合されます")).to_be_visible()  # U5 timing: never booted
    await console.shot(page, "unification-preview")

    await page.get_by_role("button", name="ユニフィケーションを承認").click()
    await expect(page.get_by_role("heading", name="佐藤花子")).to_be_visible()  # the member's page
    await expect(page.get_by_role("status")).to_contain_text("完了しました")
    merges = page.get_by_role("region", name="統合履歴")
    await expect(merges.get_by_role("row", name="profile.company")).to_contain_text("この顧客の値")  # G4: who won
    await expect(merges).to_contain_text("統合されたID")
    await expect(page.get_by_role("region", name="タイムライン（チャットとイベント）")).to_contain_text("LINEからの問い合わせです")  # U4
    await console.shot(page, "member-after-merge")

    lead_id = await console.pool.fetchval(
        "SELECT source_id FROM merges WHERE channel_id = $1", console.channel,
    )
    await page.goto(f"{console.url}/c/{console.channel}/customers/{lead_id}")  # U8: the old id resolves
    await expect(page.get_by_text("このIDは別の顧客に統合されました")).to_be_visible()
    await page.get_by_role("link", name="統合先の顧客を開く").click()
    await expect(page.get_by_role("heading", name="佐藤花子")).to_be_visible()


async def test_console_u5_u6_booted_lead_approval_waits_then_staff_cancel(console: Console) -> None:
    """A lead that has visited the site waits for the member's next login (U5); staff
    see it among pending unifications and cancel it (U6)."""
    t = now_ms()
    await console.command(console.ev("m", "member.upsert", t, memberId="m-3", name="鈴木一郎", profile={"email": "ichiro@example.jp"}))
    await console.sdk(
        console.ev("b", "boot", t + MIN, veilId="v-web", platform="web"),
        console.ev("c", "chat", t + 2 * MIN, veilId="v-web", chatId="c-1", medium="web", message={"messageId": "m", "text": "こんにちは"}),
    )
    lead = await console.pool.fetchval("SELECT user_id FROM identities WHERE channel_id = $1 AND kind = 'veil' AND value = 'v-web'", console.channel)
    await console.command(console.ev("p", "profile.update", t + 3 * MIN, userId=lead, profile={"email": "ICHIRO@example.jp "}))

    page = await console.signed_in("ja")
    await page.get_by_role("link", name="ユニフィケーション").click()
    await page.get_by_role("table", name="ユニフィケーション候補").get_by_role("link", name="プレビュー").click()
    await expect(page.get_by_text("メンバーの次回ログイン時に統合されます")).to_be_visible()  # booted: delayed (U5)
    await page.get_by_role("button", name="ユニフィケーションを承認").click()
    await expect(page.get_by_text("次回ログインしたときに統合されます")).to_be_visible()  # the source's own page says so

    await page.get_by_role("link", name="ユニフィケーション").click()
    pending = page.get_by_role("table", name="遅延中のユニフィケーション")
    await expect(pending).to_contain_text("鈴木一郎")
    await expect(page.get_by_text("候補はありません。")).to_be_visible()  # approved once: not offered again
    await console.shot(page, "pending-unification")
    await pending.get_by_role("button", name="取り消す").click()
    await expect(page.get_by_role("status")).to_contain_text("完了しました")
    await expect(page.get_by_text("遅延中のユニフィケーションはありません。")).to_be_visible()
    assert await console.pool.fetchval("SELECT count(*) FROM identities WHERE channel_id = $1 AND kind = 'pending'", console.channel) == 0


async def test_console_manual_merge_dialog_refuses_u1_and_merges_a_lead_into_a_member(console: Console) -> None:
    """Seed 004's 顧客情報統合: search the target, preview, merge — and U1 said in words:
    a lead never merges into a lead, a member never merges into anyone."""
    t = now_ms()
    await console.command(
        console.ev("m", "member.upsert", t, memberId="m-4", name="高橋健", profile={"email": "ken@example.jp"}),
        console.ev("l1", "lead.create", t, profile={"email": "ken.private@example.jp"}),
        console.ev("l2", "lead.create", t, profile={"email": "kenji@example.jp"}),
    )
    page = await console.signed_in("en")
    await page.get_by_label("Search", exact=True).fill("ken.private")
    await page.locator("#results").get_by_role("link", name="ken.private@example.jp").click()
    await page.get_by_role("link", name="Merge into a member…").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("Find the target member").fill("kenji")
    await dialog.get_by_role("button", name="Search").click()
    await dialog.get_by_role("button", name="Preview: kenji@example.jp").click()
    await expect(dialog.get_by_role("alert")).to_contain_text("A lead never merges into a lead (U1)")
    await console.shot(page, "manual-merge-refused")

    await dialog.get_by_label("Find the target member").fill("m-4")
    await dialog.get_by_role("button", name="Search").click()
    await dialog.get_by_role("button", name="Preview: 高橋健").click()
    await expect(dialog.get_by_role("table", name="Which value wins each key (U3)")).to_contain_text("ken@example.jp")
    await console.shot(page, "manual-merge-preview")
    await dialog.get_by_role("button", name="Approve unification").click()
    await expect(page.get_by_role("heading", name="高橋健")).to_be_visible()
    await expect(page.get_by_role("region", name="Merge history")).to_contain_text("ken.private@example.jp")

    member = await console.pool.fetchval("SELECT id FROM users WHERE channel_id = $1 AND member_id = 'm-4'", console.channel)
    await page.goto(f"{console.url}/c/{console.channel}/customers/{member}/merge")
    await expect(page.get_by_role("alert")).to_contain_text("members are never merged (U1)")
