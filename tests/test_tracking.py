"""Real messages published on RabbitMQ, the state read back over HTTP (contract §2–4)."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import httpx
import pytest

from operations import logs
from operations.amqp.copies import (
    DISPOSITION_HEADER,
    EXCHANGE_HEADER,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
)
from operations.settings import Settings
from tests.api import bearer
from tests.scrape import Scrape, Series, series
from tests.support import Publisher, RunningService, Style, dead_letters, eventually, new_id

Reader = Callable[..., Awaitable[dict[str, Any] | None]]
ADMIN = "ops-admin"


@pytest.fixture
def read(http: httpx.AsyncClient, token: Callable[..., str]) -> Reader:
    async def read_operation(
        op: str, user: str = ADMIN, *, state: str | None = None, version: int | None = None
    ) -> dict[str, Any] | None:
        roles = ("admin",) if user == ADMIN else ()

        async def fetch() -> dict[str, Any] | None:
            response = await http.get(f"/operations/{op}", headers=bearer(token(user, *roles)))
            if response.status_code != 200:
                return None
            record: dict[str, Any] = response.json()
            if state is not None and record["state"] != state:
                return None
            if version is not None and record["version"] != version:
                return None
            return record

        return await eventually(fetch, f"operation {op} in state {state}")

    return read_operation


async def settle(publisher: Publisher, read: Reader) -> None:
    """A marker message, so everything published before it has been consumed."""
    marker = new_id()
    await publisher.publish("order_deleted", marker)
    await read(marker, state="completed")


@pytest.mark.parametrize("style", ["dotnet", "python"])
async def test_command_then_event(
    service: RunningService, publisher: Publisher, read: Reader, style: Style
) -> None:
    user, op = new_id(), new_id()
    await publisher.publish("create_order", op, user=user, name="create_order", style=style)
    pending = await read(op, user, state="pending")
    await publisher.publish("order_created", op, user=user, name="create_order", style=style)
    completed = await read(op, user, state="completed")
    assert pending is not None and completed is not None
    assert pending["userId"] == completed["userId"]
    assert (pending["version"], completed["version"]) == (1, 2)
    assert completed["name"] == "create_order"


async def test_an_event_before_its_command_stays_completed(
    service: RunningService, publisher: Publisher, read: Reader
) -> None:
    user, op = new_id(), new_id()
    await publisher.publish("order_created", op, user=user)
    await read(op, user, state="completed")
    await publisher.publish("create_order", op, user=user)
    await settle(publisher, read)
    record = await read(op, user)
    assert record is not None
    assert (record["state"], record["version"]) == ("completed", 1)


@pytest.mark.parametrize("style", ["dotnet", "python"])
async def test_a_rejected_event_carries_code_and_reason(
    service: RunningService, publisher: Publisher, read: Reader, style: Style
) -> None:
    user, op = new_id(), new_id()
    await publisher.publish("create_order", op, user=user, style=style)
    body = {"orderId": op, "Code": "customer_not_found", "Reason": "no such customer"}
    await publisher.publish("create_order_rejected", op, user=user, body=body, style=style)
    record = await read(op, user, state="rejected")
    assert record is not None
    assert (record["code"], record["reason"]) == ("customer_not_found", "no such customer")


@pytest.mark.parametrize("style", ["dotnet", "python"])
async def test_the_saga_header_overrides_the_kind(
    service: RunningService, publisher: Publisher, read: Reader, style: Style
) -> None:
    user, by_event, by_command = new_id(), new_id(), new_id()
    await publisher.publish("order_created", by_event, user=user, saga="Pending", style=style)
    await publisher.publish("create_order", by_command, user=user, saga="COMPLETED", style=style)
    assert await read(by_event, user, state="pending")
    assert await read(by_command, user, state="completed")


async def test_an_unknown_saga_value_counts_as_absent(
    service: RunningService, publisher: Publisher, read: Reader
) -> None:
    op = new_id()
    await publisher.publish("order_created", op, saga="Compensating")
    assert await read(op, state="completed")


async def test_a_duplicate_message_id_changes_nothing(
    service: RunningService, publisher: Publisher, read: Reader
) -> None:
    user, op = new_id(), new_id()
    message_id = await publisher.publish("create_order", op, user=user)
    await publisher.publish("order_created", op, user=user, message_id=message_id)
    await settle(publisher, read)
    record = await read(op, user)
    assert record is not None
    assert (record["state"], record["version"]) == ("pending", 1)
    metrics = service.service.metrics.messages
    assert metrics.value(kind="event", outcome="duplicate") == 1


async def test_a_message_without_correlation_id_is_ignored_and_counted(
    service: RunningService,
    publisher: Publisher,
    read: Reader,
    http: httpx.AsyncClient,
    amqp: aio_pika.abc.AbstractRobustConnection,
    settings: Settings,
) -> None:
    await publisher.publish("create_order", None, user=new_id())
    await settle(publisher, read)
    metrics = Scrape((await http.get("/metrics")).text)
    assert metrics.value("operations_messages_total", kind="command", outcome="ignored") == 1
    page = await http.get("/operations", headers=bearer(_admin(read)))
    assert [item["name"] for item in page.json()["items"]] == ["order_deleted"]
    async with amqp.channel() as channel:
        dlq = await channel.declare_queue(settings.dead_letter_queue, durable=True)
        assert dlq.declaration_result.message_count == 0


def _admin(read: Reader) -> str:
    from operations.auth.tokens import mint
    from tests.conftest import SECRET

    return mint(SECRET, ADMIN, ("admin",))


@dataclass(frozen=True)
class BadInput:
    """One kind of bad message, and everything it must leave behind."""

    message: str
    publish: dict[str, Any]
    reason: str  # in the dead-letter header and the WARNING line
    disposition: str
    counted: Series  # the operations_messages_total series it adds one to
    state: str | None = None  # the state applied with what could be read


def bad_inputs(user: str, max_bytes: int) -> dict[str, BadInput]:
    in_part = "applied-in-part"
    command = series("operations_messages_total", kind="command", outcome="applied")
    rejection = series("operations_messages_total", kind="rejected_event", outcome="applied")
    unknown = series("operations_messages_total", kind="unknown", outcome="dead_lettered")
    too_big = b'{"reason":"' + b"x" * (max_bytes + 10) + b'"}'
    not_json = "headers.message_context: not valid JSON"
    return {
        "context as bytes": BadInput(
            "create_order",
            {"raw_context": bytearray(b"{not json")},
            not_json,
            in_part,
            command,
            "pending",
        ),
        "context as str": BadInput(
            "create_order", {"raw_context": "{not json"}, not_json, in_part, command, "pending"
        ),
        "context not an object": BadInput(
            "create_order",
            {"raw_context": '["a", "list"]'},
            "headers.message_context: expected a JSON object, got list",
            in_part,
            command,
            "pending",
        ),
        "body not JSON": BadInput(
            "create_order_rejected",
            {"user": user, "body": b"<html>oops</html>"},
            "body: not valid JSON",
            in_part,
            rejection,
            "rejected",
        ),
        "body too big": BadInput(
            "create_order_rejected",
            {"user": user, "body": too_big},
            f"body: {len(too_big)} bytes exceeds the limit of {max_bytes}",
            in_part,
            rejection,
            "rejected",
        ),
        "not in the catalogue": BadInput(
            "no_such_message",
            {"user": user, "exchange": "orders"},
            "'no_such_message' on exchange 'orders' is not in the catalogue",
            "not-applied",
            unknown,
        ),
        "correlation id too long": BadInput(
            "create_order",
            {"user": user},
            "correlation_id: must be printable and at most 200 characters",
            "not-applied",
            unknown,
        ),
    }


def dead_letter_series(text: str) -> dict[Series, float]:
    """Every sample of the two families a dead letter moves, from Prometheus text."""
    return Scrape(text).samples("operations_messages_total", "operations_dead_letters_total")


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The service's log lines as it writes them off a terminal: one JSON object per line."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.StringIO()
    logs.configure("INFO", out)
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_bad_input_is_dead_lettered_with_a_reason_and_consumption_goes_on(
    service: RunningService,
    publisher: Publisher,
    read: Reader,
    http: httpx.AsyncClient,
    amqp: aio_pika.abc.AbstractRobustConnection,
    settings: Settings,
    json_logs: io.StringIO,
) -> None:
    """Each case alone, so that the dead letter, the counters and the log line it leaves are
    its own."""
    user = new_id()
    async with amqp.channel() as channel:  # a binding left over from an older catalogue
        queue = await channel.declare_queue(settings.queue, durable=True)
        await queue.bind("orders", routing_key="no_such_message")

    for label, case in bad_inputs(user, settings.max_message_bytes).items():
        op = "x" * 201 if label == "correlation id too long" else new_id()
        logged_id = op if len(op) > 200 else str(uuid.UUID(op))
        counted_before = dead_letter_series((await http.get("/metrics")).text)
        await publisher.publish(case.message, op, **case.publish)

        (letter,) = await dead_letters(amqp, settings.dead_letter_queue, 1)
        assert letter.correlation_id == op, label
        assert case.reason in str(letter.headers[REASON_HEADER]), label
        assert str(letter.headers[DISPOSITION_HEADER]) == case.disposition, label
        assert str(letter.headers[EXCHANGE_HEADER]) == "orders", label
        assert str(letter.headers[ROUTING_KEY_HEADER]) == case.message, label
        if "body" in case.publish:
            assert letter.body == case.publish["body"], label

        counted_after = dead_letter_series((await http.get("/metrics")).text)
        moved = {key: counted_after[key] - counted_before.get(key, 0) for key in counted_after}
        assert {key: delta for key, delta in moved.items() if delta} == {
            case.counted: 1,
            series("operations_dead_letters_total", disposition=case.disposition): 1,
        }, label

        async def warned(op_id: str = logged_id, reason: str = case.reason) -> dict[str, Any]:
            for line in json_logs.getvalue().splitlines():
                entry: dict[str, Any] = json.loads(line)
                if entry["correlation_id"] == op_id and reason in entry["message"]:
                    return entry
            return {}

        warning = await eventually(warned, f"the WARNING line about {label}")
        assert warning["level"] == "warning", label
        assert warning["logger"] == "operations.pipeline", label

        if case.state is not None:
            record = await read(op, state=case.state)
            assert record is not None, label
            assert (record["code"], record["reason"]) == (None, None), label
            assert record["userId"] == (str(uuid.UUID(user)) if "user" in case.publish else None)

    after = new_id()
    await publisher.publish("create_order", after, user=user)
    assert await read(after, user, state="pending"), "the consumer stopped"
    assert all("correlation_id" in json.loads(line) for line in json_logs.getvalue().splitlines())


async def test_records_expire(
    settings: Settings,
    redis_client: object,
    amqp: object,
    publisher: Publisher,
    token: Callable[..., str],
) -> None:
    from dataclasses import replace

    from tests.support import start_service

    async with start_service(replace(settings, operation_ttl_seconds=1)) as running:
        user, op = new_id(), new_id()
        headers = bearer(token(user))
        async with httpx.AsyncClient(base_url=running.url) as client:
            await publisher.publish("create_order", op, user=user)

            async def status(expected: int) -> bool:
                return (
                    await client.get(f"/operations/{op}", headers=headers)
                ).status_code == expected

            await eventually(lambda: status(200), "the operation")
            await eventually(lambda: status(404), "the operation to expire", timeout=5)
