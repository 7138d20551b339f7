"""Bounded input at every HTTP door, decided before anything is published: JSON bodies within
the document bounds, ids, names and reasons within their length and character rules, tokens
whose ``sub`` a message could carry, and ``Prefer: wait`` read whatever its digits. Every refusal
here is checked to have published nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import socketio
from aio_pika.abc import AbstractRobustConnection

from operations.pacco.demo import DemoServices
from operations.settings import Settings
from tests.api import bearer, order_body
from tests.doubles import ServiceDouble
from tests.live import LiveClient
from tests.sagas_support import Wire
from tests.support import Publisher, RunningService, ServeProcess, eventually
from tests.test_example_delivery import deliveries_answers
from tests.test_example_delivery import served as served  # the example saga in `operations serve`

Token = Callable[..., str]


def nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def deep_field(levels: int, **fields: str) -> bytes:
    """A JSON object with ``fields`` and ``x`` nesting ``levels`` arrays deep."""
    head = b"".join(f'"{key}":"{value}",'.encode() for key, value in fields.items())
    return b"{" + head + b'"x":' + nested(levels) + b"}"


async def assert_nothing_published(http: httpx.AsyncClient, wire: Wire, token: Token) -> None:
    """No refused request reached the broker: a start made after them is the first and only
    MakeOrder on the wire."""
    witness = await http.post("/sagas/order_making", json=order_body(), headers=bearer(token("w")))
    assert witness.status_code == 202, witness.text
    operation = witness.json()["operationId"]
    await wire.until(operation, "make_order")
    started = [sent.correlation_id for sent in wire.seen if sent.routing_key == "make_order"]
    assert started == [operation]


async def test_a_deep_saga_start_is_refused_and_others_still_run(
    served: ServeProcess, amqp: AbstractRobustConnection, token: Token
) -> None:
    """The poison of issue #23: a start 252 levels deep was accepted and stalled the saga queue."""
    bearer_a, bearer_b = bearer(token("a")), bearer(token("b"))
    async with (
        ServiceDouble(amqp, deliveries_answers()) as deliveries,
        httpx.AsyncClient(base_url=served.url, timeout=30) as http,
    ):
        poison = await http.post(
            "/sagas/parcel_delivery",
            content=deep_field(252, deliveryId="d", parcelId="p"),
            headers={**bearer_a, "Content-Type": "application/json"},
        )
        assert (poison.status_code, poison.json()["code"]) == (400, "invalid_body"), poison.text
        assert "nested more than 32 levels deep" in poison.json()["reason"]
        done = await http.post(
            "/sagas/parcel_delivery",
            json={"deliveryId": "d-b", "parcelId": "p-b"},
            headers={**bearer_b, "Prefer": "wait=10"},
        )
        assert done.status_code == 200, served.logs()
        assert done.json()["state"] == "completed"
        assert {correlation for _, correlation, _ in deliveries.received} == {done.json()["id"]}
        mine = await http.get("/operations", headers=bearer_a)
        assert mine.json()["items"] == []


BODY_ROUTES = [
    ("/sagas/order_making", "invalid_body"),
    ("/orders", "invalid_order"),
    (f"/operations/{uuid.uuid4()}/cancel", "invalid_body"),
    ("/dead-letters/redrive", "invalid_body"),
    ("/dead-letters/discard", "invalid_body"),
]
# Each within the dead-letter routes' 4 KiB too, so every route reads it.
OUT_OF_BOUNDS = {
    "deep": (deep_field(40, customerId="c", parcelId="p"), "x[0]"),
    "very deep": (deep_field(1_500, customerId="c", parcelId="p"), ""),
    "huge integer": (b'{"customerId":"c","parcelId":"p","n":18446744073709551616}', "n"),
    "long integer": (b'{"customerId":"c","parcelId":"p","n":' + b"9" * 4_000 + b"}", "n"),
}


@pytest.mark.parametrize(("path", "code"), BODY_ROUTES)
async def test_every_body_route_refuses_a_document_out_of_bounds(
    service: RunningService,
    http: httpx.AsyncClient,
    token: Token,
    wire: Wire,
    path: str,
    code: str,
) -> None:
    headers = bearer(token("u", "admin"), **{"Content-Type": "application/json"})
    for what, (body, where) in OUT_OF_BOUNDS.items():
        response = await http.post(path, content=body, headers=headers)
        assert response.status_code == 400, (what, response.text)
        assert response.json()["code"] == code, what
        assert where in response.json()["reason"], (what, response.json())
    await assert_nothing_published(http, wire, token)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"orderId": "ord-€"}, "orderId"),
        ({"orderId": "ord-\r\nSet-Cookie: x=1"}, "orderId"),
        ({"orderId": "o" * 201}, "orderId"),
        ({"customerId": "c\x00"}, "customerId"),
        ({"customerId": "c" * 201}, "customerId"),
        ({"parcelIds": ["p", "p\u202e"]}, "parcelIds[1]"),
        ({"parcelIds": ["p" * 201]}, "parcelIds[0]"),
    ],
)
async def test_order_ids_that_cannot_be_kept_or_answered_are_refused_before_publishing(
    service: RunningService,
    http: httpx.AsyncClient,
    token: Token,
    wire: Wire,
    fields: dict[str, Any],
    field: str,
) -> None:
    response = await http.post("/orders", json=order_body(**fields), headers=bearer(token("u")))
    assert (response.status_code, response.json()["code"]) == (400, "invalid_order")
    assert field in response.json()["reason"]
    await assert_nothing_published(http, wire, token)


async def test_an_order_id_of_200_printable_ascii_characters_is_answered_as_it_is(
    service: RunningService, http: httpx.AsyncClient, token: Token
) -> None:
    order_id = "o-" + "x" * 198
    response = await http.post(
        "/orders", json=order_body(orderId=order_id), headers=bearer(token("u"))
    )
    assert response.status_code == 202, response.text
    assert response.headers["Resource-ID"] == order_id == response.json()["orderId"]


async def test_prefer_wait_with_any_digits_is_read_before_publishing(
    service: RunningService, settings: Settings, http: httpx.AsyncClient, token: Token
) -> None:
    async with DemoServices(settings.amqp_url, latency_ms=0):
        long = await http.post(
            "/sagas/order_making",
            json=order_body(),
            headers=bearer(token("u"), Prefer="wait=" + "9" * 5_000),
        )
        assert long.status_code == 200, long.text
        assert long.headers["Preference-Applied"] == "wait=60"
        padded = await http.post(
            "/sagas/order_making",
            json=order_body(),
            headers=bearer(token("u"), Prefer="wait=" + "0" * 5_000 + "20"),
        )
        assert padded.status_code == 200, padded.text
        assert padded.headers["Preference-Applied"] == "wait=20"
    superscript = await http.post(
        "/sagas/order_making",
        json=order_body(),
        headers={b"Authorization": f"Bearer {token('u')}".encode(), b"Prefer": b"wait=\xb2"},
    )
    assert superscript.status_code == 202, superscript.text
    assert "Preference-Applied" not in superscript.headers


@pytest.mark.parametrize(
    "sub",
    ["u" * 201, "a\nb", "a\x00b", "\u202eadmin", "a\u2028b"],
    ids=["long", "newline", "nul", "bidi", "line-separator"],
)
async def test_a_token_whose_sub_no_message_could_carry_is_refused(
    http: httpx.AsyncClient,
    clients: Callable[[], LiveClient],
    token: Token,
    wire: Wire,
    sub: str,
) -> None:
    bad = token(sub)
    started = await http.post("/sagas/order_making", json=order_body(), headers=bearer(bad))
    assert (started.status_code, started.json()["code"]) == (401, "unauthorized")
    assert "sub" in started.json()["reason"]
    ordered = await http.post("/orders", json=order_body(), headers=bearer(bad))
    assert ordered.status_code == 401
    assert (await http.get("/operations", headers=bearer(bad))).status_code == 401
    live = clients()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await live.connect({"token": bad})
    assert live.connect_error == {"message": "unauthorized", "data": {"code": "unauthorized"}}
    await assert_nothing_published(http, wire, token)


ODD_USERS = ["u" * 200, "Zoë", "a b", "user:1", "USER:1", "{x}", "0", "тест"]
GUID = uuid.uuid4()


async def test_odd_user_ids_are_kept_apart(
    service: RunningService, http: httpx.AsyncClient, token: Token
) -> None:
    owned: dict[str, str] = {}
    for user in [*ODD_USERS, str(GUID)]:
        response = await http.post(
            "/sagas/order_making", json=order_body(), headers=bearer(token(user))
        )
        assert response.status_code == 202, (user, response.text)
        owned[user] = response.json()["operationId"]

    async def all_recorded() -> bool:
        for user, operation in owned.items():
            read = await http.get(f"/operations/{operation}", headers=bearer(token(user)))
            if read.status_code != 200:
                return False
        return True

    await eventually(all_recorded, "every odd user's operation to be recorded")
    for user, operation in owned.items():
        read = await http.get(f"/operations/{operation}", headers=bearer(token(user)))
        assert read.json()["userId"] == user
        listed = await http.get("/operations", headers=bearer(token(user)))
        assert [item["id"] for item in listed.json()["items"]] == [operation]
        for other in owned:
            if other != user:
                theirs = await http.get(f"/operations/{operation}", headers=bearer(token(other)))
                assert theirs.status_code == 404, (user, other)
    # One user, whichever way the GUID is written.
    as_n = bearer(token(GUID.hex.upper()))
    read = await http.get(f"/operations/{owned[str(GUID)]}", headers=as_n)
    assert read.status_code == 200 and read.json()["userId"] == str(GUID)


IMPOSSIBLE_IDS = ["x" * 201, "a%0Ab", "a%00b", "%E2%80%AEab", "a%E2%80%A8b", "%20"]


@pytest.mark.parametrize("raw", IMPOSSIBLE_IDS)
async def test_a_path_id_no_operation_can_have_answers_as_an_unknown_one(
    service: RunningService, http: httpx.AsyncClient, token: Token, raw: str
) -> None:
    who = bearer(token("u"))
    unknown = str(uuid.uuid4())
    for method, suffix in (("GET", ""), ("GET", "/history"), ("GET", "/saga"), ("POST", "/cancel")):
        refused = await http.request(method, f"/operations/{raw}{suffix}")
        assert refused.status_code == 401, (suffix, refused.text)
        answer = await http.request(method, f"/operations/{raw}{suffix}", headers=who)
        assert (answer.status_code, answer.json()["code"]) == (404, "operation_not_found")
        assert answer.json()["reason"].endswith("was not found")
        baseline = await http.request(method, f"/operations/{unknown}{suffix}", headers=who)
        assert (baseline.status_code, baseline.headers.keys()) == (404, answer.headers.keys())


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"name": "a\nb"}, "name"),
        ({"name": "n" * 2_001}, "name"),
        ({"userId": "u" * 201}, "userId"),
        ({"userId": "a\x00"}, "userId"),
        ({"cursor": "c" * 201}, "cursor"),
    ],
)
async def test_query_strings_get_the_same_rules(
    service: RunningService,
    http: httpx.AsyncClient,
    token: Token,
    query: dict[str, str],
    field: str,
) -> None:
    answer = await http.get("/operations", params=query, headers=bearer(token("u", "admin")))
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid_query")
    assert answer.json()["reason"].startswith(field)


async def test_a_saga_type_name_is_never_echoed_unbounded(
    service: RunningService, http: httpx.AsyncClient, token: Token, wire: Wire
) -> None:
    for name in ("n" * 5_000, "a%0Ab"):
        answer = await http.post(f"/sagas/{name}", json={}, headers=bearer(token("u")))
        assert (answer.status_code, answer.json()["code"]) == (404, "saga_not_found")
        assert len(answer.json()["reason"]) < 300 and "\n" not in answer.json()["reason"]
    await assert_nothing_published(http, wire, token)


async def test_a_cancel_reason_must_be_one_printable_line(
    service: RunningService, http: httpx.AsyncClient, token: Token
) -> None:
    who = bearer(token("u"))
    started = await http.post("/orders", json=order_body(), headers=who)
    operation = started.json()["operationId"]

    async def running() -> bool:
        saga = await http.get(f"/operations/{operation}/saga", headers=who)
        return saga.status_code == 200 and saga.json()["status"] == "pending"

    await eventually(running, "the saga to start")
    for reason in ("changed\nmy mind", "x\x1b[2J", "r" * 501):
        refused = await http.post(
            f"/operations/{operation}/cancel", json={"reason": reason}, headers=who
        )
        assert (refused.status_code, refused.json()["code"]) == (400, "invalid_body"), reason
    assert await running()
    accepted = await http.post(
        f"/operations/{operation}/cancel", json={"reason": "changed my mind"}, headers=who
    )
    assert accepted.status_code == 202, accepted.text


async def chunks(body: bytes, size: int = 4_096) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_the_64_kib_body_limit_holds_to_the_byte(
    service: RunningService, http: httpx.AsyncClient, token: Token, wire: Wire
) -> None:
    def padded(size: int) -> bytes:
        head = b'{"pad":"'
        return head + b"p" * (size - len(head) - 2) + b'"}'

    headers = bearer(token("u"), **{"Content-Type": "application/json"})
    at_limit = await http.post("/sagas/order_making", content=padded(65_536), headers=headers)
    assert at_limit.status_code == 202, at_limit.text
    over = await http.post("/sagas/order_making", content=padded(65_537), headers=headers)
    assert (over.status_code, over.json()["code"]) == (413, "payload_too_large")
    streamed = await http.post("/orders", content=chunks(padded(70_000)), headers=headers)
    assert (streamed.status_code, streamed.json()["code"]) == (413, "payload_too_large")
    admin = bearer(token("ops", "admin"), **{"Content-Type": "application/json"})
    group = await http.post("/dead-letters/redrive", content=chunks(padded(5_000)), headers=admin)
    assert (group.status_code, group.json()["code"]) == (413, "payload_too_large")
    counted = 'operations_http_invalid_requests_total{code="payload_too_large"} 3.0'
    assert counted in (await http.get("/metrics")).text
    started = await until_started(http, wire, token)
    assert len(started) == 2  # the one at the limit, and the witness


async def until_started(http: httpx.AsyncClient, wire: Wire, token: Token) -> list[Any]:
    witness = await http.post("/sagas/order_making", json=order_body(), headers=bearer(token("w")))
    await wire.until(witness.json()["operationId"], "make_order")
    return [sent for sent in wire.seen if sent.routing_key == "make_order"]


async def test_an_order_for_another_customer_carries_its_caller_downstream(
    service: RunningService, http: httpx.AsyncClient, token: Token, wire: Wire
) -> None:
    """The service does not know customers: the caller travels in ``message_context.user``, and
    the Orders service decides whether that user may order for that customer."""
    caller = str(uuid.uuid4())
    someone_else = str(uuid.uuid4())
    placed = await http.post(
        "/orders", json=order_body(customerId=someone_else), headers=bearer(token(caller))
    )
    assert placed.status_code == 202, placed.text
    (sent,) = [s for s in await wire.until(placed.json()["operationId"], "make_order")]
    assert sent.body["customerId"] == someone_else
    assert sent.context["user"] == {
        "id": caller,
        "isAuthenticated": True,
        "role": "user",
        "claims": {},
    }


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"orderId": "o\r\nx"}, "orderId must hold printable characters only"),
        ({"customerId": "c" * 201}, "customerId must be at most 200 characters"),
        ({"parcelIds": ["p", ""]}, "parcelIds[1] must not be blank"),
        ({"parcelIds": ["p", 7]}, "parcelIds[1] must be a string"),
        ({"parcelIds": [f"p{n}" for n in range(101)]}, "parcelIds must hold at most 100 ids"),
    ],
)
async def test_a_make_order_from_the_broker_is_held_to_the_same_rules(
    service: RunningService,
    publisher: Publisher,
    http: httpx.AsyncClient,
    token: Token,
    fields: dict[str, Any],
    problem: str,
) -> None:
    """Another service may publish MakeOrder itself: the saga refuses what POST /orders would,
    visibly, where it used to keep the ids (or drop some parcels) as they came."""
    user, operation = str(uuid.uuid4()), str(uuid.uuid4())
    body = {"orderId": "o-1", "customerId": "c-1", "parcelIds": ["p-1"], **fields}
    await publisher.publish("make_order", operation, user=user, saga="Pending", body=body)

    async def rejected() -> dict[str, Any] | None:
        read = await http.get(f"/operations/{operation}", headers=bearer(token(user)))
        record: dict[str, Any] = read.json()
        return record if read.status_code == 200 and record["state"] == "rejected" else None

    record = await eventually(rejected, "the order to be rejected")
    assert (record["code"], record["reason"]) == ("invalid_order", f"make_order: {problem}")
