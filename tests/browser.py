"""Headless Chromium (Debian's package) driven by Playwright, for the browser tests: a watch on
each page for JavaScript errors and requests that leave the machine, and the screenshots
``make screenshot`` takes (into ``OPERATIONS_SCREENSHOT_DIR``)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

SCREENSHOT_DIR = "OPERATIONS_SCREENSHOT_DIR"

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("Chromium is missing: scripts/setup.sh --browser installs it")


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_FLAGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


class PageWatch:
    """What a page did wrong: JavaScript errors, console errors, and requests that left the
    machine (anything but the service under test on 127.0.0.1, data: and blob: URLs)."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.outside: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on("console", self._console)
        page.on("request", lambda request: self._request(request.url))
        page.on("websocket", lambda socket: self._request(socket.url))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        # "No saga drives this operation": an answer the live page expects; Chromium logs it.
        url = str(message.location.get("url", ""))
        if "status of 404" in message.text and urlsplit(url).path.endswith("/saga"):
            return
        self.errors.append(f"console: {message.text} ({url})")

    def _request(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about") or parts.hostname == "127.0.0.1":
            return
        self.outside.append(url)

    def assert_clean(self) -> None:
        assert not self.errors, f"the page had errors: {self.errors}"
        assert not self.outside, f"the page loaded from outside: {self.outside}"


async def watched_page(browser: Browser, url: str, width: int = 1400) -> tuple[Page, PageWatch]:
    page = await browser.new_page(viewport={"width": width, "height": 900})
    watch = PageWatch(page)
    await page.goto(url)
    return page, watch


def screenshot_path(name: str) -> Path | None:
    """Where ``make screenshot`` wants the picture ``name`` (``OPERATIONS_SCREENSHOT_DIR``), if
    it does."""
    folder = os.environ.get(SCREENSHOT_DIR)
    return Path(folder) / name if folder else None


async def screenshot(page: Page, name: str, full_page: bool = True) -> None:
    path = screenshot_path(name)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    image = await page.screenshot(path=str(path), full_page=full_page)
    assert len(image) > 10_000
