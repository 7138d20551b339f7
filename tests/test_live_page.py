"""The browser page at /live/ in a real headless Chromium, against the running service: the list
and its live changes, and for operations a saga drives, the name they started with, a progress
bar over the saga's path, the rejection reason in plain words, and Cancel with its confirmation.

With ``OPERATIONS_SCREENSHOT_DIR`` set (``make screenshot``), it saves ``live-page.png`` there."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, Request, Route, expect

from operations.auth.tokens import mint
from operations.pacco.demo import DemoServices, FailurePlan
from operations.pacco.ordermaking import OrderMakingSaga
from operations.records import Operation
from operations.settings import Settings
from tests.api import place_order
from tests.browser import chromium, screenshot, watched_page
from tests.dashboard_support import _order_through
from tests.support import Publisher, RunningService, eventually, uid

pytestmark = pytest.mark.browser

Token = Callable[..., str]
WAIT_MS = 15_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as running:
        yield running


async def applied(service: RunningService, op: str, version: int) -> Operation:
    async def stored() -> Operation | None:
        record = await service.service.store.get(op)
        return record if record is not None and record.version >= version else None

    return await eventually(stored, f"{op} at version {version} in the store")


async def open_live(browser: Browser, service: RunningService, token: str) -> Page:
    page = await browser.new_page()
    await page.goto(f"{service.url}/live/#token={token}")
    return page


def row(page: Page, op: str) -> Locator:
    return page.locator(f'#operations tbody tr[data-id="{op}"]')


async def test_the_page_lists_existing_operations_and_shows_changes_live(
    service: RunningService, publisher: Publisher, browser: Browser, token: Token
) -> None:
    user, before = uid(), uid()
    jwt = token(user)
    await publisher.publish("create_order", before, user=user, name="create_order")
    await applied(service, before, 1)

    requests: list[Request] = []
    page = await browser.new_page()
    page.on("request", lambda request: requests.append(request))
    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    await page.goto(f"{service.url}/live/#token={jwt}")
    await expect(page.locator("#status")).to_have_text("connected", timeout=WAIT_MS)
    await expect(row(page, before)).to_have_attribute("data-state", "pending", timeout=WAIT_MS)
    assert "#token" not in page.url, "the token stayed in the address bar"

    someone_elses, live = uid(), uid()
    await publisher.publish("create_order", someone_elses, user=uid(), name="create_order")
    await publisher.publish("order_created", live, user=user, name="create_order")
    await expect(row(page, live)).to_have_attribute("data-state", "completed", timeout=WAIT_MS)
    await expect(row(page, live).locator(".badge")).to_have_text("completed")
    await publisher.publish("order_created", before, user=user, name="create_order")
    await expect(row(page, before)).to_have_attribute("data-state", "completed", timeout=WAIT_MS)
    await expect(row(page, before)).to_have_attribute("data-version", "2")
    # Another user's change was applied before this user's: it would have arrived first.
    await applied(service, someone_elses, 1)
    await expect(row(page, someone_elses)).to_have_count(0)
    await expect(page.locator("#operations tbody tr")).to_have_count(2)

    listed = [r for r in requests if urlsplit(r.url).path == "/operations"]
    assert listed, "the page did not ask for the list"
    for request in listed:
        assert (await request.all_headers())["authorization"] == f"Bearer {jwt}"
    assert sockets, "the page did not open a WebSocket"
    for url in [r.url for r in requests] + sockets:
        assert jwt not in url, f"the token went into a URL: {url}"


async def test_a_reload_shows_the_full_list(
    service: RunningService, publisher: Publisher, browser: Browser, token: Token
) -> None:
    user = uid()
    ops = {uid(): "pending", uid(): "completed", uid(): "rejected"}
    messages = {
        "pending": "create_order",
        "completed": "order_created",
        "rejected": "create_order_rejected",
    }
    for op, state in ops.items():
        await publisher.publish(
            messages[state],
            op,
            user=user,
            name="create_order",
            body={"code": "no_parcels", "reason": "nothing to ship"},
        )
    for op in ops:
        await applied(service, op, 1)

    page = await open_live(browser, service, token(user))
    live = uid()
    await expect(page.locator("#status")).to_have_text("connected", timeout=WAIT_MS)
    await publisher.publish("create_order", live, user=user, name="create_order")
    await expect(row(page, live)).to_have_attribute("data-state", "pending", timeout=WAIT_MS)
    ops[live] = "pending"

    for attempt in range(2):  # as first opened, then after a reload
        if attempt:
            await page.goto("about:blank")
            await page.goto(f"{service.url}/live/#token={token(user)}")
        await expect(page.locator("#operations")).to_have_attribute(
            "aria-busy", "false", timeout=WAIT_MS
        )
        await expect(page.locator("#operations tbody tr")).to_have_count(len(ops))
        for op, state in ops.items():
            await expect(row(page, op)).to_have_attribute("data-state", state)
        rejected = next(op for op, state in ops.items() if state == "rejected")
        await expect(row(page, rejected)).to_contain_text("nothing to ship")
        await expect(page.locator("#empty")).to_be_hidden()


async def test_a_late_list_does_not_overwrite_a_newer_live_change(
    service: RunningService, publisher: Publisher, browser: Browser, token: Token
) -> None:
    user, op = uid(), uid()
    await publisher.publish("create_order", op, user=user, name="create_order")
    await applied(service, op, 1)

    answered, release = asyncio.Event(), asyncio.Event()

    async def held(route: Route) -> None:
        response = await route.fetch()  # the list as it is now: the operation at version 1
        answered.set()
        await release.wait()
        await route.fulfill(response=response)

    page = await browser.new_page()
    await page.route(lambda url: urlsplit(url).path == "/operations", held)
    await page.goto(f"{service.url}/live/#token={token(user)}")
    await expect(page.locator("#status")).to_have_text("connected", timeout=WAIT_MS)
    await asyncio.wait_for(answered.wait(), timeout=WAIT_MS / 1000)

    await publisher.publish("order_created", op, user=user, name="create_order")
    await expect(row(page, op)).to_have_attribute("data-version", "2", timeout=WAIT_MS)
    release.set()
    await expect(page.locator("#operations")).to_have_attribute(
        "aria-busy", "false", timeout=WAIT_MS
    )
    await expect(row(page, op)).to_have_attribute("data-state", "completed")
    await expect(row(page, op)).to_have_attribute("data-version", "2")


async def segment_marks(page: Page, op: str) -> list[str]:
    segments = row(page, op).locator(".segment")
    return [str(await s.get_attribute("data-mark")) for s in await segments.all()]


async def test_a_sagas_operation_shows_its_start_name_progress_and_plain_reason(
    service: RunningService, settings: Settings, browser: Browser, token: Token
) -> None:
    user = uid()
    async with httpx.AsyncClient(base_url=service.url) as http:
        failed = await _order_through(
            http, settings, token(user), FailurePlan({"reserve_resource": 1.0})
        )
        page, watch = await watched_page(browser, f"{service.url}/live/#token={token(user)}")
        await expect(page.locator("#status")).to_have_text("connected", timeout=WAIT_MS)
        async with DemoServices(settings.amqp_url, latency_ms=2500):
            running = await place_order(http, token(user), parcels=2)
            await expect(row(page, running).locator(".step-label")).to_have_text(
                "step 2 of 5: waiting for order created", timeout=WAIT_MS
            )
            await expect(row(page, running).locator(".start-name")).to_have_text("make_order")
            assert await segment_marks(page, running) == ["done", "current"] + ["ahead"] * 3
            names = row(page, running).locator(".segment")
            await expect(names).to_have_text([m.replace("_", " ") for m in OrderMakingSaga.path])
            await expect(row(page, running).locator(".step-label")).to_have_attribute(
                "data-step", "4", timeout=WAIT_MS
            )
            assert await segment_marks(page, running) == ["done"] * 3 + ["current", "ahead"]
            await expect(row(page, failed).locator(".start-name")).to_have_text("make_order")
            await expect(row(page, failed).locator(".latest")).to_have_text("latest: cancel_order")
            await screenshot(page, "live-page.png", full_page=False)
            await expect(row(page, running)).to_have_attribute(
                "data-state", "completed", timeout=WAIT_MS
            )
    await expect(row(page, running).locator(".step-label")).to_have_text("all 5 steps done")
    assert await segment_marks(page, running) == ["done"] * 5
    await expect(row(page, failed).locator(".reason")).to_have_text(
        "Failed at step 5 of 5 (order approved): The vehicle could not be reserved for the order."
    )
    assert await segment_marks(page, failed) == ["compensated"] * 4 + ["stopped"]
    await expect(row(page, failed).locator("button")).to_have_count(0)
    watch.assert_clean()


async def test_cancel_from_the_live_page_asks_first_and_shows_the_outcome_live(
    service: RunningService, browser: Browser, token: Token
) -> None:
    user = uid()
    async with httpx.AsyncClient(base_url=service.url) as http:
        # No simulated services: it waits for order_created.
        op = await place_order(http, token(user), parcels=2)
    page, watch = await watched_page(browser, f"{service.url}/live/#token={token(user)}")
    await expect(row(page, op).locator("button.cancel")).to_be_visible(timeout=WAIT_MS)

    await row(page, op).locator("button.cancel").click()
    await expect(row(page, op).locator(".confirm")).to_contain_text("Cancel this operation?")
    await row(page, op).locator("button.keep").click()
    await expect(row(page, op).locator(".confirm")).to_have_count(0)
    await page.wait_for_timeout(500)
    await expect(row(page, op)).to_have_attribute("data-state", "pending")

    await row(page, op).locator("button.cancel").click()
    await row(page, op).locator("button.confirm-cancel").click()
    await expect(row(page, op)).to_have_attribute("data-state", "rejected", timeout=WAIT_MS)
    await expect(row(page, op).locator(".outcome")).to_have_text(
        "Cancelling: the steps done are being undone."
    )
    await expect(row(page, op).locator(".reason")).to_have_text("You cancelled it.")
    await expect(row(page, op).locator("button")).to_have_count(0)
    await expect(row(page, op)).to_have_attribute("data-saga", "rejected", timeout=WAIT_MS)
    watch.assert_clean()


async def test_a_refused_token_is_named_on_the_page(
    service: RunningService, browser: Browser
) -> None:
    """The client passes on why the service refused its socket, and the page says it in words."""
    forged = mint("another secret, long enough to sign with", uid(), (), 600)
    page = await open_live(browser, service, forged)
    try:
        await expect(page.locator("#status")).to_have_text("token refused", timeout=WAIT_MS)
    finally:
        await page.close()
