"""Structured logs: JSON lines off a terminal, the correlation id on every line about a message,
the configured level, and never a token or a secret."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from operations import logs
from operations.settings import Settings
from tests.conftest import SECRET
from tests.live import LiveClient
from tests.support import Publisher, RunningService, eventually, new_id


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_correlation_id(restore_logging: None) -> None:
    out = io.StringIO()
    logs.configure("INFO", out)
    log = logging.getLogger("operations.test")
    with logs.handling("op-1"):
        log.info("inside")
    log.info("outside")
    log.info("explicit", extra={"correlation_id": "op-2"})
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["message"], line.get("correlation_id")) for line in lines] == [
        ("inside", "op-1"),
        ("outside", None),
        ("explicit", "op-2"),
    ]
    assert {"time", "level", "logger", "message"} <= set(lines[0])


def test_the_level_is_configurable(restore_logging: None) -> None:
    out = io.StringIO()
    logs.configure("WARNING", out)
    logging.getLogger("operations.test").info("hidden")
    logging.getLogger("operations.test").warning("shown")
    assert [json.loads(line)["message"] for line in out.getvalue().splitlines()] == ["shown"]


def test_a_terminal_gets_readable_lines(restore_logging: None) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    logs.configure("INFO", out)
    with logs.handling("op-9"):
        logging.getLogger("operations.test").info("hello")
    assert out.getvalue().rstrip().endswith("hello [correlation_id=op-9]")


async def test_no_token_or_secret_reaches_the_logs(
    restore_logging: None,
    service: RunningService,
    publisher: Publisher,
    http: httpx.AsyncClient,
    token: Callable[..., str],
    settings: Settings,
) -> None:
    out = io.StringIO()
    logs.configure("DEBUG", out)  # the most talkative level an operator can choose
    user_token, admin_token = token("alice"), token("ops", "admin")
    op = new_id()
    await publisher.publish("create_order", op, raw_context=bytearray(b"{broken"))
    await http.get(f"/operations/{op}", headers={"Authorization": f"Bearer {user_token}"})
    await http.get("/operations", headers={"Authorization": f"Bearer {admin_token}"})
    await http.get("/operations", headers={"Authorization": "Bearer not.a.token"})
    live = LiveClient(service.url)
    await live.connect({"token": admin_token})
    await live.close()

    async def warned() -> bool:
        return "applied create_order in part" in out.getvalue()

    await eventually(warned, "the warning about the broken context")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    warning = next(line for line in lines if "applied create_order in part" in line["message"])
    assert warning["correlation_id"] == str(uuid.UUID(op))
    assert len(lines) > 5
    for secret in (user_token, admin_token, SECRET, settings.jwt_secret):
        assert secret not in out.getvalue()
