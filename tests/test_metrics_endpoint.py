"""``GET /metrics`` as Prometheus scrapes it, after real traffic."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import httpx

from operations.demo import DemoServices
from operations.settings import Settings
from tests.live import LiveClient
from tests.support import Publisher, RunningService, eventually


def value(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, f"{series} missing from /metrics"
    return float(match.group(1))


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
            headers={"Authorization": f"Bearer {token('u')}"},
        )
        await live.wait_for_state(order.json()["operationId"], "completed", timeout=30)

    async def scraped() -> str | None:
        text = (await http.get("/metrics")).text
        return text if 'outcome="completed",saga="order_making"' in text else None

    text = await eventually(scraped, "the saga's completion in /metrics")
    assert value(text, 'operations_messages_total{kind="command",outcome="applied"}') >= 1
    assert value(text, 'operations_messages_total{kind="command",outcome="stale"}') >= 1
    assert value(text, "operations_sockets") == 1
    assert value(text, "operations_pushes_total") >= 7
    assert value(text, 'operations_sagas_total{outcome="completed",saga="order_making"}') == 1
    assert value(text, 'operations_saga_messages_published_total{message="create_order"}') == 1
    assert value(text, "operations_batch_seconds_count") >= 2
    assert 'operations_batch_seconds_bucket{le="+Inf"}' in text
    for family in ("operations_reconnects_total", "operations_dead_letters_total"):
        assert f"# TYPE {family} counter" in text
    await live.close()
