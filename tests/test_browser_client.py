"""The browser client, ``/client/operations.js`` (contract §13), in a real headless Chromium
against a real service: ``start`` and ``watch`` follow a saga to its end; across a service
restart, a page reload (the cursor kept in sessionStorage) and a cursor too old to recover
(``recovered: false``), the client ends with every change, in order, none twice; ``getToken``
is asked again before a short-lived token expires and the socket stays up."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import aio_pika
import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from operations.pacco.demo import DemoServices
from operations.settings import Settings
from tests import support
from tests.browser import PageWatch, chromium
from tests.scrape import Scrape
from tests.support import (
    Publisher,
    RunningService,
    eventually,
    new_id,
    serve_process,
    start_service,
)
from tests.test_client import Gate

pytestmark = pytest.mark.browser

Token = Callable[..., str]

# The test's script, added as a module to a page of the service's (its live page, which does
# nothing without a token), so it runs at the service's origin and loads the client as any page
# would: `import {connect} from "/client/operations.js"`.
PAGE = "/live/"
SCRIPT = """
import { connect } from "/client/operations.js";
window.changes = [];
window.statuses = [];
window.statusTimes = [];
window.watched = [];
window.client = connect({ getToken: () => window.pyToken() });
client.on("status", (status) => {
  statuses.push(status);
  statusTimes.push(Date.now() / 1000);
});
client.on("change", (record) => changes.push(record));
window.follow = (id) => {
  const handle = client.watch(id);
  (async () => { for await (const record of handle) watched.push(record); })();
  return handle;
};
window.loaded = true;
"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as running:
        yield running


class ClientPage:
    """The test page in a new tab, its tokens from ``token`` (each handed out counted)."""

    def __init__(self, page: Page, url: str, token: Callable[[], str]) -> None:
        self.page = page
        self.url = url
        self.given: list[str] = []
        self.times: list[float] = []  # when each was given
        self._token = token
        self.watch = PageWatch(page)

    async def _give(self) -> str:
        self.given.append(self._token())
        self.times.append(time.time())
        return self.given[-1]

    async def open(self) -> None:
        await self.page.expose_function("pyToken", self._give)
        await self.load()

    async def load(self) -> None:
        await self.page.goto(self.url + PAGE)
        await self.page.add_script_tag(content=SCRIPT, type="module")
        await self.page.wait_for_function("window.loaded === true")

    async def value(self, expression: str, arg: Any = None) -> Any:
        return await self.page.evaluate(expression, arg)

    async def watched(self, count: int) -> list[dict[str, Any]]:
        """The records the page's watch has yielded, once there are ``count`` of them."""
        await self.page.wait_for_function(f"window.watched.length >= {count}", timeout=30_000)
        records: list[dict[str, Any]] = await self.value("window.watched")
        return records


async def open_page(browser: Browser, url: str, token: Callable[[], str]) -> ClientPage:
    page = ClientPage(await browser.new_page(), url, token)
    await page.open()
    return page


async def recorded(url: str, token: str, operation: str, version: int) -> None:
    async with httpx.AsyncClient(base_url=url) as http:

        async def read() -> bool:
            answer = await http.get(
                f"/operations/{operation}", headers={"Authorization": f"Bearer {token}"}
            )
            return answer.status_code == 200 and answer.json()["version"] >= version

        await eventually(read, f"{operation} at version {version}", timeout=30)


async def syncs(url: str, recovered: str) -> float:
    async with httpx.AsyncClient(base_url=url) as http:
        metrics = Scrape((await http.get("/metrics")).text)
    return metrics.value("operations_syncs_total", recovered=recovered) or 0.0


def versions(records: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(record["version"], record["state"]) for record in records]


async def test_start_and_watch_follow_a_saga_to_its_end(
    service: RunningService, settings: Settings, browser: Browser, token: Token
) -> None:
    user = str(uuid.uuid4())
    page = await open_page(browser, service.url, lambda: token(user))
    order = {"customerId": str(uuid.uuid4()), "parcelIds": [str(uuid.uuid4())], "orderId": "o-1"}
    async with DemoServices(settings.amqp_url, latency_ms=20):
        out = await page.value(
            """async (order) => {
                const started = await client.start("order_making", order, {idempotencyKey: "k-1"});
                const seen = [];
                for await (const record of client.watch(started.id)) seen.push(record);
                return {id: started.id, seen, final: await started.result()};
            }""",
            order,
        )
    seen = out["seen"]
    assert {record["id"] for record in seen} == {out["id"]}
    assert [record["version"] for record in seen] == sorted({r["version"] for r in seen})
    assert (seen[-1]["state"], seen[-1]["name"]) == ("completed", "make_order_completed")
    assert {record["state"] for record in seen[:-1]} <= {"pending"}
    assert out["final"] == seen[-1]
    assert await page.value("window.statuses") == ["connecting", "open"]
    assert_clean(page.watch)


@pytest.mark.slow
async def test_a_service_restart_mid_saga_loses_and_repeats_nothing(
    settings: Settings,
    redis_client: object,
    amqp: aio_pika.abc.AbstractRobustConnection,
    publisher: Publisher,
    browser: Browser,
    token: Token,
) -> None:
    """The service is killed while the page watches; the operation completes while it is down,
    and the service comes back on the same port: the socket reconnects with its cursor and the
    watch ends with each change once, in order."""
    user, operation = str(uuid.uuid4()), new_id()
    port = support.free_port()
    url = f"http://127.0.0.1:{port}"
    async with serve_process(settings, {}, port=port) as first:
        page = await open_page(browser, url, lambda: token(user))
        await publisher.publish("create_order", operation, user=user, name="create_order")
        await recorded(url, token(user), operation, 1)
        await page.value(f"window.handle = follow({json.dumps(operation)})")
        await page.watched(1)
        await publisher.publish(
            "add_parcel_to_order", operation, user=user, name="add_parcel_to_order"
        )
        await page.watched(2)
        first.process.kill()
        await first.process.wait()
    await publisher.publish("order_approved", operation, user=user, name="order_approved")
    await page.page.wait_for_function("window.statuses.includes('reconnecting')")
    async with serve_process(settings, {}, port=port):
        final = await page.value("window.handle.result()")
        seen = await page.watched(3)
        await asyncio.sleep(0.5)  # anything repeated would arrive now
        seen = await page.value("window.watched")
        recovered = await syncs(url, "true")
        changes = await page.value("window.changes")
        statuses = await page.value("window.statuses")
    assert versions(seen) == [(1, "pending"), (2, "pending"), (3, "completed")]
    assert versions(changes) == versions(seen)
    assert final == seen[-1]
    assert recovered >= 1  # the completion came in the sync after the reconnect
    assert statuses[-1] == "open" and "reconnecting" in statuses


async def test_a_page_reload_resumes_from_the_cursor_kept_in_session_storage(
    service: RunningService, publisher: Publisher, browser: Browser, token: Token
) -> None:
    """The page is left while the operation completes, then loaded again: the new page's client
    connects with the cursor the first one kept, and gets the completion from the sync, with no
    watch asking for it."""
    user, operation = str(uuid.uuid4()), new_id()
    page = await open_page(browser, service.url, lambda: token(user))
    await publisher.publish("create_order", operation, user=user, name="create_order")
    await recorded(service.url, token(user), operation, 1)
    await page.value(f"follow({json.dumps(operation)})")
    await page.watched(1)
    await publisher.publish("add_parcel_to_order", operation, user=user, name="add_parcel_to_order")
    await page.watched(2)
    kept = await page.value("Object.keys(sessionStorage)")
    assert len(kept) == 1 and kept[0].startswith(f"operations-client:cursor:{service.url}:")
    before = await syncs(service.url, "true")
    await page.page.goto("about:blank")
    await publisher.publish("order_approved", operation, user=user, name="order_approved")
    await recorded(service.url, token(user), operation, 3)
    await page.load()
    await page.page.wait_for_function("window.changes.length >= 1", timeout=30_000)
    changes = await page.value("window.changes")
    final = await page.value(f"follow({json.dumps(operation)}).result()")
    assert versions(changes) == [(3, "completed")]
    assert final == changes[0]
    assert await syncs(service.url, "true") == before + 1


async def test_a_cursor_older_than_the_stream_reads_the_watched_operations_again(
    settings: Settings,
    redis_client: object,
    amqp: aio_pika.abc.AbstractRobustConnection,
    publisher: Publisher,
    browser: Browser,
    token: Token,
) -> None:
    """The network fails while the operation completes and hundreds of other changes trim the
    change stream past the page's cursor; when it is back, the sync says ``recovered: false``
    and the client reads what it watches and what it listed again: neither completion is lost,
    the listed operation's coming as a change."""
    user, other, operation, listed = str(uuid.uuid4()), str(uuid.uuid4()), new_id(), new_id()
    async with start_service(replace(settings, stream_max_length=100)) as running:
        gate = Gate(running.port)
        async with gate.running() as url:
            page = await open_page(browser, url, lambda: token(user))
            await publisher.publish("create_order", listed, user=user, name="create_order")
            await publisher.publish("create_order", operation, user=user, name="create_order")
            await recorded(running.url, token(user), operation, 1)
            await recorded(running.url, token(user), listed, 1)
            page_listed = await page.value("client.list().then((page) => page.items.length)")
            assert page_listed == 2
            await page.value(f"window.handle = follow({json.dumps(operation)})")
            await page.watched(1)
            await publisher.publish(
                "add_parcel_to_order", operation, user=user, name="add_parcel_to_order"
            )
            await page.watched(2)
            gate.cut()
            await publisher.publish("order_approved", operation, user=user, name="order_approved")
            await publisher.publish("order_approved", listed, user=user, name="order_approved")
            others = [new_id() for _ in range(400)]
            for each in others:
                await publisher.publish("create_order", each, user=other, name="create_order")
            await recorded(running.url, token(other), others[-1], 1)
            gate.open = True
            final = await page.value("window.handle.result()")
            seen = await page.watched(3)
            await page.page.wait_for_function(
                "(id) => changes.some((r) => r.version === 2 && r.id.replaceAll('-', '') === id)",
                arg=uuid.UUID(listed).hex,
                timeout=30_000,
            )
            changes = await page.value("window.changes")
        unrecovered = await syncs(running.url, "false")
    of_listed = [
        (record["version"], record["state"])
        for record in changes
        if uuid.UUID(record["id"]) == uuid.UUID(listed)
    ]  # its first version pushed, or not yet when the page's socket opened
    assert of_listed in ([(1, "pending"), (2, "completed")], [(2, "completed")])
    assert versions(seen) == [(1, "pending"), (2, "pending"), (3, "completed")]
    assert final == seen[-1]
    assert unrecovered >= 1


@pytest.mark.slow
async def test_get_token_is_asked_again_before_a_short_token_expires_and_the_socket_stays_up(
    service: RunningService, publisher: Publisher, browser: Browser, token: Token
) -> None:
    """Tokens that last 12 s: the client asks for a new one before the first expires and
    reconnects its socket with it and its cursor (the service cannot renew the token of an open
    socket). Changes published all through the renewal arrive once each, none lost in the
    reconnect (the sync after it recovered): every new operation's first change, and the
    watched operation's in rising versions (the sync gives an operation's latest record, so a
    version made while the socket was away may be skipped, never repeated). A change made after
    the first token's expiry still arrives live."""
    user, operation = str(uuid.uuid4()), new_id()
    page = await open_page(browser, service.url, lambda: token(user, ttl=12))
    await publisher.publish("create_order", operation, user=user, name="create_order")
    await recorded(service.url, token(user), operation, 1)
    await page.value(f"window.handle = follow({json.dumps(operation)})")
    await page.watched(1)
    first = page.given[0]
    assert len(page.given) == 1
    recovered = await syncs(service.url, "true")
    made: list[str] = []
    renewed_at: float | None = None
    began = time.monotonic()
    # A change every quarter second, from before the second token until well after the socket
    # reconnected with it.
    while renewed_at is None or time.monotonic() < renewed_at + 1.5:
        assert time.monotonic() - began < 15, "no second token within the first one's life"
        made.append(new_id())
        await publisher.publish("create_order", made[-1], user=user, name="create_order")
        step = f"add_parcel_{len(made)}"  # a new step name: a new version
        await publisher.publish("add_parcel_to_order", operation, user=user, name=step)
        if renewed_at is None and len(page.given) >= 2:
            renewed_at = time.monotonic()
        await asyncio.sleep(0.25)
    await page.page.wait_for_function("window.statuses.includes('reconnecting')")
    await asyncio.sleep(max(0.0, page.times[0] + 13 - time.time()))  # past the first's exp
    await publisher.publish("order_approved", operation, user=user, name="order_approved")
    final = await page.value("window.handle.result()")
    seen = await page.value("window.watched")
    for each in made:
        await recorded(service.url, token(user), each, 1)
    # Each change comes over the one socket in the stream's order, the completion last: once
    # it is in, a change lost or repeated in the reconnect would be there already.
    changes = await page.value("window.changes")
    statuses = await page.value("window.statuses")
    assert await syncs(service.url, "true") >= recovered + 1  # reconnected with its cursor
    of_watched = [r for r in changes if uuid.UUID(r["id"]) == uuid.UUID(operation)]
    of_made = [r for r in changes if uuid.UUID(r["id"]) != uuid.UUID(operation)]
    assert sorted(uuid.UUID(r["id"]) for r in of_made) == sorted(map(uuid.UUID, made))  # once
    assert {(r["version"], r["state"]) for r in of_made} == {(1, "pending")}
    watched_versions = [r["version"] for r in of_watched]
    assert watched_versions == sorted(set(watched_versions)), watched_versions
    assert len(watched_versions) >= len(made)  # a skip or two at most, where the socket was away
    assert (of_watched[0]["version"], of_watched[-1]["version"]) == (1, len(made) + 2)
    assert [r["state"] for r in of_watched] == ["pending"] * (len(of_watched) - 1) + ["completed"]
    assert seen == of_watched  # the watch saw what the client emitted
    assert final == of_watched[-1]
    assert page.given[1] != first
    assert page.times[1] < page.times[0] + 12 - 2  # asked well before the first one's exp
    assert await page.value("client.status") == "open"
    # A reconnect per renewal, the first well before the first token's exp; none besides: the
    # service never put the socket out.
    renewals = len(page.given) - 1
    assert statuses == ["connecting", "open"] + ["reconnecting", "open"] * renewals, statuses
    reconnected = (await page.value("window.statusTimes"))[2]
    assert page.times[1] <= reconnected < page.times[0] + 12 - 1
    assert_clean(page.watch)


def assert_clean(watch: PageWatch) -> None:
    """No JavaScript error and nothing loaded from outside. (Chromium logs the 404s of an
    operation read before it is recorded, which the client waits through.)"""
    assert not [error for error in watch.errors if "status of 404" not in error], watch.errors
    assert not watch.outside, watch.outside


async def _at_least(given: list[str], count: int) -> bool:
    return len(given) >= count


# ------------------------------------------------------------- the service's pages on the client


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "ready", "admin"),
    [("/live/", "connected", False), ("/dashboard/", "live", True)],
    ids=["live", "dashboard"],
)
async def test_both_pages_take_the_recovered_false_path(
    path: str,
    ready: str,
    admin: bool,
    settings: Settings,
    redis_client: object,
    amqp: aio_pika.abc.AbstractRobustConnection,
    publisher: Publisher,
    browser: Browser,
    token: Token,
) -> None:
    """The live page and the dashboard, built on the client: the network fails while an
    operation completes and 150 other changes trim the change stream past the page's cursor.
    When it is back, the sync says ``recovered: false``, and the page's row still ends
    completed: the client read the list again."""
    user, other, operation = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    jwt = token("ops", "admin") if admin else token(user)
    others = [str(uuid.uuid4()) for _ in range(150)]
    async with start_service(replace(settings, stream_max_length=100)) as running:
        for each in others:
            await publisher.publish("create_order", each, user=other, name="create_order")
        await publisher.publish("create_order", operation, user=user, name="create_order")
        await recorded(running.url, token(other), others[-1], 1)
        await recorded(running.url, token(user), operation, 1)
        gate = Gate(running.port)
        async with gate.running() as url:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            await page.goto(f"{url}{path}#token={jwt}")
            await expect(page.locator("#status")).to_have_text(ready, timeout=15_000)
            row = page.locator(f'#operations tr[data-id="{operation}"]')
            await expect(row).to_have_attribute("data-state", "pending", timeout=15_000)
            await publisher.publish(
                "add_parcel_to_order", operation, user=user, name="add_parcel_to_order"
            )
            await page.wait_for_function(  # pushed, so the client holds a cursor
                "(id) => [...document.querySelectorAll('#operations tr')].some((tr) =>"
                " tr.dataset.id === id && tr.textContent.includes('add_parcel_to_order'))",
                arg=operation,
                timeout=15_000,
            )
            gate.cut()
            await publisher.publish("order_approved", operation, user=user, name="order_approved")
            for each in others:
                await publisher.publish("order_approved", each, user=other, name="order_approved")
            await recorded(running.url, token(other), others[-1], 2)
            await recorded(running.url, token(user), operation, 3)
            gate.open = True
            await expect(row).to_have_attribute("data-state", "completed", timeout=30_000)
        assert await syncs(running.url, "false") >= 1
