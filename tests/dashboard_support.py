"""What the dashboard's browser tests share: a headless Chromium per test (the ``browser``
fixture, made available by ``pytest_plugins`` in conftest.py), opening the dashboard with a
token, rows, waiting for the service to apply a change, orders placed through the simulated
services, and sagas for the saga view (gadget orders, parcel returns)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, Page, expect

from operations.pacco.demo import DemoServices, FailurePlan
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
from operations.store.shards import Shards
from tests.api import bearer, place_order
from tests.browser import chromium
from tests.sagas_support import Harness
from tests.support import RunningService, eventually, uid

Token = Callable[..., str]


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


def row(page: Page, operation_id: str) -> Any:
    return page.get_by_test_id("operations").locator(f'tr[data-id="{operation_id}"]')


async def _record(http: httpx.AsyncClient, op: str, token: str) -> dict[str, Any] | None:
    response = await http.get(f"/operations/{op}", headers=bearer(token))
    record: dict[str, Any] | None = response.json() if response.status_code == 200 else None
    return record


async def applied(service: RunningService, token: str, op: str, version: int = 1) -> None:
    """Wait until the service has applied ``version`` changes of ``op``."""

    async def check() -> bool:
        async with httpx.AsyncClient(base_url=service.url) as http:
            record = await _record(http, op, token)
        return record is not None and record["version"] >= version

    await eventually(check, f"version {version} of {op}")


async def _order_through(
    http: httpx.AsyncClient, settings: Settings, token: str, failures: FailurePlan | None
) -> str:
    """Places an order with the simulated services running; waits until its saga finishes."""
    final = "completed" if failures is None else "rejected"
    async with DemoServices(settings.amqp_url, latency_ms=0, failures=failures):
        op = await place_order(http, token, parcels=2)

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
