"""The dashboard's saga diagram, a saga type's load, admin cancel and the saga filters, in a real
headless Chromium against the running service with the simulated Pacco services: each step's
mark (done with its time, waiting with its ticking wait, ahead, compensated), the diagram moving
live with the pushes, the branch to compensation, the deadline; no JavaScript error and nothing
loaded from outside.

With ``OPERATIONS_SCREENSHOT_DIR`` set (``make screenshot``), the diagram tests save
``saga-diagram.png`` (mid-flight) and ``saga-compensated.png`` there."""

from __future__ import annotations

import httpx
from playwright.async_api import Browser, Locator, Page, expect

from operations.pacco.demo import DemoServices, FailurePlan
from operations.pacco.ordermaking import OrderMakingSaga
from operations.settings import Settings
from tests.api import place_order, saga_started
from tests.browser import PageWatch, screenshot, watched_page
from tests.dashboard_support import Token, _order_through, row
from tests.support import RunningService, uid

WAIT_MS = 20_000
PATH = OrderMakingSaga.path


async def _dashboard(
    browser: Browser, service: RunningService, admin: str
) -> tuple[Page, PageWatch]:
    page, watch = await watched_page(browser, f"{service.url}/dashboard/#token={admin}")
    await expect(page.get_by_test_id("status")).to_have_text("live", timeout=15_000)
    return page, watch


def node(page: Page, message: str) -> Locator:
    return page.get_by_test_id("saga-diagram").locator(f'g.node[data-message="{message}"]')


async def marks(page: Page) -> list[str]:
    nodes = page.get_by_test_id("saga-diagram").locator("g.node[data-message]")
    return [str(await n.get_attribute("data-status")) for n in await nodes.all()]


async def test_the_diagram_marks_every_step_and_moves_live(
    service: RunningService, settings: Settings, browser: Browser, token: Token
) -> None:
    user, admin = uid(), token("ops", "admin")
    async with httpx.AsyncClient(base_url=service.url) as http:
        page, watch = await _dashboard(browser, service, admin)
        # Slow simulated services: the saga stays a while at each step.
        async with DemoServices(settings.amqp_url, latency_ms=2500):
            op = await place_order(http, token(user), parcels=2)
            await expect(row(page, op)).to_be_visible(timeout=WAIT_MS)
            await row(page, op).click()
            await page.evaluate("window.notReloaded = true")
            diagram = page.get_by_test_id("saga-diagram")
            await expect(diagram).to_have_attribute("data-status", "pending", timeout=WAIT_MS)
            await expect(node(page, "make_order")).to_have_attribute("data-status", "done")
            await expect(node(page, "make_order")).to_contain_text("done · ")
            waiting = diagram.locator('g.node[data-status="waiting"]')
            await expect(waiting).to_have_count(1)
            await expect(waiting).to_contain_text("waiting ")
            await expect(diagram.locator("g.node[data-message]")).to_have_count(len(PATH))
            assert await marks(page) == ["done", "waiting", "remaining", "remaining", "remaining"]
            await expect(node(page, "order_approved")).to_contain_text("ahead")
            await expect(page.get_by_test_id("saga-deadline")).to_contain_text(" left")
            await expect(diagram.locator('g.rejection[data-rejected="no"]')).to_have_count(1)
            await expect(diagram.locator('g.undo[data-message="make_order"]')).to_have_count(1)

            # The wait ticks on its own, between pushes.
            first = int(await waiting.get_attribute("data-waited") or 0)
            await expect(waiting).not_to_have_attribute("data-waited", str(first), timeout=5_000)

            # The pushes move it along: a later step awaited, the earlier ones done with times.
            await expect(node(page, "vehicle_assigned_to_order")).to_have_attribute(
                "data-status", "waiting", timeout=WAIT_MS
            )
            assert await marks(page) == ["done", "done", "done", "waiting", "remaining"]
            await expect(node(page, "order_created")).to_contain_text(" s")
            await screenshot(page, "saga-diagram.png")
            await expect(diagram).to_have_attribute("data-status", "completed", timeout=WAIT_MS)
        assert await marks(page) == ["done"] * len(PATH)
        await expect(diagram.locator('g.node.end[data-end="completed"]')).to_have_class(
            "node end done"
        )
        assert await page.evaluate("window.notReloaded") is True
    watch.assert_clean()


async def test_the_diagram_of_a_compensated_saga(
    service: RunningService, settings: Settings, browser: Browser, token: Token
) -> None:
    user, admin = uid(), token("ops", "admin")
    async with httpx.AsyncClient(base_url=service.url) as http:
        rejected = await _order_through(
            http, settings, token(user), FailurePlan({"reserve_resource": 1.0})
        )
    page, watch = await _dashboard(browser, service, admin)
    await row(page, rejected).click()
    diagram = page.get_by_test_id("saga-diagram")
    await expect(diagram).to_have_attribute("data-status", "rejected", timeout=WAIT_MS)
    # Every step taken is marked compensated once the saga has undone its steps.
    assert await marks(page) == ["compensated"] * 4 + ["remaining"]
    await expect(node(page, "make_order")).to_contain_text("compensated")
    await expect(node(page, "order_approved")).to_contain_text("stopped here")
    await expect(diagram.locator('g.rejection[data-rejected="yes"]')).to_contain_text(
        "reserve_resource_failed"
    )
    await expect(diagram.locator('g.undo[data-message="make_order"]')).to_have_attribute(
        "data-status", "compensated"
    )
    await expect(page.get_by_test_id("saga-deadline")).not_to_contain_text(" left")
    await expect(page.get_by_test_id("cancel-saga")).to_have_count(0)
    await screenshot(page, "saga-compensated.png")
    watch.assert_clean()


async def test_an_admin_cancels_a_saga_with_a_reason(
    service: RunningService, browser: Browser, token: Token
) -> None:
    user, admin = uid(), token("ops", "admin")
    async with httpx.AsyncClient(base_url=service.url) as http:
        # No simulated services: it waits for order_created.
        op = await place_order(http, token(user), parcels=2)
        await saga_started(http, op, admin)
    page, watch = await _dashboard(browser, service, admin)
    await row(page, op).click()
    diagram = page.get_by_test_id("saga-diagram")
    await expect(diagram).to_have_attribute("data-status", "pending", timeout=WAIT_MS)
    await page.get_by_test_id("cancel-reason").fill("the customer phoned to cancel")
    await page.get_by_test_id("cancel-saga").click()
    await expect(page.get_by_test_id("cancel-outcome")).to_have_attribute(
        "data-outcome", "accepted", timeout=WAIT_MS
    )
    await expect(diagram).to_have_attribute("data-status", "rejected", timeout=WAIT_MS)
    await expect(row(page, op)).to_have_attribute("data-state", "rejected", timeout=WAIT_MS)
    await expect(page.get_by_test_id("saga")).to_contain_text(
        "cancelled by an admin, ops: the customer phoned to cancel"
    )
    assert (await marks(page))[0] == "compensated"
    await expect(page.get_by_test_id("cancel-saga")).to_have_count(0)
    watch.assert_clean()


async def test_sagas_filter_by_type_status_and_awaited_step_and_each_types_load_shows(
    service: RunningService, settings: Settings, browser: Browser, token: Token
) -> None:
    user, admin = uid(), token("ops", "admin")
    async with httpx.AsyncClient(base_url=service.url) as http:
        completed = await _order_through(http, settings, token(user), None)
        waiting = [await place_order(http, token(user), parcels=2) for _ in range(2)]
        for op in waiting:
            await saga_started(http, op, admin)
    page, watch = await _dashboard(browser, service, admin)
    sagas = page.get_by_test_id("sagas").locator("tr")
    await expect(sagas).to_have_count(3, timeout=WAIT_MS)

    await page.get_by_test_id("saga-waiting").select_option("order_created")
    await expect(sagas).to_have_count(2)
    assert {await r.get_attribute("data-id") for r in await sagas.all()} == set(waiting)
    await page.get_by_test_id("saga-waiting").select_option("order_approved")
    await expect(sagas).to_have_count(0)
    await page.get_by_test_id("saga-waiting").select_option("")
    await page.get_by_test_id("saga-status").select_option("completed")
    await expect(sagas).to_have_count(1)
    await expect(sagas.first).to_have_attribute("data-id", completed)
    await page.get_by_test_id("saga-status").select_option("")
    await page.get_by_test_id("saga-type").select_option("order_making")
    await expect(sagas).to_have_count(3)

    load = page.get_by_test_id("type-load")
    await expect(page.get_by_test_id("load-type")).to_have_value("order_making")
    await expect(load.locator("tr")).to_have_count(len(PATH), timeout=WAIT_MS)
    created = load.locator('tr[data-message="order_created"]')
    await expect(created).to_have_attribute("data-waiting", "2", timeout=WAIT_MS)
    await expect(load.locator('tr[data-message="order_approved"]')).to_have_attribute(
        "data-waiting", "0"
    )
    await expect(load.locator('tr[data-message="order_approved"] .median')).not_to_have_text("—")
    await expect(load.locator('tr[data-message="make_order"] .samples')).to_have_text("3")
    # A third order waiting shows up in the load without a reload.
    async with httpx.AsyncClient(base_url=service.url) as http:
        await place_order(http, token(user), parcels=2)
    await expect(created).to_have_attribute("data-waiting", "3", timeout=WAIT_MS)
    watch.assert_clean()


async def test_the_diagram_reads_well_from_2_to_15_steps(
    service: RunningService, browser: Browser
) -> None:
    """The diagram of sagas of 2, 7 and 15 steps, drawn by the page's own code: every step and the
    compensation branch inside the picture, no two boxes overlapping, wrapped onto rows."""
    page, watch = await watched_page(browser, f"{service.url}/dashboard/")
    for count in (2, 7, 15):
        layout = await page.evaluate(
            """(count) => {
                const path = Array.from({length: count}, (_, i) => ({
                    message: "step_number_" + (i + 1) + "_of_the_saga",
                    status: i < count / 2 ? "done"
                        : i === Math.ceil(count / 2) ? "waiting" : "remaining",
                }));
                const saga = {
                    saga: "long", id: "x", status: "pending", steps: [],
                    deadline: new Date(Date.now() + 60000).toISOString(), path: path,
                    stepSeconds: {}, waitingSince: new Date(Date.now() - 5000).toISOString(),
                };
                const kind = {compensations: path.map((p) => p.message)};
                const holder = document.createElement("div");
                holder.style.width = "560px";
                document.body.append(holder);
                const svg = window.SagaDiagram.draw(saga, kind);
                holder.replaceChildren(svg);
                const frame = svg.getBoundingClientRect();
                const boxes = Array.from(svg.querySelectorAll("g > rect")).map((rect) => {
                    const r = rect.getBoundingClientRect();
                    return [r.left, r.top, r.right, r.bottom];
                });
                holder.remove();
                return {
                    frame: [frame.left, frame.top, frame.right, frame.bottom],
                    boxes: boxes,
                    nodes: svg.querySelectorAll("g.node[data-message]").length,
                    undos: svg.querySelectorAll("g.undo").length,
                };
            }""",
            count,
        )
        assert (layout["nodes"], layout["undos"]) == (count, count)
        left, top, right, bottom = layout["frame"]
        boxes = layout["boxes"]
        assert len(boxes) == 2 * count + 2  # the steps, the end, the rejection, the undos
        for x1, y1, x2, y2 in boxes:
            assert left <= x1 and x2 <= right + 0.5 and top <= y1 and y2 <= bottom + 0.5
            assert x2 - x1 > 60, "the boxes shrank below reading size"
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                overlap = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
                assert not (overlap[0] > 0 and overlap[1] > 0), f"boxes overlap: {a} {b}"
        rows = len({round(y1) for _, y1, _, _ in boxes})
        assert rows >= (count + 1 + 3) // 4, "long paths do not wrap"
    watch.assert_clean()
