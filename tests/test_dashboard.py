"""The ops dashboard in a real headless Chromium, against the running service: operations live and
newest first, state badges, filters, the throughput sparkline, timelines, the saga view, sign-in,
and the token kept out of every URL. Plus checks on the static files that need no browser.

``OPERATIONS_DASHBOARD_SCREENSHOT=path`` makes ``test_the_dashboard_with_real_data`` save a
screenshot there (``make screenshot`` writes docs/dashboard.png)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, Page, Request, Route, WebSocket, expect

from operations.demo import DemoServices, FailurePlan
from operations.sagas import (
    RedisSagaStore,
    Saga,
    SagaContext,
    SagaMessage,
    compensates,
    start,
    step,
)
from operations.settings import Settings
from operations.shards import Shards
from tests.browser import chromium
from tests.sagas_support import Harness
from tests.support import Publisher, RunningService, eventually

Token = Callable[..., str]
ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "hub" / "static"
VENDOR = STATIC / "vendor"
SCREENSHOT_VARIABLE = "OPERATIONS_DASHBOARD_SCREENSHOT"
ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
FLAT = 29.0  # the sparkline's y for a second without changes


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as running:
        yield running


async def open_dashboard(browser: Browser, service: RunningService, token: str) -> Page:
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    await page.goto(f"{service.url}/dashboard/#token={token}")
    return page


async def live_dashboard(browser: Browser, service: RunningService, token: str) -> Page:
    page = await open_dashboard(browser, service, token)
    await expect(page.get_by_test_id("status")).to_have_text("live", timeout=15_000)
    return page


def uid() -> str:
    return str(uuid.uuid4())


def row(page: Page, operation_id: str) -> Any:
    return page.get_by_test_id("operations").locator(f'tr[data-id="{operation_id}"]')


async def _record(http: httpx.AsyncClient, op: str, token: str) -> dict[str, Any] | None:
    response = await http.get(f"/operations/{op}", headers={"Authorization": f"Bearer {token}"})
    return response.json() if response.status_code == 200 else None  # type: ignore[no-any-return]


async def applied(service: RunningService, token: str, op: str, version: int = 1) -> None:
    """Wait until the service has applied ``version`` changes of ``op``."""

    async def check() -> bool:
        async with httpx.AsyncClient(base_url=service.url) as http:
            record = await _record(http, op, token)
        return record is not None and record["version"] >= version

    await eventually(check, f"version {version} of {op}")


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
        response = await http.get(
            f"/operations/{op}/history", headers={"Authorization": f"Bearer {admin}"}
        )
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
            headers={"Authorization": f"Bearer {token(user)}"},
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


async def _order_through(
    http: httpx.AsyncClient, settings: Settings, token: str, failures: FailurePlan | None
) -> str:
    """Places an order with the simulated services running; waits until its saga finishes."""
    final = "completed" if failures is None else "rejected"
    async with DemoServices(settings.amqp_url, latency_ms=0, failures=failures):
        response = await http.post(
            "/orders",
            json={"customerId": uid(), "parcelIds": [uid(), uid()]},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 202
        op = str(response.json()["operationId"])

        async def finished() -> bool:
            record = await _record(http, op, token)
            return record is not None and record["state"] == final

        await eventually(finished, f"the order to be {final}", timeout=30)
    return op


@dataclass
class GadgetData:
    gadget: str = ""


class GadgetSaga(Saga[GadgetData]):
    """A saga whose only compensation always fails: a refusal leaves it compensation_failed."""

    name = "gadget_order"
    data_type = GadgetData

    @start("gadget_ordered")
    async def ordered(self, message: SagaMessage, context: SagaContext) -> None:
        self.data.gadget = str(message.get("gadget", ""))

    @compensates("gadget_ordered")
    async def unorder(self, message: SagaMessage, context: SagaContext) -> None:
        raise RuntimeError("the gadget supplier cannot cancel")

    @step("gadget_refused")
    async def refused(self, message: SagaMessage, context: SagaContext) -> None:
        self.reject(str(message.get("reason")), message.get("code"))


async def gadget_sagas(redis_client: aioredis.Redis, settings: Settings) -> tuple[str, str]:
    """Two sagas in the service's own saga store: one active, one whose compensation failed."""
    store = RedisSagaStore(redis_client, settings.key_prefix, Shards(settings.redis_shards))
    harness = Harness.build(store, [GadgetSaga])
    context = {"user": {"id": "gadget-buyer"}, "name": "order_gadget"}
    active, failed = uid(), uid()
    for saga_id in (active, failed):
        await harness.send(
            "gadget_ordered", {"gadget": "lamp"}, correlation_id=saga_id, message_context=context
        )
    await harness.send(
        "gadget_refused",
        {"reason": "the shop closed", "code": "shop_closed"},
        correlation_id=failed,
        message_context=context,
    )
    assert (await harness.record("gadget_order", failed)).status.value == "compensation_failed"
    return active, failed


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


GATES: dict[str, asyncio.Event] = {}


class ParcelReturnSaga(Saga[GadgetData]):
    """A saga whose compensation waits for the test's go: it stays compensating until then."""

    name = "parcel_return"
    data_type = GadgetData

    @start("return_requested")
    async def requested(self, message: SagaMessage, context: SagaContext) -> None:
        self.data.gadget = "parcel"

    @compensates("return_requested")
    async def unrequest(self, message: SagaMessage, context: SagaContext) -> None:
        await GATES[self.id].wait()

    @step("return_refused")
    async def refused(self, message: SagaMessage, context: SagaContext) -> None:
        self.reject("the parcel is lost", "parcel_lost")


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
    now = time.time()
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


def test_the_vendored_socket_io_client_is_recorded_with_its_licence() -> None:
    scripts = sorted(VENDOR.glob("socket.io-*.min.js"))
    assert len(scripts) == 1, scripts
    version = scripts[0].name.removeprefix("socket.io-").removesuffix(".min.js")
    assert scripts[0].read_text(encoding="utf-8").startswith(f"/*!\n * Socket.IO v{version}\n")
    licence = (VENDOR / "socket.io-client.LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in licence and "Guillermo Rauch" in licence
    record = (VENDOR / "README.md").read_text(encoding="utf-8")
    assert f"socket.io-client@{version}" in record
    assert "dist/socket.io.min.js" in record


@pytest.mark.parametrize("page", ["dashboard/index.html", "index.html"])
def test_the_pages_load_nothing_from_outside(page: str) -> None:
    html = (STATIC / page).read_text(encoding="utf-8")
    references = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]+)""", html, re.IGNORECASE)
    assert references, "no src or href found: the check would prove nothing"
    external = [ref for ref in references if re.match(r"^(?:[a-z][a-z0-9+.-]*:)?//", ref, re.I)]
    assert not external, f"{page} loads {external}"
    for ref in references:
        if ref.startswith("data:"):
            continue
        served = (STATIC / page).parent / ref
        local = STATIC / ref.removeprefix("../live/") if ref.startswith("../live/") else served
        assert local.resolve().is_file(), f"{page} loads {ref}, which is not shipped"
