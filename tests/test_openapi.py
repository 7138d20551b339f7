"""``GET /openapi.json`` is generated from the routes' typed models and route table: it lists
exactly the routes the app serves, is a valid OpenAPI 3.1 document, takes its limits from the
constants the code checks, and the answers fit the models it names."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import httpx
import msgspec
import orjson
import pytest
from openapi_spec_validator import validate
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from operations.errors import InvalidQuery
from operations.http import openapi
from operations.http.models import (
    MAX_WAIT_SECONDS,
    Health,
    History,
    ListOperations,
    Operation,
    OperationPage,
    ReadinessReport,
    Transition,
    encode,
    read_query,
)
from operations.pacco.ordermaking import MAX_PARCELS, OrderMakingSaga
from operations.sagas.http import saga_json, saga_model
from operations.sagas.idempotency import MAX_KEY_LENGTH
from operations.sagas.models import MAX_BODY_BYTES, MAX_LIMIT, SagaTypeList
from operations.sagas.records import SagaRecord, SagaStatus, StepRecord
from operations.service import SERVED_ENDPOINTS, Service
from operations.settings import Settings
from operations.states import State
from operations.store.listing import MAX_PAGE
from tests.api import bearer, recorded
from tests.support import Publisher, RunningService, new_id

Token = Callable[..., str]

# Served by the app but not part of the JSON API, so not in the document: the browser pages
# (static files, and the redirects to them). Socket.IO is not a Starlette route at all: the
# python-socketio ASGI app in front of Starlette (hub.Hub.asgi) answers /socket.io/.
BROWSER_PAGES = {
    ("/", "get"): "redirects to the live page",
    ("/dashboard", "get"): "redirects to the dashboard's static page",
    ("/client/{name}", "get"): "the browser client module, its types and what it imports",
}


def served(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(path, method) of every route of the app, mounted ones included; static mounts (the
    browser pages) are left out."""
    for route in routes:
        if isinstance(route, Mount):
            if isinstance(route.app, StaticFiles):
                continue
            yield from served(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            for method in route.methods or ():
                if method != "HEAD":  # Starlette answers HEAD wherever it answers GET
                    yield prefix + route.path, method.lower()
        else:
            raise AssertionError(f"a route of an unknown kind: {route!r}")


def documented(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in spec["paths"].items() for method in item}


def test_the_document_lists_exactly_the_routes_the_app_serves(settings: Settings) -> None:
    service = Service(settings)  # not started: only its routes are read
    routes = set(served(service.http.routes))
    assert set(BROWSER_PAGES) <= routes
    app_routes = routes - set(BROWSER_PAGES)
    spec = openapi.document(SERVED_ENDPOINTS)
    assert app_routes - documented(spec) == set(), "served but not documented"
    assert documented(spec) - app_routes == set(), "documented but not served"


def test_the_document_is_valid_openapi_3_1() -> None:
    spec = openapi.document(SERVED_ENDPOINTS)
    assert spec["openapi"] == "3.1.0"
    validate(spec)  # raises on any fault
    assert orjson.loads(openapi.encoded_document(SERVED_ENDPOINTS)) == spec


def test_every_route_declares_its_path_parameters_its_token_and_its_errors() -> None:
    spec = openapi.document(SERVED_ENDPOINTS)
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path)), where
            secured = operation.get("security") != []
            assert ("401" in operation["responses"]) == secured, where
            for status, response in operation["responses"].items():
                if int(status) >= 400 and path not in {"/ready"}:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (where, status)


def parameter(method: str, path: str, name: str) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = openapi.document(SERVED_ENDPOINTS)["paths"][path][method][
        "parameters"
    ]
    (found,) = [p for p in parameters if p["name"] == name]
    return found


def test_limits_come_from_the_constants_the_code_checks() -> None:
    assert parameter("get", "/operations", "limit")["schema"]["maximum"] == MAX_PAGE
    assert parameter("get", "/sagas", "limit")["schema"]["maximum"] == MAX_LIMIT
    assert parameter("get", "/operations/{id}", "wait")["schema"]["maximum"] == MAX_WAIT_SECONDS
    schemas = openapi.document(SERVED_ENDPOINTS)["components"]["schemas"]
    assert schemas["MakeOrder"]["properties"]["parcelIds"]["maxItems"] == MAX_PARCELS
    for path in ("/orders", "/sagas/{name}"):
        too_large = openapi.document(SERVED_ENDPOINTS)["paths"][path]["post"]["responses"]["413"]
        assert str(MAX_BODY_BYTES) in too_large["description"]
    with pytest.raises(InvalidQuery) as refused:
        read_query({"limit": str(MAX_PAGE + 1)}, ListOperations)
    assert (refused.value.field, refused.value.reason) == (
        "limit",
        f"limit must be a whole number from 1 to {MAX_PAGE}",
    )
    assert read_query({"limit": str(MAX_PAGE), "unknown": "x"}, ListOperations).limit == MAX_PAGE


@pytest.mark.parametrize("path", ["/sagas/{name}", "/orders"])
async def test_the_starts_declare_the_idempotency_key_header_with_its_bounds(
    path: str, http: httpx.AsyncClient
) -> None:
    """As ``GET /openapi.json`` serves it: the optional header, the bounds the code checks
    (:data:`MAX_KEY_LENGTH`), how long a key is kept, and the refusals a key can bring."""
    start = (await http.get("/openapi.json")).json()["paths"][path]["post"]
    (key,) = [p for p in start["parameters"] if p["name"] == "Idempotency-Key"]
    assert (key["in"], key["required"], key["schema"]["type"]) == ("header", False, "string")
    assert f"At most {MAX_KEY_LENGTH} printable ASCII characters" in key["description"]
    assert "Kept OPERATIONS_IDEMPOTENCY_SECONDS" in key["description"]
    answers = start["responses"]
    refusal = f"`invalid_idempotency_key`: the Idempotency-Key is empty, over {MAX_KEY_LENGTH}"
    assert refusal in answers["400"]["description"]
    assert answers["409"]["description"].startswith("`idempotency_key_in_flight`")
    assert answers["422"]["description"].startswith("`idempotency_key_reused`")
    assert "Idempotent-Replayed" in answers["202"]["headers"]


def test_the_models_encode_records_exactly_as_before() -> None:
    record = Operation(
        "op", None, "create_order", State.REJECTED, "no", "why", 3, "2026-01-01T00:00:00.000Z", "t"
    )
    assert orjson.loads(encode(record)) == {
        "id": "op",
        "userId": None,
        "name": "create_order",
        "state": "rejected",
        "code": "no",
        "reason": "why",
        "version": 3,
        "createdAt": "2026-01-01T00:00:00.000Z",
        "updatedAt": "t",
    }
    saga = SagaRecord(
        "order_making",
        "op",
        SagaStatus.COMPENSATING,
        {"orderId": "o"},
        "op",
        {"user": {"id": "u"}, "traceId": "t"},
        [StepRecord("make_order", "m1", 1.5, {"a": 1}, True, None)],
        ["m1"],
        reason="late",
        compensate_steps=1,
    )
    for kind in (None, OrderMakingSaga):
        assert orjson.loads(encode(saga_model(saga, kind))) == saga_json(saga, kind)
    # History entries stored before a field existed keep leaving it out, never null.
    old = [{"version": 1, "state": "pending", "name": "create_order"}]
    history = History("op", msgspec.convert(old, list[Transition]))
    assert orjson.loads(encode(history)) == {"id": "op", "items": old}


async def test_answers_fit_their_models_and_bad_queries_are_counted(
    service: RunningService, publisher: Publisher, http: httpx.AsyncClient, token: Token
) -> None:
    user, op = str(uuid.UUID(new_id())), str(uuid.UUID(new_id()))  # as the API writes ids
    headers = bearer(token(user))
    await publisher.publish("create_order", op, user=user)
    answer = await recorded(http, op, headers)
    record = msgspec.json.decode(answer.content, type=Operation)
    assert (record.id, record.user_id, record.state) == (op, user, State.PENDING)
    history = await http.get(f"/operations/{op}/history", headers=headers)
    assert [t.version for t in msgspec.json.decode(history.content, type=History).items] == [1]
    page = msgspec.json.decode(
        (await http.get("/operations", headers=headers)).content, type=OperationPage
    )
    assert [item.id for item in page.items] == [op]
    types = await http.get("/sagas/types", headers=headers)
    assert "order_making" in {
        t.name for t in msgspec.json.decode(types.content, type=SagaTypeList).items
    }
    msgspec.json.decode((await http.get("/health")).content, type=Health)
    msgspec.json.decode((await http.get("/ready")).content, type=ReadinessReport)

    counted = service.service.metrics.invalid_requests
    before = counted.value(code="invalid_query")
    refused = await http.get("/operations", params={"state": "done"}, headers=headers)
    assert refused.status_code == 400
    assert refused.json() == {
        "code": "invalid_query",
        "reason": "state must be one of pending, completed, rejected",
    }
    assert counted.value(code="invalid_query") == before + 1


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("get", "/sagas", "/sagas"),
        ("get", "/operations/x/saga", "/operations/{id}/saga"),
        ("post", "/operations/x/cancel", "/operations/{id}/cancel"),
    ],
)
async def test_the_saga_routes_answer_a_store_outage_with_the_documented_503(
    settings: Settings, method: str, path: str, route: str, token: Token
) -> None:
    broken = replace(
        settings, redis_url="redis://127.0.0.1:1/0", amqp_url="amqp://x:y@127.0.0.1:1/"
    )
    service = Service(broken)
    try:
        transport = httpx.ASGITransport(app=service.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            headers = bearer(token("ops", "admin"))
            response = await client.request(method, path, headers=headers)
    finally:
        await service.store.close()
    assert (response.status_code, response.json()["code"]) == (503, "store_unavailable")
    documented = openapi.document(SERVED_ENDPOINTS)["paths"][route][method]["responses"]["503"]
    assert "store_unavailable" in documented["description"]
