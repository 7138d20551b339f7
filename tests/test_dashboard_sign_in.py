"""Signing in to the dashboard in a real headless Chromium: an admin token in the field or the
fragment opens it, any other token is refused, and the token is kept out of every URL."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Page, Request, WebSocket, expect

from tests.dashboard_support import Token, open_dashboard, row
from tests.support import Publisher, RunningService, uid

pytestmark = pytest.mark.browser


async def sign_in(browser: Browser, service: RunningService, token: str) -> Page:
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    await page.goto(f"{service.url}/dashboard/")
    await expect(page.get_by_test_id("status")).to_have_text("signed out")
    await expect(page.locator("#main")).to_be_hidden()
    await page.locator("#token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    return page


async def test_an_admin_signs_in_with_the_field(
    service: RunningService, publisher: Publisher, browser: Browser, token: Token
) -> None:
    page = await sign_in(browser, service, token("ops", "admin"))
    await expect(page.get_by_test_id("status")).to_have_text("live", timeout=15_000)
    await expect(page.locator("#main")).to_be_visible()
    await expect(page.get_by_test_id("refused")).to_be_hidden()
    op = uid()
    await publisher.publish("create_order", op, user="alice")
    await expect(row(page, op)).to_be_visible(timeout=15_000)


@pytest.mark.parametrize("who", ["user", "garbage"])
async def test_a_non_admin_token_in_the_field_is_refused(
    service: RunningService, browser: Browser, token: Token, who: str
) -> None:
    page = await sign_in(browser, service, token("alice") if who == "user" else "not-a-token")
    refused = page.get_by_test_id("refused")
    await expect(refused).to_be_visible(timeout=15_000)
    await expect(refused).to_contain_text("admin role")
    await expect(page.locator("#main")).to_be_hidden()
    await expect(page.get_by_test_id("status")).to_have_text("signed out")


@pytest.mark.parametrize("who", ["user", "garbage"])
async def test_a_non_admin_token_in_the_fragment_is_refused(
    service: RunningService, browser: Browser, token: Token, who: str
) -> None:
    value = token("alice") if who == "user" else "not-a-token"
    page = await open_dashboard(browser, service, value)
    refused = page.get_by_test_id("refused")
    await expect(refused).to_be_visible(timeout=15_000)
    await expect(refused).to_contain_text("admin role")
    await expect(page.locator("#main")).to_be_hidden()


@pytest.mark.parametrize("how", ["field", "fragment"])
async def test_the_token_is_in_no_url(
    service: RunningService,
    publisher: Publisher,
    browser: Browser,
    token: Token,
    how: str,
) -> None:
    admin = token("ops", "admin")
    requests: list[str] = []
    sockets: list[str] = []

    def on_request(request: Request) -> None:
        requests.append(request.url)

    def on_websocket(socket: WebSocket) -> None:
        sockets.append(socket.url)

    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    context.on("request", on_request)
    page = await context.new_page()
    page.on("websocket", on_websocket)
    if how == "field":
        await page.goto(f"{service.url}/dashboard/")
        await page.locator("#token").fill(admin)
        await page.get_by_role("button", name="Sign in").click()
    else:
        await page.goto(f"{service.url}/dashboard/#token={admin}")
    await expect(page.get_by_test_id("status")).to_have_text("live", timeout=15_000)

    op = uid()
    await publisher.publish("create_order", op, user="alice")
    await expect(row(page, op)).to_be_visible(timeout=15_000)
    await publisher.publish("order_created", op, user="alice")
    await row(page, op).click()
    await expect(page.get_by_test_id("transitions").locator("li")).to_have_count(2, timeout=10_000)
    address = page.url
    await context.close()

    assert any("/sagas" in url for url in requests)
    assert any(f"/operations/{op}/history" in url for url in requests)
    assert any(f"/operations/{op}/saga" in url for url in requests)
    assert any("/socket.io/" in url for url in sockets), f"no Socket.IO websocket: {sockets}"
    leaked = [url for url in [*requests, *sockets] if admin in url]
    assert not leaked, f"the token is in these URLs: {leaked}"
    assert "token" not in address
