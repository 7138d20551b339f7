"""What a hostile but authenticated user cannot do, pinned: read, wait on, cancel or learn of
another user's operation on any route; join another user's room; use an admin route; be mixed up
with a user whose id looks like theirs. Through a running service, on real servers."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from operations.http.openapi import document
from tests.api import bearer, started_order
from tests.live import LiveClient
from tests.support import Publisher, RunningService, eventually

Token = Callable[..., str]


def _answer(response: httpx.Response, operation_id: str) -> tuple[int, Any]:
    """The answer as the caller sees it, with the id it asked about written as ``ID``."""
    body = response.content.replace(operation_id.encode(), b"ID")
    return response.status_code, orjson.loads(body) if body else None


async def test_another_users_operation_answers_as_an_unknown_one_on_every_route(
    service: RunningService, http: httpx.AsyncClient, token: Token
) -> None:
    owner, other = token(str(uuid.uuid4())), token(str(uuid.uuid4()))
    theirs = await started_order(http, owner)
    unknown = str(uuid.uuid4())
    wait = {**bearer(other), "If-None-Match": "*"}
    asks = [
        ("GET", "/operations/{id}", {}, bearer(other)),
        ("GET", "/operations/{id}?wait=1", {}, wait),
        ("GET", "/operations/{id}/history", {}, bearer(other)),
        ("GET", "/operations/{id}/saga", {}, bearer(other)),
        ("POST", "/operations/{id}/cancel", {"reason": "mine now"}, bearer(other)),
    ]
    for method, path, body, headers in asks:
        answers = []
        for operation_id in (theirs, unknown):
            response = await http.request(
                method,
                path.format(id=operation_id),
                headers=headers,
                json=body if method == "POST" else None,
            )
            answers.append(_answer(response, operation_id))
        assert answers[0] == answers[1], (method, path)
        assert answers[0][0] == 404, (method, path)
    # and the owner's operation is untouched: still running, never cancelled
    mine = await http.get(f"/operations/{theirs}/saga", headers=bearer(owner))
    assert mine.json()["status"] == "pending"


async def test_a_socket_cannot_join_another_users_room_by_any_event(
    clients: Callable[[], LiveClient], publisher: Publisher, token: Token
) -> None:
    mallory, bob = str(uuid.uuid4()), str(uuid.uuid4())
    hostile, victim = clients(), clients()
    await hostile.connect({"token": token(mallory)})
    await victim.connect({"token": token(bob)})
    for event, data in [
        ("join", {"room": f"user:{bob}"}),
        ("enter_room", f"user:{bob}"),
        ("join_room", "ops"),
        ("initialize", {"token": token(bob)}),
        ("initialize", {"token": token("ops", "admin")}),
    ]:
        await hostile.client.emit(event, data)
    op = str(uuid.uuid4())
    await publisher.publish("create_order", op, user=bob)
    await victim.wait_for_state(op, "pending")
    mine = str(uuid.uuid4())
    await publisher.publish("create_order", mine, user=mallory)
    await hostile.wait_for_state(mine, "pending")  # after bob's: the stream is in order
    assert [record["id"] for record in hostile.records()] == [mine]


def _admin_routes() -> list[tuple[str, str]]:
    """Every route the OpenAPI document says may answer 403, with its method."""
    routes = []
    for path, methods in document()["paths"].items():
        for method, spec in methods.items():
            if "403" in spec["responses"] and path != "/operations":
                routes.append((method.upper(), path))
    return routes


def test_the_document_names_admin_routes() -> None:
    paths = {path for _, path in _admin_routes()}
    assert {"/dead-letters", "/sagas"} <= paths


@pytest.mark.parametrize(("method", "path"), _admin_routes())
async def test_an_admin_route_refuses_a_user(
    method: str, path: str, service: RunningService, http: httpx.AsyncClient, token: Token
) -> None:
    filled = path.replace("{id}", uuid.uuid4().hex).replace("{name}", "order_maker")
    body = {"reason": "r", "queue": "q"} if method == "POST" else None
    response = await http.request(method, filled, headers=bearer(token("u")), json=body)
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "forbidden"
    listing = await http.get("/operations?userId=someone-else", headers=bearer(token("u")))
    assert listing.status_code == 403


async def test_users_whose_ids_look_alike_are_kept_apart(
    service: RunningService, publisher: Publisher, http: httpx.AsyncClient, token: Token
) -> None:
    users = ["a", "A", "a:b", "a:", "a*", "{a}", "a\\", "user:a", "a b", "ä", "a%3Ab"]
    owned = {user: str(uuid.uuid4()) for user in users}
    for user, op in owned.items():
        await publisher.publish("create_order", op, user=user)
    for user, op in owned.items():

        async def listed(user: str = user) -> list[str]:
            page = await http.get("/operations", headers=bearer(token(user)))
            return [item["id"] for item in page.json()["items"]]

        assert await eventually(listed, f"{user}'s operation") == [op]
        for other, theirs in owned.items():
            status = await http.get(f"/operations/{theirs}", headers=bearer(token(user)))
            assert status.status_code == (200 if other == user else 404), (user, other)
