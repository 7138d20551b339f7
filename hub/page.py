"""The browser pages: ``/live/``, a user's operations as they change, and ``/dashboard/``, the ops
dashboard for admins. They load the vendored Socket.IO client; nothing comes from a CDN."""

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
        Route("/dashboard", lambda request: RedirectResponse("/dashboard/"), methods=["GET"]),
        Mount(
            "/dashboard",
            StaticFiles(directory=f"{STATIC}/dashboard", html=True),
            name="dashboard",
        ),
    ]
