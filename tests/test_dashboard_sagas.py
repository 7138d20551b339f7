"""The dashboard's saga view in a real headless Chromium, against the running service: a saga's
timeline with its steps and compensation, active, compensating and compensation_failed sagas,
and counts and filters for every status, new ones included."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, Route, expect

from operations.pacco.demo import FailurePlan
from operations.sagas import RedisSagaStore
from operations.settings import Settings
from operations.store.shards import Shards
from operations.timestamps import rfc3339
from tests.api import bearer
from tests.dashboard_support import (
    GATES,
    ParcelReturnSaga,
    Token,
    _order_through,
    gadget_sagas,
    live_dashboard,
    row,
)
from tests.sagas_support import Harness
from tests.support import RunningService, uid

pytestmark = pytest.mark.browser


async def test_the_timeline_of_a_saga_opens_with_its_steps_and_compensation(
    service: RunningService, settings: Settings, browser: Browser, token: Token
) -> None:
    user = uid()
    async with httpx.AsyncClient(base_url=service.url) as http:
        completed = await _order_through(http, settings, token(user), None)
        rejected = await _order_through(
            http, settings, token(user), FailurePlan({"reserve_resource": 1.0})
        )
        response = await http.get(
            f"/operations/{rejected}/history",
            headers=bearer(token(user)),
        )
        history = response.json()["items"]

    page = await live_dashboard(browser, service, token("ops", "admin"))
    await expect(page.get_by_test_id("sagas-completed")).to_have_text("1", timeout=15_000)
    await expect(page.get_by_test_id("sagas-rejected")).to_have_text("1")
    await expect(row(page, completed)).to_have_attribute("data-state", "completed")
    await row(page, rejected).click()
    await expect(page.get_by_test_id("timeline")).to_be_visible()
    transitions = page.get_by_test_id("transitions").locator("li")
    await expect(transitions).to_have_count(len(history), timeout=10_000)
    await expect(transitions.last).to_contain_text("cancel_order")
    await expect(transitions.first).to_contain_text("make_order")
    for item, entry in zip(await transitions.all(), history, strict=True):
        assert await item.locator(".message-id").inner_text() == entry["messageId"]
    saga = page.get_by_test_id("saga")
    await expect(saga).to_contain_text("order_making")
    await expect(saga.locator(".badge")).to_have_text("rejected")
    await expect(saga.locator(".compensated").first).to_be_visible()
    await expect(saga).to_contain_text("reserve_resource_failed")

    await page.get_by_test_id("saga-status").select_option("rejected")
    sagas = page.get_by_test_id("sagas").locator("tr")
    await expect(sagas).to_have_count(1, timeout=10_000)
    await expect(sagas.first).to_have_attribute("data-id", rejected)


async def test_the_saga_view_shows_an_active_and_a_compensation_failed_saga(
    service: RunningService,
    settings: Settings,
    redis_client: aioredis.Redis,
    browser: Browser,
    token: Token,
) -> None:
    active, failed = await gadget_sagas(redis_client, settings)
    page = await live_dashboard(browser, service, token("ops", "admin"))
    await expect(page.get_by_test_id("sagas-pending")).to_have_text("1", timeout=15_000)
    await expect(page.get_by_test_id("sagas-compensation_failed")).to_have_text("1")
    for status in ("compensating", "completed", "rejected"):
        await expect(page.get_by_test_id(f"sagas-{status}")).to_have_text("0")

    sagas = page.get_by_test_id("sagas").locator("tr")
    await expect(sagas).to_have_count(2)
    await page.get_by_test_id("saga-status").select_option("pending")
    await expect(sagas).to_have_count(1)
    await expect(sagas.first).to_have_attribute("data-id", active)
    await expect(sagas.first.locator(".badge")).to_have_class("badge pending")
    await page.get_by_test_id("saga-status").select_option("compensation_failed")
    await expect(sagas).to_have_count(1)
    await expect(sagas.first).to_have_attribute("data-id", failed)
    await expect(sagas.first.locator(".badge")).to_have_text("compensation failed")
    await expect(sagas.first).to_contain_text("shop_closed the shop closed")
    await expect(sagas.first).to_contain_text("gadget_ordered ✗ → gadget_refused")


async def test_the_saga_view_shows_a_saga_while_it_compensates(
    service: RunningService,
    settings: Settings,
    redis_client: aioredis.Redis,
    browser: Browser,
    token: Token,
) -> None:
    store = RedisSagaStore(redis_client, settings.key_prefix, Shards(settings.redis_shards))
    harness = Harness.build(store, [ParcelReturnSaga])
    saga_id = uid()
    GATES[saga_id] = gate = asyncio.Event()
    await harness.send("return_requested", correlation_id=saga_id)
    refusal = asyncio.create_task(harness.send("return_refused", correlation_id=saga_id))
    try:
        page = await live_dashboard(browser, service, token("ops", "admin"))
        await expect(page.get_by_test_id("sagas-compensating")).to_have_text("1", timeout=15_000)
        await page.get_by_test_id("saga-status").select_option("compensating")
        sagas = page.get_by_test_id("sagas").locator("tr")
        await expect(sagas).to_have_count(1)
        await expect(sagas.first).to_have_attribute("data-id", saga_id)
        await expect(sagas.first.locator(".badge")).to_have_class("badge compensating")
        await expect(sagas.first).to_contain_text("parcel_lost the parcel is lost")
    finally:
        gate.set()
        await refusal
        del GATES[saga_id]
    # The view follows the saga to its end.
    await expect(page.get_by_test_id("sagas-compensating")).to_have_text("0", timeout=15_000)
    await expect(page.get_by_test_id("sagas-rejected")).to_have_text("1")
    await expect(sagas).to_have_count(0)
    await page.get_by_test_id("saga-status").select_option("rejected")
    await expect(sagas.first).to_contain_text("return_requested ↺ → return_refused")


async def test_the_saga_view_counts_and_filters_every_status_and_copes_with_new_ones(
    service: RunningService,
    settings: Settings,
    redis_client: aioredis.Redis,
    browser: Browser,
    token: Token,
) -> None:
    """The service's real answer, with the second saga's status rewritten on the way to the page:
    ``compensating`` (a rejected saga still compensating) and a status the page has never heard
    of must both be counted, shown and filterable."""
    active, failed = await gadget_sagas(redis_client, settings)
    rewritten = {failed: "compensating"}
    extra = {**_saga_stub(uid(), "on_hold"), "saga": "gadget_order"}

    async def rewrite(route: Route) -> None:
        response = await route.fetch()
        body = await response.json()
        for item in body["items"]:
            item["status"] = rewritten.get(item["id"], item["status"])
        body["items"].append(extra)
        await route.fulfill(response=response, body=json.dumps(body))

    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    await page.route(lambda url: urlsplit(url).path == "/sagas", rewrite)
    await page.goto(f"{service.url}/dashboard/#token={token('ops', 'admin')}")
    await expect(page.get_by_test_id("status")).to_have_text("live", timeout=15_000)
    expected = {
        "pending": "1",
        "compensating": "1",
        "completed": "0",
        "rejected": "0",
        "compensation_failed": "0",
        "on_hold": "1",
    }
    for status, count in expected.items():
        await expect(page.get_by_test_id(f"sagas-{status}")).to_have_text(count, timeout=10_000)

    sagas = page.get_by_test_id("sagas").locator("tr")
    await expect(sagas).to_have_count(3)
    for status, saga_id in (
        ("pending", active),
        ("compensating", failed),
        ("on_hold", extra["id"]),
    ):
        await page.get_by_test_id("saga-status").select_option(status)
        await expect(sagas).to_have_count(1)
        await expect(sagas.first).to_have_attribute("data-id", saga_id)
    await expect(sagas.first.locator(".badge")).to_have_class("badge other")
    await expect(sagas.first.locator(".badge")).to_have_text("on hold")
    await page.get_by_test_id("saga-status").select_option("compensating")
    await expect(sagas.first.locator(".badge")).to_have_class("badge compensating")
    await page.get_by_test_id("saga-status").select_option("")
    await expect(sagas).to_have_count(3)


def _saga_stub(saga_id: str, status: str) -> dict[str, Any]:
    now = rfc3339(time.time())
    return {
        "saga": "gadget_order",
        "id": saga_id,
        "status": status,
        "data": {},
        "correlationId": saga_id,
        "messageContext": {},
        "steps": [],
        "deadline": None,
        "reason": None,
        "code": None,
        "createdAt": now,
        "updatedAt": now,
    }
