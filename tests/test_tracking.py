"""Real messages published on RabbitMQ, the state read back over HTTP (contract §2–4)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import httpx
import pytest

from operations.consumer import DISPOSITION_HEADER, REASON_HEADER
from operations.settings import Settings
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
            response = await http.get(
                f"/operations/{op}", headers={"Authorization": f"Bearer {token(user, *roles)}"}
            )
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
    metrics = (await http.get("/metrics")).text
    assert 'operations_messages_total{kind="command",outcome="ignored"} 1' in metrics
    page = await http.get("/operations", headers={"Authorization": f"Bearer {_admin(read)}"})
    assert [item["name"] for item in page.json()["items"]] == ["order_deleted"]
    async with amqp.channel() as channel:
        dlq = await channel.declare_queue(settings.dead_letter_queue, durable=True)
        assert dlq.declaration_result.message_count == 0


def _admin(read: Reader) -> str:
    from operations.tokens import mint
    from tests.conftest import SECRET

    return mint(SECRET, ADMIN, ("admin",))


async def test_bad_input_is_dead_lettered_with_a_reason_and_consumption_goes_on(
    service: RunningService,
    publisher: Publisher,
    read: Reader,
    amqp: aio_pika.abc.AbstractRobustConnection,
    settings: Settings,
) -> None:
    user = new_id()
    bad_context, bad_body, big, unknown = new_id(), new_id(), new_id(), new_id()
    await publisher.publish("create_order", bad_context, raw_context=bytearray(b"{not json"))
    await publisher.publish("create_order_rejected", bad_body, user=user, body=b"<html>oops</html>")
    await publisher.publish(
        "create_order_rejected",
        big,
        user=user,
        body=b'{"reason":"' + b"x" * (settings.max_message_bytes + 10) + b'"}',
    )
    async with amqp.channel() as channel:  # a binding left over from an older catalogue
        queue = await channel.declare_queue(settings.queue, durable=True)
        await queue.bind("orders", routing_key="no_such_message")
    await publisher.publish("no_such_message", unknown, user=user, exchange="orders")
    after = new_id()
    await publisher.publish("create_order", after, user=user)

    assert await read(after, user, state="pending"), "the consumer stopped"
    assert await read(bad_context, state="pending")  # applied with what it had: no owner
    rejected = await read(bad_body, user, state="rejected")
    assert rejected is not None and (rejected["code"], rejected["reason"]) == (None, None)
    assert await read(big, user, state="rejected")

    letters = await dead_letters(amqp, settings.dead_letter_queue, 4)
    by_id = {letter.correlation_id: letter for letter in letters}
    reasons = {op: str(by_id[op].headers[REASON_HEADER]) for op in by_id}
    dispositions = {op: str(by_id[op].headers[DISPOSITION_HEADER]) for op in by_id}
    assert "message_context" in reasons[bad_context] and "JSON" in reasons[bad_context]
    assert "body: not valid JSON" in reasons[bad_body]
    assert "exceeds the limit" in reasons[big]
    assert "not in the catalogue" in reasons[unknown]
    assert dispositions == {
        bad_context: "applied-in-part",
        bad_body: "applied-in-part",
        big: "applied-in-part",
        unknown: "not-applied",
    }
    assert by_id[bad_body].body == b"<html>oops</html>"


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
        headers = {"Authorization": f"Bearer {token(user)}"}
        async with httpx.AsyncClient(base_url=running.url) as client:
            await publisher.publish("create_order", op, user=user)

            async def status(expected: int) -> bool:
                return (
                    await client.get(f"/operations/{op}", headers=headers)
                ).status_code == expected

            await eventually(lambda: status(200), "the operation")
            await eventually(lambda: status(404), "the operation to expire", timeout=5)
