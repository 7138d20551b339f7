"""The ops dashboard's operations view in a real headless Chromium, against the running service:
operations live and newest first, state badges, filters, the throughput sparkline and
timelines; and the whole dashboard with real data.

``OPERATIONS_DASHBOARD_SCREENSHOT=path`` makes ``test_the_dashboard_with_real_data`` save a
screenshot there (``make screenshot`` writes docs/dashboard.png)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, Page, expect

from operations.pacco.demo import FailurePlan
from operations.settings import Settings
from tests.api import bearer
from tests.dashboard_support import (
    Token,
    _order_through,
    applied,
    gadget_sagas,
    live_dashboard,
    open_dashboard,
    row,
)
from tests.support import Publisher, RunningService, eventually, uid

pytestmark = pytest.mark.browser

SCREENSHOT_VARIABLE = "OPERATIONS_DASHBOARD_SCREENSHOT"


ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


FLAT = 29.0  # the sparkline's y for a second without changes


async def row_ids(page: Page) -> list[str]:
    rows = page.get_by_test_id("operations").locator("tr")
    return [str(await r.get_attribute("data-id")) for r in await rows.all()]


async def test_the_page_loads_and_shows_a_published_message_live(
    service: RunningService, publisher: Publisher, browser: Browser, token: Token
) -> None:
    before = uid()
    await publisher.publish("create_order", before, user="alice")
    await applied(service, token("ops", "admin"), before)
    page = await live_dashboard(browser, service, token("ops", "admin"))
    await expect(row(page, before)).to_be_visible()
    assert "#token" not in page.url, "the token stayed in the address bar"

    live = uid()
    await publisher.publish("order_created", live, user="bob", name="create_order")
    await expect(row(page, live)).to_be_visible(timeout=15_000)
    await expect(row(page, live)).to_have_attribute("data-state", "completed")
    await expect(page.get_by_test_id("count-completed")).to_have_text("1")
    await expect(page.get_by_test_id("count-pending")).to_have_text("1")


async def test_operations_are_listed_newest_first_when_loaded_and_live(
    service: RunningService, publisher: Publisher, browser: Browser, token: Token
) -> None:
    admin = token("ops", "admin")
    first, second = uid(), uid()
    await publisher.publish("create_order", first, user="alice")
    await applied(service, admin, first)
    await publisher.publish("create_order", second, user="alice")
    await applied(service, admin, second)

    page = await live_dashboard(browser, service, admin)
    await expect(page.get_by_test_id("operations").locator("tr")).to_have_count(2)
    assert await row_ids(page) == [second, first], "loaded operations are not newest first"

    third, fourth = uid(), uid()
    await publisher.publish("create_order", third, user="bob")
    await expect(row(page, third)).to_be_visible(timeout=15_000)
    await publisher.publish("create_order", fourth, user="bob")
    await expect(row(page, fourth)).to_be_visible(timeout=15_000)
    assert await row_ids(page) == [fourth, third, second, first]

    # A later change of an old operation does not move it: the order is by creation.
    await publisher.publish("order_created", first, user="alice")
    await expect(row(page, first)).to_have_attribute("data-state", "completed", timeout=15_000)
    assert await row_ids(page) == [fourth, third, second, first]


@pytest.mark.parametrize(
    ("message", "state"),
    [
        ("create_order", "pending"),
        ("order_created", "completed"),
        ("create_order_rejected", "rejected"),
    ],
)
async def test_each_row_has_a_badge_for_its_state(
    service: RunningService,
    publisher: Publisher,
    browser: Browser,
    token: Token,
    message: str,
    state: str,
) -> None:
    page = await live_dashboard(browser, service, token("ops", "admin"))
    op = uid()
    await publisher.publish(
        message, op, user="alice", body={"code": "out_of_stock", "reason": "no stock left"}
    )
    badge = row(page, op).locator("td").first.locator(".badge")
    await expect(badge).to_have_count(1, timeout=15_000)
    await expect(badge).to_have_text(state)
    await expect(badge).to_have_class(f"badge {state}")
    await expect(page.get_by_test_id(f"count-{state}")).to_have_text("1")


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


async def sparkline(page: Page) -> list[float]:
    points = await page.locator("#sparkline polyline").get_attribute("points")
    return [float(pair.split(",")[1]) for pair in (points or "").split()]


async def rate(page: Page) -> float:
    return float(await page.get_by_test_id("rate").inner_text())


async def test_the_sparkline_and_the_rate_move_with_live_traffic(
    service: RunningService, publisher: Publisher, browser: Browser, token: Token
) -> None:
    page = await live_dashboard(browser, service, token("ops", "admin"))
    quiet = await sparkline(page)
    assert len(quiet) == 60 and set(quiet) == {FLAT}, "the sparkline is not flat before traffic"
    assert await rate(page) == 0

    burst = [uid() for _ in range(12)]
    for op in burst:
        await publisher.publish("create_order", op, user="alice")
    await expect(page.get_by_test_id("rate")).to_have_attribute(
        "data-changes", "12", timeout=15_000
    )
    assert await rate(page) > 0
    moved = await sparkline(page)
    assert moved != quiet and min(moved) < FLAT, f"the sparkline did not move: {moved}"

    async def shifted() -> bool:  # a second later the burst has moved left
        now = await sparkline(page)
        return now != moved and min(now) < FLAT and now.index(min(now)) < moved.index(min(moved))

    await eventually(shifted, "the sparkline to shift left", timeout=10)


async def test_the_timeline_shows_every_transition_with_its_time_step_and_message_id(
    service: RunningService, publisher: Publisher, browser: Browser, token: Token
) -> None:
    admin = token("ops", "admin")
    op, sent = uid(), []
    steps = [
        ("create_order", "place_order"),
        ("add_parcel_to_order", "add_parcels"),
        ("order_created", "order_placed"),
    ]
    for version, (message, name) in enumerate(steps[:2], start=1):
        sent.append(await publisher.publish(message, op, user="alice", name=name))
        await applied(service, admin, op, version)

    page = await live_dashboard(browser, service, admin)
    await row(page, op).click()
    await expect(page.get_by_test_id("timeline")).to_be_visible()
    await expect(page.locator("#timeline-id")).to_have_text(op)
    transitions = page.get_by_test_id("transitions").locator("li")
    await expect(transitions).to_have_count(2, timeout=10_000)
    # The open timeline follows a live change of its operation.
    message, name = steps[2]
    sent.append(await publisher.publish(message, op, user="alice", name=name))
    await expect(transitions).to_have_count(3, timeout=15_000)

    async with httpx.AsyncClient(base_url=service.url) as http:
        response = await http.get(f"/operations/{op}/history", headers=bearer(admin))
    history = response.json()["items"]
    assert [entry["messageId"] for entry in history] == sent
    assert len(await transitions.all()) == len(history)
    for item, entry in zip(await transitions.all(), history, strict=True):
        at = await item.locator(".at").inner_text()
        assert ISO_TIME.match(at), f"not an ISO time: {at!r}"
        assert at == entry["at"]
        assert await item.locator(".step").inner_text() == entry["name"]
        assert await item.locator(".message-id").inner_text() == entry["messageId"]
        await expect(item.locator(".badge")).to_have_text(entry["state"])
    assert [entry["name"] for entry in history] == [name for _, name in steps]
    await expect(transitions.last.locator(".message")).to_have_text("order_created")


async def test_the_dashboard_with_real_data(
    service: RunningService,
    settings: Settings,
    publisher: Publisher,
    redis_client: aioredis.Redis,
    browser: Browser,
    token: Token,
) -> None:
    """Plain operations in every state, two order-maker sagas (one compensated), an active and a
    compensation_failed saga, live traffic on the sparkline, and a compensated saga's timeline."""
    admin = token("ops", "admin")
    for user, message, name in [
        ("alice", "create_order", "create_order"),
        ("bob", "order_created", "create_order"),
        ("carol", "create_order_rejected", "create_order"),
    ]:
        op = uid()
        await publisher.publish(
            message, op, user=user, name=name, body={"code": "out_of_stock", "reason": "no stock"}
        )
        await applied(service, admin, op)
    buyer = uid()
    async with httpx.AsyncClient(base_url=service.url) as http:
        await _order_through(http, settings, token(buyer), None)
        rejected = await _order_through(
            http, settings, token(buyer), FailurePlan({"reserve_resource": 1.0})
        )
    await gadget_sagas(redis_client, settings)

    page = await live_dashboard(browser, service, admin)
    users = ["dave", "erin", "frank", "grace"]
    names = ["create_order", "add_parcel", "reserve_vehicle", "update_customer"]
    for wave, size in enumerate([2, 4, 1, 5, 3, 3]):
        ops = [uid() for _ in range(size)]
        for n, op in enumerate(ops):
            user, name = users[(wave + n) % 4], names[(wave * 3 + n) % 4]
            await publisher.publish("create_order", op, user=user, name=name)
        await expect(row(page, ops[-1])).to_be_visible(timeout=15_000)
        await page.wait_for_timeout(1100)  # spreads the waves over the sparkline's seconds
    await publisher.publish("order_created", ops[0], user=users[1], name="order_created")
    await publisher.publish(
        "create_order_rejected",
        ops[1],
        user=users[2],
        name="order_rejected",
        body={"code": "no_vehicle", "reason": "no vehicle free that day"},
    )
    await expect(row(page, ops[1])).to_have_attribute("data-state", "rejected", timeout=15_000)
    assert await rate(page) > 0
    assert len({y for y in await sparkline(page) if y < FLAT}) >= 2, "the sparkline shows no shape"
    for state in ("pending", "completed", "rejected"):
        await expect(page.locator(f'tr[data-state="{state}"]').first).to_be_visible()
    for status in ("pending", "completed", "rejected", "compensation_failed"):
        await expect(page.get_by_test_id(f"sagas-{status}")).not_to_have_text("0", timeout=10_000)

    await row(page, rejected).click()
    saga = page.get_by_test_id("saga")
    await expect(saga.locator(".compensated").first).to_be_visible(timeout=10_000)
    await expect(page.get_by_test_id("transitions").locator("li").last).to_contain_text(
        "cancel_order"
    )
    await page.locator("section.operations").evaluate("table => { table.scrollTop = 0; }")
    target = os.environ.get(SCREENSHOT_VARIABLE)
    if target:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        image = await page.screenshot(path=str(path), full_page=True)
        assert len(image) > 10_000
