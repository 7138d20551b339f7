"""The dashboard operating many sagas, in a real headless Chromium against the running service:
a saga found by its order id (and by its operation id), its business keys shown as text; an
overdue saga listed and marked live by the service's pushes, then cleared once a retry of its step
moves it on; bulk cancel by a filter, confirmed with the dry run's count and sample before anything
is cancelled; bulk retry moving on a saga whose command was lost."""

from __future__ import annotations

import dataclasses
import uuid

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, expect

from operations.pacco.demo import DemoServices
from operations.settings import Settings
from tests.api import bearer, place_order, saga_started
from tests.browser import PageWatch, screenshot, watched_page
from tests.dashboard_support import Token, row
from tests.support import RunningService, eventually, start_service, uid

pytestmark = pytest.mark.browser

WAIT_MS = 20_000
HOSTILE = '<img src=x onerror="window.__owned=1">'


async def _dashboard(
    browser: Browser, service: RunningService, admin: str
) -> tuple[Page, PageWatch]:
    page, watch = await watched_page(browser, f"{service.url}/dashboard/#token={admin}")
    await expect(page.get_by_test_id("status")).to_have_text("live", timeout=15_000)
    return page, watch


async def _saga_status(http: httpx.AsyncClient, op: str, admin: str) -> str:
    response = await http.get(f"/operations/{op}/saga", headers=bearer(admin))
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


async def test_a_saga_is_found_by_its_order_id_and_opens_its_diagram(
    service: RunningService, browser: Browser, token: Token
) -> None:
    user, admin = uid(), token("ops", "admin")
    order_id = f"order-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=service.url) as http:
        # No simulated services: both wait for order_created.
        op = await place_order(http, token(user), orderId=order_id, customerId=HOSTILE)
        other = await place_order(http, token(user))
        for started in (op, other):
            await saga_started(http, started, admin)
    page, watch = await _dashboard(browser, service, admin)
    found = page.get_by_test_id("saga-found").locator("tr")

    await page.get_by_test_id("saga-search-input").fill(order_id)
    await page.get_by_test_id("saga-search-input").press("Enter")
    await expect(found).to_have_count(1, timeout=WAIT_MS)
    await expect(found.first).to_have_attribute("data-id", op)
    await expect(found.first).to_have_attribute("data-operation", op)
    await expect(found.first).to_contain_text("order_making")
    await expect(found.first).to_contain_text("order_created")

    def key(name: str) -> Locator:
        return found.first.locator(f'.business-key[data-key="{name}"]')

    await expect(key("order_id")).to_have_text(f"order_id {order_id}")
    # A value from a user is shown as text: no element made of it, no script run.
    await expect(key("customer_id")).to_have_text(f"customer_id {HOSTILE}")
    assert await page.locator("[onerror]").count() == 0
    assert await page.evaluate("window.__owned") is None

    await found.first.click()
    await expect(page.get_by_test_id("timeline")).to_be_visible()
    await expect(page.locator("#timeline-id")).to_have_text(op)
    diagram = page.get_by_test_id("saga-diagram")
    await expect(diagram).to_have_attribute("data-saga", "order_making", timeout=WAIT_MS)
    await expect(diagram.locator('g.node[data-status="waiting"]')).to_have_attribute(
        "data-message", "order_created"
    )

    # An operation id finds its saga too; a value no saga holds finds none, and says so.
    await page.get_by_test_id("saga-search-input").fill(other)
    await page.get_by_test_id("saga-search-input").press("Enter")
    await expect(found).to_have_count(1, timeout=WAIT_MS)
    await expect(found.first).to_have_attribute("data-id", other)
    await page.get_by_test_id("saga-search-input").fill("order-held-by-no-saga")
    await page.get_by_test_id("saga-search-input").press("Enter")
    await expect(page.get_by_test_id("saga-found-note")).to_contain_text(
        "No saga holds “order-held-by-no-saga”", timeout=WAIT_MS
    )
    await expect(found).to_have_count(0)
    watch.assert_clean()


@pytest.mark.slow
async def test_an_overdue_saga_is_marked_live_and_a_retry_of_its_step_clears_it(
    settings: Settings, redis_client: object, amqp: object, browser: Browser, token: Token
) -> None:
    # Long enough for the page to draw the saga before it is overdue: the mark then can only
    # come from the service's saga_overdue push, which nothing else on the page reads.
    objective = 4.0
    settings = dataclasses.replace(
        settings, saga_objectives=(("order_making.order_created", objective),)
    )
    user, admin = uid(), token("ops", "admin")
    async with (
        start_service(settings) as service,
        httpx.AsyncClient(base_url=service.url) as http,
    ):
        page, watch = await _dashboard(browser, service, admin)
        overdue = page.get_by_test_id("overdue-sagas").locator("tr")
        await expect(page.get_by_test_id("overdue-total")).to_have_text("0")
        # No simulated services: its create_order command goes nowhere, and it waits.
        customer = uid()
        op = await place_order(http, token(user), customerId=customer)
        await expect(row(page, op)).to_be_visible(timeout=WAIT_MS)
        await row(page, op).click()
        diagram = page.get_by_test_id("saga-diagram")
        waiting = diagram.locator('g.node[data-message="order_created"]')
        await expect(waiting).to_have_attribute("data-status", "waiting", timeout=WAIT_MS)
        await expect(waiting).not_to_have_attribute("data-overdue", "yes")
        await expect(page.get_by_test_id("saga-overdue")).to_have_attribute("data-overdue", "no")
        await expect(page.get_by_test_id("saga-overdue")).to_contain_text(
            "objective for order_created: 4.0 s"
        )

        await expect(waiting).to_have_attribute("data-overdue", "yes", timeout=WAIT_MS)
        await expect(page.get_by_test_id("overdue-label")).to_contain_text("overdue since ")
        await expect(page.get_by_test_id("saga-overdue")).to_contain_text(
            "longer than its objective of 4.0 s"
        )
        await expect(overdue).to_have_count(1)
        await expect(overdue.first).to_have_attribute("data-id", op)
        await expect(overdue.first.locator(".overdue-mark")).to_have_text("overdue")
        listed = page.get_by_test_id("sagas").locator(f'tr[data-id="{op}"]')
        await expect(listed.locator(".overdue-mark")).to_have_text("overdue")
        await expect(page.get_by_test_id("overdue-total")).to_have_text("1")
        step = page.get_by_test_id("type-load").locator('tr[data-message="order_created"]')
        await expect(step.locator(".overdue")).to_have_attribute("data-overdue", "1")
        await expect(step.locator(".objective")).to_have_text("4.0 s")
        await page.get_by_test_id("saga-search-input").fill(customer)
        await page.get_by_test_id("saga-search-input").press("Enter")
        found = page.get_by_test_id("saga-found").locator("tr")
        await expect(found).to_have_count(1, timeout=WAIT_MS)
        await expect(found.first).to_have_attribute("data-overdue", "yes")
        await screenshot(page, "dashboard-sagas.png")

        # The order service is back: a retry publishes the lost command again, and the saga
        # moves on, which clears it.
        async with DemoServices(settings.amqp_url, latency_ms=0):
            await page.get_by_test_id("retry-saga").click()
            await expect(page.get_by_test_id("retry-outcome")).to_have_attribute(
                "data-outcome", "published", timeout=WAIT_MS
            )
            await expect(page.get_by_test_id("retry-outcome")).to_contain_text(
                "Published again: 1 message."
            )
            await expect(overdue).to_have_count(0, timeout=WAIT_MS)
            await expect(page.get_by_test_id("overdue-total")).to_have_text("0")
            # The search listing it is read again too.
            await expect(found.first).to_have_attribute("data-overdue", "no")
            await expect(listed.locator(".overdue-mark")).to_have_count(0)
            await expect(waiting).to_have_attribute("data-status", "done", timeout=WAIT_MS)
            await expect(diagram.locator("[data-overdue]")).to_have_count(0)
            await expect(diagram).to_have_attribute("data-status", "completed", timeout=WAIT_MS)
        # Before the service stops: the page's polls would then fail to connect.
        await page.close()
        watch.assert_clean()


async def test_a_bulk_cancel_is_confirmed_with_the_dry_runs_count_and_sample(
    service: RunningService, browser: Browser, token: Token
) -> None:
    user, admin = uid(), token("ops", "admin")
    customer = uid()
    async with httpx.AsyncClient(base_url=service.url) as http:
        # No simulated services: each waits for order_created; two of them are one customer's.
        mine = [await place_order(http, token(user), customerId=customer) for _ in range(2)]
        other = await place_order(http, token(user))
        for op in [*mine, other]:
            await saga_started(http, op, admin)
        page, watch = await _dashboard(browser, service, admin)
        await expect(page.get_by_test_id("bulk-saga").locator("option")).to_contain_text(
            ["any type", "order_making"], timeout=WAIT_MS
        )
        await page.get_by_test_id("bulk-saga").select_option("order_making")
        await page.get_by_test_id("bulk-key").fill(customer)
        await page.get_by_test_id("bulk-reason").fill("the customer closed the account")
        await page.get_by_test_id("bulk-cancel").click()

        dialog = page.get_by_test_id("bulk-confirm")
        await expect(dialog).to_be_visible(timeout=WAIT_MS)
        await expect(page.get_by_test_id("bulk-count")).to_have_text("2")
        await expect(page.get_by_test_id("bulk-question")).to_contain_text(
            "Cancel 2 sagas that match: of type order_making,"
            f" holding “{customer}” in a business key?"
        )
        sample = page.get_by_test_id("bulk-sample").locator("tr")
        await expect(sample).to_have_count(2)
        assert {await tr.get_attribute("data-id") for tr in await sample.all()} == set(mine)
        # The dry run cancelled nothing.
        assert [await _saga_status(http, op, admin) for op in mine] == ["pending", "pending"]

        await page.get_by_test_id("bulk-yes").click()
        await expect(dialog).to_be_hidden()
        result = page.get_by_test_id("bulk-result")
        await expect(result).to_have_attribute("data-outcome", "done", timeout=WAIT_MS)
        await expect(result).to_have_attribute("data-acted", "2")
        await expect(result).to_contain_text("Cancelled 2 of 2 matching")

        async def cancelled() -> bool:
            statuses = [await _saga_status(http, op, admin) for op in mine]
            return all(status in ("compensating", "rejected") for status in statuses)

        await eventually(cancelled, "the customer's two sagas to be cancelled")
        assert await _saga_status(http, other, admin) == "pending"
    watch.assert_clean()


async def test_a_bulk_retry_moves_on_the_sagas_whose_command_was_lost(
    service: RunningService, settings: Settings, browser: Browser, token: Token
) -> None:
    user, admin = uid(), token("ops", "admin")
    customer = uid()
    async with httpx.AsyncClient(base_url=service.url) as http:
        # No simulated services yet: the create_order command goes nowhere.
        op = await place_order(http, token(user), customerId=customer)
        await saga_started(http, op, admin)
        page, watch = await _dashboard(browser, service, admin)
        async with DemoServices(settings.amqp_url, latency_ms=0):
            await page.get_by_test_id("bulk-key").fill(customer)
            await page.get_by_test_id("bulk-retry").click()
            await expect(page.get_by_test_id("bulk-count")).to_have_text("1", timeout=WAIT_MS)
            await expect(page.get_by_test_id("bulk-question")).to_contain_text(
                f"Retry the awaited step of 1 saga that matches: holding “{customer}”"
            )
            await expect(page.get_by_test_id("bulk-sample").locator("tr")).to_have_attribute(
                "data-id", op
            )
            assert await _saga_status(http, op, admin) == "pending"
            await page.get_by_test_id("bulk-yes").click()
            result = page.get_by_test_id("bulk-result")
            await expect(result).to_have_attribute("data-acted", "1", timeout=WAIT_MS)
            await expect(result).to_contain_text("Retried 1 of 1 matching.")

            async def completed() -> bool:
                return await _saga_status(http, op, admin) == "completed"

            await eventually(completed, "the retried saga to complete", timeout=30)
    watch.assert_clean()


async def test_a_bulk_action_needs_a_filter_and_a_dry_run_matching_none_asks_nothing(
    service: RunningService, browser: Browser, token: Token
) -> None:
    admin = token("ops", "admin")
    page, watch = await _dashboard(browser, service, admin)
    result = page.get_by_test_id("bulk-result")
    await page.get_by_test_id("bulk-retry").click()
    await expect(result).to_have_attribute("data-outcome", "invalid")
    await page.get_by_test_id("bulk-key").fill("a-key-no-saga-holds")
    await page.get_by_test_id("bulk-retry").click()
    await expect(result).to_have_attribute("data-outcome", "none", timeout=WAIT_MS)
    await expect(result).to_have_attribute("data-matched", "0")
    await expect(page.get_by_test_id("bulk-confirm")).to_be_hidden()
    watch.assert_clean()
