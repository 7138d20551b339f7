"""The ops dashboard in a real headless Chromium, against the running service (issue: dashboard)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from operations.demo import DemoServices, FailurePlan
from operations.settings import Settings
from tests.browser import chromium
from tests.support import Publisher, RunningService, eventually

Token = Callable[..., str]
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "dashboard.png"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as running:
        yield running


async def open_dashboard(browser: Browser, service: RunningService, token: str) -> Page:
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    await page.goto(f"{service.url}/dashboard/#token={token}")
    return page


def uid() -> str:
    return str(uuid.uuid4())


async def test_the_page_loads_and_shows_a_published_message_live(
    service: RunningService, publisher: Publisher, browser: Browser, token: Token
) -> None:
    before = uid()
    await publisher.publish("create_order", before, user="alice")
    async with httpx.AsyncClient(base_url=service.url) as http:
        await eventually(
            lambda: _exists(http, before, token("ops", "admin")), "the first operation"
        )
    page = await open_dashboard(browser, service, token("ops", "admin"))
    await expect(page.get_by_test_id("status")).to_have_text("live", timeout=15_000)
    await expect(page.locator(f'tr[data-id="{before}"]')).to_be_visible()
    assert "#token" not in page.url, "the token stayed in the address bar"

    live = uid()
    await publisher.publish("order_created", live, user="bob", name="create_order")
    row = page.locator(f'tr[data-id="{live}"]')
    await expect(row).to_be_visible(timeout=15_000)
    await expect(row).to_have_attribute("data-state", "completed")
    await expect(page.get_by_test_id("count-completed")).to_have_text("1")
    await expect(page.get_by_test_id("count-pending")).to_have_text("1")


async def _exists(http: httpx.AsyncClient, op: str, token: str) -> bool:
    response = await http.get(f"/operations/{op}", headers={"Authorization": f"Bearer {token}"})
    return response.status_code == 200


async def test_the_filters_work(
    service: RunningService, publisher: Publisher, browser: Browser, token: Token
) -> None:
    ops = {
        uid(): ("create_order", "alice"),
        uid(): ("order_created", "bob"),
        uid(): ("create_order_rejected", "carol"),
    }
    for op, (message, user) in ops.items():
        await publisher.publish(
            message, op, user=user, name=message, body={"code": "nope", "reason": "no stock left"}
        )
    page = await open_dashboard(browser, service, token("ops", "admin"))
    rows = page.get_by_test_id("operations").locator("tr")
    await expect(rows).to_have_count(3, timeout=15_000)

    await page.get_by_test_id("filter-state").select_option("rejected")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-state", "rejected")
    await page.get_by_test_id("filter-state").select_option("")

    await page.get_by_test_id("filter-user").fill("bob")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("order_created")
    await page.get_by_test_id("filter-user").fill("")

    await page.get_by_test_id("filter-name").fill("create_order")
    await expect(rows).to_have_count(2)
    await page.get_by_test_id("filter-name").fill("")

    await page.get_by_test_id("filter-text").fill("no stock")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("carol")


async def test_the_timeline_of_a_saga_opens_with_its_steps_and_compensation(
    service: RunningService, settings: Settings, browser: Browser, token: Token
) -> None:
    user = uid()
    async with httpx.AsyncClient(base_url=service.url) as http:
        async with DemoServices(settings.amqp_url, latency_ms=0):
            done = await _order(http, token(user))
            await eventually(lambda: _state(http, done, token(user), "completed"), "completion")
        plan = FailurePlan({"reserve_resource": 1.0})
        async with DemoServices(settings.amqp_url, latency_ms=0, failures=plan):
            failed = await _order(http, token(user))
            await eventually(lambda: _state(http, failed, token(user), "rejected"), "rejection")

    page = await open_dashboard(browser, service, token("ops", "admin"))
    await expect(page.get_by_test_id("sagas-completed")).to_have_text("1", timeout=15_000)
    await expect(page.get_by_test_id("sagas-rejected")).to_have_text("1")
    await page.locator(f'tr[data-id="{failed}"]').click()
    timeline = page.get_by_test_id("timeline")
    await expect(timeline).to_be_visible()
    transitions = page.get_by_test_id("transitions").locator("li")
    await expect(transitions.last).to_contain_text("cancel_order", timeout=10_000)
    await expect(transitions.first).to_contain_text("make_order")
    saga = page.get_by_test_id("saga")
    await expect(saga).to_contain_text("order_making")
    await expect(saga).to_contain_text("compensated")
    await expect(saga).to_contain_text("reserve_resource_failed")

    await page.get_by_test_id("saga-status").select_option("rejected")
    await expect(page.get_by_test_id("sagas").locator("tr")).to_have_count(1, timeout=10_000)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    await page.screenshot(path=str(SCREENSHOT), full_page=True)


async def _order(http: httpx.AsyncClient, token: str) -> str:
    response = await http.post(
        "/orders",
        json={"customerId": uid(), "parcelIds": [uid(), uid()]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 202
    return str(response.json()["operationId"])


async def _state(http: httpx.AsyncClient, op: str, token: str, state: str) -> bool:
    response = await http.get(f"/operations/{op}", headers={"Authorization": f"Bearer {token}"})
    return response.status_code == 200 and response.json()["state"] == state


@pytest.mark.parametrize("who", ["user", "garbage"])
async def test_a_non_admin_token_is_refused(
    service: RunningService, browser: Browser, token: Token, who: str
) -> None:
    value = token("alice") if who == "user" else "not-a-token"
    page = await open_dashboard(browser, service, value)
    refused = page.get_by_test_id("refused")
    await expect(refused).to_be_visible(timeout=15_000)
    await expect(refused).to_contain_text("admin role")
    await expect(page.locator("#main")).to_be_hidden()
