"""Hostile text in operations (names, rejection reasons, user ids) is shown as text by the ops
dashboard and the live page in a real headless Chromium: no markup, no script runs."""

from __future__ import annotations

import uuid

import pytest
from playwright.async_api import Browser, Page, expect

from tests.dashboard_support import Token, applied, live_dashboard, row
from tests.support import Publisher, RunningService

pytestmark = pytest.mark.browser

NAME = '<img src=x onerror="window.__owned=1">create_order'
REASON = "</td><script>window.__owned=2</script><b>bold</b>"
USER = '"><svg onload="window.__owned=3">'
# What would be in the page had any of the text above been taken for markup.
INJECTED = "[onerror], [onload], script:has-text('__owned'), b:text-is('bold')"


async def _owned(page: Page) -> object:
    return await page.evaluate("window.__owned")


async def test_hostile_text_is_shown_as_text_on_the_dashboard_and_the_live_page(
    service: RunningService, publisher: Publisher, browser: Browser, token: Token
) -> None:
    op = str(uuid.uuid4())
    await publisher.publish("create_order", op, user=USER, name=NAME)
    await publisher.publish(
        "create_order_rejected", op, user=USER, name=NAME, body={"reason": REASON, "code": "x"}
    )
    admin = token("ops", "admin")
    await applied(service, admin, op, version=2)

    dashboard = await live_dashboard(browser, service, admin)
    await expect(row(dashboard, op)).to_contain_text(NAME)
    await row(dashboard, op).click()
    await expect(dashboard.get_by_text(REASON).first).to_be_visible()
    assert await dashboard.locator(INJECTED).count() == 0
    assert await _owned(dashboard) is None

    live = await browser.new_page()
    await live.goto(f"{service.url}/live/#token={token(USER)}")
    line = live.locator(f'#operations tbody tr[data-id="{op}"]')
    await expect(line).to_contain_text(REASON)
    assert await live.locator(INJECTED).count() == 0
    assert await _owned(live) is None
