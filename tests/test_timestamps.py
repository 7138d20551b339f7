"""One timestamp format in every JSON answer and every push: RFC 3339 in UTC with milliseconds
and ``Z``, whatever form the time is stored in (seconds since the epoch for sagas, ISO with
``+00:00`` for dead letters kept by earlier versions)."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aio_pika
import httpx
import msgspec
import orjson
from aio_pika.abc import AbstractRobustConnection

from operations.deadletters.letters import DeadLetterItem, StoredLetter
from operations.http import openapi
from operations.settings import Settings
from operations.timestamps import PATTERN, rfc3339
from tests.api import bearer, place_order
from tests.dead_letter_support import copy_headers, letters
from tests.live import LiveClient
from tests.support import Publisher, eventually, new_id, start_service

Token = Callable[..., str]
ONE_FORMAT = re.compile(PATTERN)
assert PATTERN == r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"


def assert_time(value: Any, where: str) -> None:
    assert isinstance(value, str) and ONE_FORMAT.match(value), f"{where}: {value!r}"


def assert_times(
    document: dict[str, Any], where: str, fields: tuple[str, ...] = ("createdAt", "updatedAt")
) -> None:
    """Each of ``fields`` of ``document`` (a record's two times by default) is in the one format."""
    for field in fields:
        assert_time(document[field], f"{where} {field}")


def test_one_function_writes_every_time() -> None:
    moment = dt.datetime(2026, 12, 7, 13, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert rfc3339(moment) == "2026-12-07T12:00:00.123Z"
    assert rfc3339(moment.replace(tzinfo=None)) == "2026-12-07T13:00:00.123Z"  # naive: UTC
    assert rfc3339(moment.timestamp()) == "2026-12-07T12:00:00.123Z"
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"


def test_the_openapi_document_declares_every_time_a_date_time() -> None:
    """Every property that holds a time is a ``date-time`` string in the document."""
    timely = re.compile(r"(At|^at|^deadline|Since|^first|^last)$")
    schemas = openapi.document()["components"]["schemas"]
    found = []
    for name, schema in schemas.items():
        for field, described in schema.get("properties", {}).items():
            if not timely.search(field):
                continue
            found.append(f"{name}.{field}")
            options = described.get("anyOf", [described])
            kinds = [option for option in options if option.get("type") != "null"]
            assert kinds and all(
                option.get("type") == "string" and option.get("format") == "date-time"
                for option in kinds
            ), (name, field, described)
    for expected in (
        "Operation.createdAt",
        "Transition.at",
        "SagaView.deadline",
        "SagaView.waitingSince",
        "SagaStep.at",
        "TypeSteps.at",
        "DeadLetterItem.deadLetteredAt",
        "DeadLetterGroup.first",
    ):
        assert expected in found


async def test_a_saga_and_its_operation_show_every_time_in_one_format(
    http: httpx.AsyncClient, clients: Callable[[], LiveClient], token: Token
) -> None:
    user, admin = str(uuid.uuid4()), bearer(token("ops", "admin"))
    live = clients()
    await live.connect(auth={"token": token(user)})
    operation = await place_order(http, token(user))

    async def saga() -> dict[str, Any] | None:
        response = await http.get(f"/operations/{operation}/saga", headers=admin)
        found: dict[str, Any] = response.json()
        return found if response.status_code == 200 and found["steps"] else None

    shown = await eventually(saga, "the saga to start")
    assert_times(shown, "saga", ("createdAt", "updatedAt", "deadline", "waitingSince"))
    for step in shown["steps"]:
        assert_time(step["at"], "a saga step")
    assert shown["waitingSince"] == shown["steps"][-1]["at"]

    listed = (await http.get("/sagas", headers=admin)).json()["items"]
    (mine,) = [item for item in listed if item["correlationId"] == operation]
    assert_times(mine, "GET /sagas", ("createdAt", "updatedAt", "deadline"))
    assert_time(mine["steps"][0]["at"], "GET /sagas step")
    load = (await http.get("/sagas/types/order_making/steps", headers=admin)).json()
    assert_time(load["at"], "a type's load")

    record = (await http.get(f"/operations/{operation}", headers=admin)).json()
    assert_times(record, "operation")
    page = (await http.get("/operations", headers=bearer(token(user)))).json()
    assert_time(page["items"][0]["updatedAt"], "a listed operation")
    history = (await http.get(f"/operations/{operation}/history", headers=admin)).json()
    for transition in history["items"]:
        assert_time(transition["at"], "a transition")

    pushed = await live.wait_for_state(operation, "pending")
    assert_times(pushed, "pushed")


async def test_a_pushed_operation_and_a_sync_show_times_in_one_format(
    clients: Callable[[], LiveClient], publisher: Publisher, token: Token
) -> None:
    user, op = str(uuid.UUID(new_id())), str(uuid.UUID(new_id()))
    live = clients()
    await live.connect(auth={"token": token(user)})
    await publisher.publish("create_order", op, user=user)
    await publisher.publish("order_created", op, user=user)
    await live.wait_for_state(op, "completed")
    for pushed in live.records(op):
        assert_times(pushed, "pushed")
    since = live.records(op)[0]["cursor"]
    await live.close()  # and comes back with its last cursor
    again = clients()
    await again.connect(auth={"token": token(user), "since": since})
    await again.wait_for(lambda c: bool(c.records(op)), "the sync")
    (synced,) = again.records(op)
    assert synced["state"] == "completed"
    assert_times(synced, "synced")


async def test_a_dead_letter_shows_every_time_in_one_format(
    settings: Settings, amqp: AbstractRobustConnection, token: Token
) -> None:
    """The consumer stamps its dead-letter copies with ISO times with ``+00:00``; the message
    carries an AMQP timestamp and a header holding a time: all are shown in one format."""
    kept = replace(settings, dead_letter_keep=True, sagas=False)
    admin = bearer(token("ops", "admin"))
    at = dt.datetime(2026, 12, 7, 12, 0, 0, 250000, tzinfo=dt.UTC)
    headers = copy_headers("bad body", at) | {"x-sent": at}
    assert headers["x-operations-dead-lettered-at"].endswith("+00:00")
    async with amqp.channel(publisher_confirms=True) as channel:
        await channel.declare_queue(kept.dead_letter_queue, durable=True)
        await channel.default_exchange.publish(
            aio_pika.Message(
                b"[1]",
                headers=headers,
                correlation_id=uuid.uuid4().hex,
                timestamp=at,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=kept.dead_letter_queue,
        )
    async with (
        start_service(kept) as running,
        httpx.AsyncClient(base_url=running.url, timeout=30) as http,
    ):

        async def one() -> list[dict[str, Any]]:
            return await letters(http, admin)

        (letter,) = await eventually(one, "the dead letter to be kept")
        assert letter["deadLetteredAt"] == "2026-12-07T12:00:00.250Z"
        assert letter["properties"]["timestamp"] == "2026-12-07T12:00:00.000Z"  # whole seconds
        assert letter["headers"]["x-sent"] == "2026-12-07T12:00:00.000Z"
        groups = orjson.loads((await http.get("/dead-letters/groups", headers=admin)).content)
        (group,) = groups["items"]
        assert (group["first"], group["last"]) == ("2026-12-07T12:00:00.250Z",) * 2


def test_a_dead_letter_kept_by_an_earlier_version_is_shown_in_one_format() -> None:
    """Letters stored before hold ``+00:00`` times; they are shown in the one format."""
    item = DeadLetterItem(
        "id", "q", "orders", "k", "r", "not-applied", None, None,
        "2026-12-07T12:00:00.250Z", 1, {}, {"timestamp": "2026-12-07T12:00:00Z"}, "", "utf-8", 0,
        False,
    )  # fmt: skip
    stored = orjson.loads(msgspec.json.encode(StoredLetter(item, {}, 0)))
    stored["item"]["deadLetteredAt"] = "2026-12-07T12:00:00.250+00:00"
    stored["item"]["properties"]["timestamp"] = "2026-12-07T12:00:00+00:00"
    read = msgspec.json.decode(orjson.dumps(stored), type=StoredLetter).item
    assert read.dead_lettered_at == "2026-12-07T12:00:00.250Z"
    assert read.properties["timestamp"] == "2026-12-07T12:00:00.000Z"
