"""The import wizard (issue 13, item 4; seed 000): upload, header → key and type with the
system keys refused (I5), a preview of the first rows with the cells that would fail
(the importer's own parsing), progress, counts, the failures CSV, the import log."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import expect

from tests.browser.conftest import Console

CSV = (
    "memberId,氏名,mail,誕生日,unsubscribeEmail,unsubscribeTexting,lastSeenAt\n"
    "m-100,山本一郎,ichiro.y@example.jp,1990-04-01,false,false,1700000000000\n"
    "m-101,山本二郎,jiro.y@example.jp,1991/05/02,false,false,1700000000000\n"  # I9: YYYY/MM/DD is refused
    "m-102,山本三郎,saburo.y@example.jp,1992-06-03,false,false,1700000000000\n"
)


async def test_console_import_i5_mapping_preview_failing_cells_progress_counts_failures_csv_log(
    console: Console, tmp_path: Path,
) -> None:
    path = tmp_path / "会員.csv"
    path.write_text(CSV, encoding="utf-8")
    page = await console.signed_in("ja")
    await page.get_by_role("link", name="顧客インポート").click()
    await expect(page.get_by_text("インポートはまだありません。")).to_be_visible()
    await page.get_by_label("会員をインポート（会員IDで識別）").check()
    await page.get_by_label("CSVファイル（UTF-8、100MBまで）").set_input_files(str(path))
    await console.shot(page, "import-upload")
    await page.get_by_role("button", name="アップロード").click()

    mapping = page.get_by_role("table", name="2. マッピング")
    await expect(mapping.get_by_role("row", name="氏名")).to_contain_text("山本一郎")  # sample data
    await mapping.get_by_label("顧客プロフィール: 氏名").fill("name")
    await mapping.get_by_label("顧客プロフィール: mail").fill("email")
    await mapping.get_by_label("顧客プロフィール: 誕生日").fill("profile.birthday")
    await mapping.get_by_label("タイプ（新しいプロフィール）: 誕生日").select_option("date")
    # I5: lastSeenAt is the service's own key: not imported, and the page says why.
    system = mapping.get_by_label("顧客プロフィール: lastSeenAt")
    await expect(system).to_have_value("")
    await expect(mapping.get_by_role("row", name="lastSeenAt")).to_contain_text("set by the service and cannot be imported")
    await system.fill("createdAt")  # typing a system key anyway is refused by the importer's own check
    await page.get_by_role("button", name="マッピングを確認").click()
    await expect(page.get_by_role("alert")).to_contain_text("createdAt is set by the service and cannot be imported")
    await console.shot(page, "import-system-key-refused")

    await system.fill("")  # インポートしない
    await page.get_by_role("button", name="マッピングを確認").click()
    preview = page.get_by_role("table", name="3. プレビュー")
    await expect(page.get_by_role("status")).to_contain_text("最初の3行のうち1行が失敗します")
    bad = preview.get_by_role("row", name="3").locator("td.bad")
    await expect(bad).to_have_text("1991/05/02")  # the failing cell, marked
    await console.shot(page, "import-preview")

    await page.get_by_role("button", name="インポートを開始").click()
    await expect(page.get_by_role("heading", name="完了")).to_be_visible(timeout=90_000)
    await expect(page.locator("[data-count=created]")).to_have_text("2")
    await expect(page.locator("[data-count=failed]")).to_have_text("1")
    await expect(page.get_by_role("progressbar")).to_have_attribute("value", "3")
    await console.shot(page, "import-finished")

    async with page.expect_download() as info:
        await page.get_by_role("link", name="失敗項目のダウンロード（CSV）").click()
    failures = (await (await info.value).path()).read_text(encoding="utf-8-sig")
    header, row = failures.splitlines()[:2]
    assert header.startswith("rowNumber,errorColumns,errorReason,memberId")
    assert row.startswith("3,profile.birthday,") and "1991/05/02" in row  # I15

    await page.get_by_role("link", name="顧客インポートログ").click()
    log = page.get_by_role("table", name="顧客インポートログ")
    await expect(log).to_contain_text("staff-yamada")  # I16: who imported
    await expect(log.get_by_role("row").nth(1)).to_contain_text("完了")
    await console.shot(page, "import-log")

    await page.get_by_role("link", name="連絡先管理").click()
    await expect(page.locator("#results").get_by_role("link", name="山本一郎")).to_be_visible()
