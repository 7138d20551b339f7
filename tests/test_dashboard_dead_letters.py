"""The dashboard's "Failed messages" view in a real headless Chromium, against the running
service: counts by cause that follow new dead letters live, the list, one dead letter's headers
and body pretty-printed, and redrive and discard, one or a whole group, after a confirmation;
with no JavaScript error and nothing loaded from outside."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import replace

import httpx
import redis.asyncio as aioredis
from aio_pika.abc import AbstractRobustConnection
from playwright.async_api import Browser, Locator, Page, expect

from operations.settings import Settings
from tests.api import bearer
from tests.dead_letter_support import copy_headers, put_copies
from tests.support import eventually, start_service

Token = Callable[..., str]


def group_row(page: Page, reason: str) -> Locator:
    return page.get_by_test_id("failed-groups").locator(f'tr[data-reason="{reason}"]')


async def confirm(page: Page, answer: str = "failed-yes") -> None:
    await expect(page.get_by_test_id("failed-confirm")).to_be_visible()
    await page.get_by_test_id(answer).click()
    await expect(page.get_by_test_id("failed-confirm")).to_be_hidden()


async def test_the_failed_messages_view(
    settings: Settings,
    amqp: AbstractRobustConnection,
    redis_client: aioredis.Redis,
    browser: Browser,
    token: Token,
) -> None:
    kept_settings = replace(settings, dead_letter_keep=True, sagas=False)
    queue = kept_settings.dead_letter_queue
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    await put_copies(
        amqp,
        queue,
        [copy_headers("store: busy", start + dt.timedelta(seconds=n)) for n in range(2)],
        body=b'{"orderId":"o-1","parcels":[1,2]}',
    )
    await put_copies(
        amqp, queue, [copy_headers("junk", start, letter_id="junk-1", routing_key="unbound")]
    )
    admin = token("ops", "admin")
    errors: list[str] = []
    requests: list[str] = []
    async with start_service(kept_settings) as running:

        async def three_kept() -> bool:
            async with httpx.AsyncClient(base_url=running.url) as http:
                response = await http.get("/dead-letters", headers=bearer(admin))
                return len(response.json()["items"]) == 3

        await eventually(three_kept, "three dead letters to be kept")
        context = await browser.new_context(viewport={"width": 1400, "height": 900})
        context.on("request", lambda request: requests.append(request.url))
        page = await context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on(
            "console",
            lambda message: errors.append(message.text) if message.type == "error" else None,
        )
        await page.goto(f"{running.url}/dashboard/#token={admin}")
        await expect(page.get_by_test_id("status")).to_have_text("live", timeout=15_000)
        await expect(page.get_by_test_id("failed-total")).to_have_text("3", timeout=10_000)
        await page.get_by_test_id("tab-failed").click()
        await expect(page.get_by_test_id("operations")).to_be_hidden()
        await expect(page.get_by_test_id("failed-groups").locator("tr")).to_have_count(2)
        await expect(group_row(page, "store: busy").locator("td").first).to_have_text("2")
        await expect(page.get_by_test_id("failed-list").locator("tr")).to_have_count(3)

        # Live: a new dead letter shows without a reload.
        await put_copies(amqp, queue, [copy_headers("junk", routing_key="unbound")])
        await expect(page.get_by_test_id("failed-total")).to_have_text("4", timeout=10_000)
        await expect(group_row(page, "junk").locator("td").first).to_have_text("2")

        # One dead letter whole, pretty-printed.
        await page.get_by_test_id("failed-list").locator("tr", has_text="store: busy").first.click()
        body = await page.get_by_test_id("failed-body").text_content()
        assert body == '{\n  "orderId": "o-1",\n  "parcels": [\n    1,\n    2\n  ]\n}'
        headers = await page.get_by_test_id("failed-headers").text_content()
        assert headers is not None and '"message_context": "{\\"user\\"' in headers

        # Discard one: cancelled first, then confirmed.
        await page.get_by_test_id("failed-list").locator('tr[data-id="junk-1"]').click()
        await expect(page.get_by_test_id("failed-id")).to_have_text("junk-1")
        await page.get_by_test_id("failed-discard").click()
        await confirm(page, "failed-no")
        await expect(page.get_by_test_id("failed-total")).to_have_text("4")
        await page.get_by_test_id("failed-discard").click()
        await confirm(page)
        await expect(page.get_by_test_id("failed-notice")).to_have_text("Discarded junk-1")
        await expect(page.get_by_test_id("failed-total")).to_have_text("3", timeout=10_000)
        await expect(page.get_by_test_id("failed-detail")).to_be_hidden()

        # A group whose routing key nothing is bound to: skipped, then discarded whole.
        await group_row(page, "junk").get_by_test_id("group-redrive").click()
        await confirm(page)
        await expect(page.get_by_test_id("failed-notice")).to_have_text("Redriven 0, skipped 1")
        await group_row(page, "junk").get_by_test_id("group-discard").click()
        await confirm(page)
        await expect(page.get_by_test_id("failed-notice")).to_have_text("Discarded 1")

        # A group redriven to orders/order_created: applied by the tracking queue, and gone.
        await group_row(page, "store: busy").click()
        await expect(page.get_by_test_id("failed-filter")).to_have_text(
            f"{kept_settings.queue} · store: busy"
        )
        await group_row(page, "store: busy").get_by_test_id("group-redrive").click()
        await confirm(page)
        await expect(page.get_by_test_id("failed-notice")).to_have_text("Redriven 2")
        await expect(page.get_by_test_id("failed-total")).to_have_text("0", timeout=10_000)
        await expect(page.get_by_test_id("failed-list").locator("tr")).to_have_count(0)
        await page.get_by_test_id("tab-operations").click()
        await expect(page.get_by_test_id("operations")).to_be_visible()
        await context.close()
    assert errors == []
    outside = [url for url in requests if not url.startswith(running.url)]
    assert outside == []
