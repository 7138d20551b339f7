"""The browser pages: ``/live/``, a user's operations as they change, and ``/dashboard/``, the ops
dashboard for admins; and ``/client/``, the browser client module (``operations.js``, its types
and what it imports, the vendored Socket.IO client among them). The pages import the client
module; nothing comes from a CDN."""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = str(resources.files("hub") / "static")

# What /client/ serves, with its content type: the module, its types, and what it imports.
CLIENT_FILES = {
    "operations.js": "text/javascript; charset=utf-8",
    "client.js": "text/javascript; charset=utf-8",
    "socket.io.esm.min.js": "text/javascript; charset=utf-8",
    "operations.d.ts": "application/typescript; charset=utf-8",
    "socket.io-client.LICENSE": "text/plain; charset=utf-8",
}


async def client_file(request: Request) -> Response:
    name = request.path_params["name"]
    media_type = CLIENT_FILES.get(name)
    if media_type is None:
        return Response(
            b'{"code":"not_found","reason":"no such path"}',
            status_code=404,
            media_type="application/json",
        )
    # no-cache: revalidated (ETag) on each load, so a page never mixes two versions of the module
    return FileResponse(
        f"{STATIC}/client/{name}", media_type=media_type, headers={"Cache-Control": "no-cache"}
    )


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
        Route("/client/{name}", client_file, methods=["GET", "HEAD"]),
    ]
