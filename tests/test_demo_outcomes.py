"""``operations demo-orders`` prints one short line per order on its standard output as the order
finishes (completed, or rejected with its reason), while its JSON log lines go to standard error:
what a person running ./scripts/run.sh reads in the terminal."""

from __future__ import annotations

import re
import socket
from typing import Any

import httpx
import orjson
from aio_pika.abc import AbstractRobustConnection

from operations.settings import Settings
from tests.api import answered, bearer
from tests.conftest import SECRET
from tests.demo_support import simulated
from tests.support import RunningService, run_operations

TIME = r"\d\d:\d\d:\d\d"


def env_for(port: int) -> dict[str, str]:
    return {
        "OPERATIONS_HOST": "127.0.0.1",
        "OPERATIONS_PORT": str(port),
        "OPERATIONS_JWT_SECRET": SECRET,
    }


async def one_order(port: int, *extra: str) -> tuple[list[str], list[dict[str, Any]]]:
    """One demo order, run to its end: the lines on standard output, the log lines."""
    code, stdout, stderr = await run_operations(
        *("demo-orders", "--user", "demo-user", "--every", "0.1", "--count", "1", *extra),
        env=env_for(port),
    )
    assert code == 0, stderr
    logged = [orjson.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert not any(line.startswith("{") for line in stdout.splitlines()), stdout
    return stdout.splitlines(), logged


def placed(logged: list[dict[str, Any]]) -> str:
    operations = [line["correlation_id"] for line in logged if "placed" in line["message"]]
    assert len(operations) == 1, logged
    operation: str = operations[0]
    return operation


async def read(service: RunningService, operation: str, token: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=service.url) as http:
        return await answered(http, f"/operations/{operation}", bearer(token("demo-user")))


async def test_a_completed_order_gets_one_line_with_its_time(
    service: RunningService,
    settings: Settings,
    connection: AbstractRobustConnection,
    token: Any,
) -> None:
    async with simulated(settings.amqp_url):
        lines, logged = await one_order(service.port)
    operation = placed(logged)
    assert len(lines) == 1, lines
    assert re.fullmatch(rf"{TIME}  order {operation[:8]}… completed in \d+\.\d s", lines[0])
    assert (await read(service, operation, token))["state"] == "completed"
    assert any(
        line["correlation_id"] == operation and "completed after" in line["message"]
        for line in logged
    ), logged


async def test_a_rejected_order_gets_one_line_with_its_reason(
    service: RunningService,
    settings: Settings,
    connection: AbstractRobustConnection,
    token: Any,
) -> None:
    async with simulated(settings.amqp_url, "reserve_resource=1"):
        lines, logged = await one_order(service.port)
    operation = placed(logged)
    record = await read(service, operation, token)
    assert (record["state"], record["code"]) == ("rejected", "reserve_resource_failed"), record
    assert record["reason"]
    assert len(lines) == 1, lines
    took = rf"{TIME}  order {operation[:8]}… rejected in \d+\.\d s: "
    assert re.fullmatch(took + re.escape(record["reason"]), lines[0]), (lines, record)
    assert all(line["level"] == "info" for line in logged), logged


async def test_an_order_that_does_not_finish_in_time_says_so(
    service: RunningService, token: Any
) -> None:
    """No simulated services: the saga waits for its first reply, and demo-orders stops
    following the order after --follow seconds instead of waiting for ever."""
    lines, logged = await one_order(service.port, "--follow", "1")
    operation = placed(logged)
    assert (await read(service, operation, token))["state"] == "pending"
    assert len(lines) == 1, lines
    expected = rf"{TIME}  order {operation[:8]}… still pending after 1\.0 s; not followed any"
    assert re.fullmatch(expected + " further", lines[0]), lines
    assert any(line["level"] == "warning" and "not finished" in line["message"] for line in logged)


async def test_an_order_that_cannot_be_placed_says_why() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    code, stdout, stderr = await run_operations(
        *("demo-orders", "--every", "0.1", "--count", "2"), env=env_for(port)
    )
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert len(lines) == 2, stdout
    for line in lines:
        assert re.match(rf"{TIME}  an order could not be placed: POST /orders failed: ", line)


async def test_follow_must_be_a_number_of_seconds() -> None:
    for bad in ("-1", "nan", "100000"):
        code, _, stderr = await run_operations(
            "demo-orders", "--follow", bad, env={"OPERATIONS_JWT_SECRET": SECRET}
        )
        assert code == 2 and "--follow must be from 0 to 86400 seconds" in stderr, stderr
