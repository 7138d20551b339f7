"""``GET /metrics`` as Prometheus scrapes it, after real traffic."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx

from operations.metrics import CONTENT_TYPE
from operations.pacco.demo import DemoServices
from operations.settings import Settings
from tests.api import bearer
from tests.live import LiveClient
from tests.scrape import Scrape
from tests.support import Publisher, RunningService, eventually


async def test_metrics_after_messages_pushes_and_a_saga(
    service: RunningService,
    settings: Settings,
    publisher: Publisher,
    http: httpx.AsyncClient,
    token: Callable[..., str],
) -> None:
    live = LiveClient(service.url)
    await live.connect({"token": token("ops", "admin")})
    op = str(uuid.uuid4())
    await publisher.publish("create_order", op, user="u")
    await publisher.publish("create_order", op, user="u")  # same step again: stale
    await live.wait_for_state(op, "pending")
    async with DemoServices(settings.amqp_url, latency_ms=0):
        order = await http.post(
            "/orders",
            json={"customerId": "c", "parcelId": "p"},
            headers=bearer(token("u")),
        )
        await live.wait_for_state(order.json()["operationId"], "completed", timeout=30)

    async def scraped() -> Scrape | None:
        response = await http.get("/metrics")
        assert response.headers["content-type"] == CONTENT_TYPE
        page = Scrape(response.text)
        completed = page.value("operations_sagas_total", outcome="completed", saga="order_making")
        return page if completed is not None else None

    page = await eventually(scraped, "the saga's completion in /metrics")

    def value(name: str, **labels: str) -> float:
        found = page.value(name, **labels)
        assert found is not None, f"{name} {labels} missing from /metrics"
        return found

    assert value("operations_messages_total", kind="command", outcome="applied") >= 1
    assert value("operations_messages_total", kind="command", outcome="stale") >= 1
    assert value("operations_sockets") == 1
    assert value("operations_pushes_total") >= 7
    assert value("operations_sagas_total", outcome="completed", saga="order_making") == 1
    assert value("operations_saga_messages_published_total", message="create_order") == 1
    assert value("operations_batch_seconds_count") >= 2
    assert value("operations_batch_seconds_bucket", le="+Inf") >= 2
    assert value("process_resident_memory_bytes") > 0
    assert page.types["python_gc_collections"] == "counter"
    for family in ("operations_reconnects", "operations_dead_letters"):
        assert page.types[family] == "counter"
    await live.close()
