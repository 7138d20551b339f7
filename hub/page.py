"""The browser example: a page at ``/live/`` that signs in with a token and shows the user's
operations as they change. It loads the vendored Socket.IO client; nothing comes from a CDN."""

from __future__ import annotations

from importlib import resources

from starlette.responses import RedirectResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = str(resources.files("hub") / "static")


def browser_routes() -> list[BaseRoute]:
    return [
        Route("/", lambda request: RedirectResponse("/live/"), methods=["GET"]),
        Mount("/live", StaticFiles(directory=STATIC, html=True), name="live"),
    ]
