"""The dashboard after a reconnect its cursor cannot recover (issue #25): the change stream was
trimmed past the cursor while the dashboard's socket was down, the ``operations_sync`` says
``recovered: false``, and the dashboard shows the current states, not those it had."""

from __future__ import annotations

import re

import httpx
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, WebSocketRoute, expect

from operations.settings import Settings
from operations.store.keys import Keys
from tests.dashboard_support import Token, applied, row
from tests.scrape import Scrape
from tests.support import Publisher, RunningService, uid

pytestmark = pytest.mark.browser


async def unrecovered(service: RunningService) -> float:
    """How many ``operations_sync`` the service has answered ``recovered: false``."""
    async with httpx.AsyncClient(base_url=service.url) as http:
        page = Scrape((await http.get("/metrics")).text)
    return page.value("operations_syncs_total", recovered="false") or 0.0


class Network:
    """The page's WebSockets to the service, through a switch that can cut them: while it is
    off, each new one is closed at once, as when the network is down."""

    def __init__(self) -> None:
        self.up = True
        self.sockets: list[tuple[WebSocketRoute, WebSocketRoute]] = []

    async def route(self, page_side: WebSocketRoute) -> None:
        if not self.up:
            await page_side.close()
            return
        self.sockets.append((page_side, page_side.connect_to_server()))

    async def cut(self) -> None:
        self.up = False
        for page_side, server_side in self.sockets:
            await page_side.close()
            await server_side.close()
        self.sockets.clear()


async def test_a_cursor_the_stream_no_longer_holds_makes_the_dashboard_read_again(
    service: RunningService,
    settings: Settings,
    redis_client: aioredis.Redis,
    publisher: Publisher,
    browser: Browser,
    token: Token,
) -> None:
    """The dashboard shows an order pending and has a cursor. Its socket is cut; meanwhile the
    order completes and the stream is trimmed to one later change. The socket comes back with
    the old cursor, the sync is not recovered, and the order's row ends up completed."""
    admin = token("ops", "admin")
    order, later = uid(), uid()
    await publisher.publish("create_order", order, user="alice")
    await applied(service, admin, order)
    network = Network()
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    await page.route_web_socket(re.compile(r".*/socket\.io/.*"), network.route)
    await page.goto(f"{service.url}/dashboard/#token={admin}")
    status = page.get_by_test_id("status")
    await expect(status).to_have_text("live", timeout=15_000)
    await expect(row(page, order)).to_have_attribute("data-state", "pending", timeout=15_000)
    cursor_giver = uid()  # a live change: the dashboard now holds a cursor
    await publisher.publish("create_order", cursor_giver, user="bob")
    await expect(row(page, cursor_giver)).to_be_visible(timeout=15_000)

    await network.cut()
    await expect(status).not_to_have_text("live", timeout=15_000)
    await publisher.publish("order_approved", order, user="alice")
    await applied(service, admin, order, version=2)
    await publisher.publish("create_order", later, user="bob")
    await applied(service, admin, later)
    # Only the last change is left: neither the cursor nor the order's completion is in it.
    await redis_client.xtrim(Keys(settings.key_prefix).changes(0), maxlen=1, approximate=False)
    before = await unrecovered(service)

    network.up = True
    await expect(status).to_have_text("live", timeout=15_000)
    await expect(row(page, order)).to_have_attribute("data-state", "completed", timeout=15_000)
    await expect(row(page, later)).to_be_visible()
    after = await unrecovered(service)
    assert after > before  # the path taken was the unrecovered sync
