"""Sign-in, session and language (issue 13: same auth model as the API; session cookie
HttpOnly, SameSite=Strict, signed; CSRF on every state-changing form; ja/en)."""

from __future__ import annotations

from playwright.async_api import expect

from services.store import api_keys
from tests.browser.conftest import Console, sign_in


async def test_console_signin_with_key_session_cookie_csrf_and_revocation(console: Console) -> None:
    """A wrong key is refused; the right one signs in with a cookie no script can read
    and no other site sends; a form without the CSRF token is refused; revoking the key
    ends the session at once."""
    ctx = await console.context("ja")
    page = await ctx.new_page()
    await page.goto(f"{console.url}/")
    await expect(page.get_by_role("heading", name="サインイン")).to_be_visible()  # not signed in: sent to sign-in
    await page.get_by_label("APIキー").fill("uk_00000000_not-a-key")
    await page.get_by_role("button", name="サインイン").click()
    await expect(page.get_by_role("alert")).to_contain_text("このキーは存在しないか、無効化されています")
    await console.shot(page, "signin-refused")

    await page.get_by_label("APIキー").fill(console.key)
    await page.get_by_role("button", name="サインイン").click()
    await expect(page.get_by_text("staff-yamada（admin）でサインイン中")).to_be_visible()
    cookie = next(c for c in await ctx.cookies() if c["name"] == "unifier_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert console.key not in cookie["value"]  # the key itself never leaves the sign-in form

    main = page.get_by_role("main")
    await main.get_by_role("textbox", name="チャネル").fill(console.channel)
    await main.get_by_role("button", name="開く").click()
    await expect(page.get_by_role("heading", name="連絡先管理")).to_be_visible()
    await console.shot(page, "channel-opened")

    # A state-changing request without the session's CSRF token is refused.
    forged = await page.request.post(f"{console.url}/c/{console.channel}/customers/leads", form={"email": "x@example.com"})
    assert forged.status == 403
    assert await console.pool.fetchval("SELECT count(*) FROM users WHERE channel_id = $1", console.channel) == 0

    await api_keys.revoke_key(console.pool, "staff-yamada")
    await page.reload()
    await expect(page.get_by_role("heading", name="サインイン")).to_be_visible()


async def test_console_language_follows_browser_and_switches(console: Console) -> None:
    """Issue 13 item 7: the browser's language picks Japanese or English; staff can switch."""
    ctx = await console.context("en")
    page = await ctx.new_page()
    await sign_in(page, console.url, console.key, "en")
    await page.goto(f"{console.url}/c/{console.channel}/customers")
    await expect(page.get_by_role("heading", name="Contacts")).to_be_visible()
    await page.get_by_label("Language").select_option("ja")
    await page.get_by_role("button", name="Switch").click()
    await expect(page.get_by_role("heading", name="連絡先管理")).to_be_visible()
    await expect(page.get_by_role("link", name="ユニフィケーション")).to_be_visible()
    await console.shot(page, "switched-to-japanese")
    # Keyboard: the first Tab lands on the skip link, which jumps to the content.
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="本文へ移動")).to_be_focused()
