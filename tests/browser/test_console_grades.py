"""Grades (issue 13, item 5; seed 004's 顧客分類, D2): define a name and a colour, assign
by e-mail, phone or memberId, see the coloured label on the customer; remove."""

from __future__ import annotations

from playwright.async_api import expect

from tests.browser.conftest import Console, now_ms


async def test_console_d2_grade_defined_assigned_by_email_shown_on_customer_and_removed(console: Console) -> None:
    t = now_ms()
    await console.command(
        console.ev("m", "member.upsert", t, memberId="m-9", name="伊藤美咲", profile={"email": "misaki@example.jp"}),
        console.ev("l", "lead.create", t, profile={"mobileNumber": "+819055556666"}),
    )
    page = await console.signed_in("ja")
    await page.get_by_role("link", name="等級").click()
    await expect(page.get_by_text("等級はまだありません。")).to_be_visible()
    define = page.get_by_role("form", name="等級の追加")
    await define.get_by_label("等級の名称").fill("VIP")
    await define.get_by_label("色").fill("#c0392b")
    await define.get_by_role("button", name="保存").click()
    await expect(page.get_by_role("status")).to_contain_text("完了しました")

    assign = page.get_by_role("form", name="顧客追加")
    await assign.get_by_label("分類の基準").select_option("email")
    await assign.get_by_label("電子メール・電話番号・会員番号").fill("Misaki@Example.jp")
    await assign.get_by_role("button", name="保存").click()
    await expect(page.get_by_role("table", name="等級")).to_contain_text("misaki@example.jp")  # normalised (U9)
    await assign.get_by_label("分類の基準").select_option("mobileNumber")
    await assign.get_by_label("電子メール・電話番号・会員番号").fill("+81 090-5555-6666")
    await assign.get_by_role("button", name="保存").click()
    await expect(page.get_by_role("table", name="等級")).to_contain_text("+819055556666")
    await console.shot(page, "grades")

    await page.get_by_role("link", name="連絡先管理").click()
    await page.get_by_label("等級").select_option("VIP")  # the filter by grade
    results = page.locator("#results")
    await expect(results.get_by_role("row")).to_have_count(3)
    label = results.get_by_role("row", name="伊藤美咲").locator(".grade")
    await expect(label).to_have_text("VIP")
    await expect(label).to_have_css("background-color", "rgb(192, 57, 43)")
    await results.get_by_role("link", name="伊藤美咲").click()
    await expect(page.get_by_role("heading", name="伊藤美咲").locator(".grade")).to_have_text("VIP")
    await console.shot(page, "customer-with-grade")

    await page.get_by_role("link", name="等級").click()
    await page.get_by_role("button", name="削除: VIP").click()  # removed everywhere (D2)
    await expect(page.get_by_text("等級はまだありません。")).to_be_visible()
    await page.get_by_role("link", name="連絡先管理").click()
    await expect(page.locator("#results .grade")).to_have_count(0)
