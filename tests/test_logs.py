"""Structured logs: JSON lines off a terminal, a correlation id key on every line (the message's
id on every line about a message), the configured level, and never a token or a secret."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Callable

import aio_pika
import httpx
import jwt
import pytest
import socketio

from operations import logs
from operations.auth.tokens import mint
from operations.settings import Settings
from tests.api import bearer, recorded
from tests.conftest import SECRET
from tests.live import LiveClient
from tests.support import Publisher, RunningService, eventually, new_id, serve_process


def test_json_lines_carry_the_correlation_id(restore_logging: None) -> None:
    out = io.StringIO()
    logs.configure("INFO", out)
    log = logging.getLogger("operations.test")
    with logs.handling("op-1"):
        log.info("inside")
    log.info("outside")
    log.info("explicit", extra={"correlation_id": "op-2"})
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["message"], line["correlation_id"]) for line in lines] == [
        ("inside", "op-1"),
        ("outside", None),
        ("explicit", "op-2"),
    ]
    for line in lines:
        assert {"time", "level", "logger", "message", "correlation_id"} <= set(line)


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
    await http.get(f"/operations/{op}", headers=bearer(user_token))
    await http.get("/operations", headers=bearer(admin_token))
    await http.get("/operations", headers=bearer("not.a.token"))
    live = LiveClient(service.url)
    await live.connect({"token": admin_token})
    await live.close()

    async def warned() -> bool:
        return "applied create_order in part" in out.getvalue()

    await eventually(warned, "the warning about the broken context")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    warning = next(line for line in lines if "applied create_order in part" in line["message"])
    assert warning["correlation_id"] == str(uuid.UUID(op))
    assert {"operations.pipeline", "uvicorn.error"} <= {line["logger"] for line in lines}
    assert all("correlation_id" in line for line in lines)
    assert settings.jwt_secret is not None
    for secret in (user_token, admin_token, SECRET, settings.jwt_secret):
        assert secret not in out.getvalue()


async def test_good_and_bad_tokens_never_reach_the_logs_at_debug(
    restore_logging: None,
    service: RunningService,
    publisher: Publisher,
    http: httpx.AsyncClient,
    token: Callable[..., str],
    settings: Settings,
) -> None:
    out = io.StringIO()
    logs.configure("DEBUG", out)
    assert logging.getLogger().getEffectiveLevel() == logging.DEBUG
    owner, op = new_id(), new_id()
    good = token(owner)
    forged_secret = "not-the-service-secret-0123456789"
    bad = {
        "forged": mint(forged_secret, owner),  # well-formed, signed with another key
        "expired": mint(SECRET, owner, ttl_seconds=-10),
        "alg none": jwt.encode({"sub": owner, "exp": 4_000_000_000}, "", algorithm="none"),
    }
    await publisher.publish("create_order", op, user=owner)
    await recorded(http, op, bearer(good))
    for path in (f"/operations/{op}", f"/operations/{op}/history", "/operations"):
        assert (await http.get(path, headers=bearer(good))).status_code == 200, path
        for label, value in bad.items():
            response = await http.get(path, headers=bearer(value))
            assert response.status_code == 401, (path, label)
    refused = LiveClient(service.url)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect({"token": bad["forged"]})
    await refused.close()
    accepted = LiveClient(service.url)
    await accepted.connect({"token": good})
    assert accepted.client.connected
    await accepted.close()

    text = out.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines and all("correlation_id" in line for line in lines)
    for value in (good, *bad.values()):
        header, payload, signature = value.split(".")
        for part in (f"Bearer {value}", value, f"{header}.{payload}", signature or value):
            assert part not in text
    assert "eyJ" not in text, "something that looks like a JWT was logged"
    assert settings.jwt_secret is not None
    for secret in (SECRET, settings.jwt_secret, forged_secret):
        assert secret not in text


def test_json_lines_carry_every_extra_field_and_the_stack(restore_logging: None) -> None:
    out = io.StringIO()
    logs.configure("INFO", out)
    logging.getLogger("operations.test").warning(
        "with extras",
        extra={"queue": "q1", "attempt": 3, "where": object(), "api_token": "abc.def.ghi"},
        stack_info=True,
    )
    [line] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert line["queue"] == "q1" and line["attempt"] == 3
    assert line["where"].startswith("<object object")  # what JSON cannot hold, as its repr
    assert line["api_token"] == logs.REDACTED
    assert "abc.def.ghi" not in out.getvalue()
    assert line["stack"].startswith("Stack (most recent call last)")
    assert "test_json_lines_carry_every_extra_field_and_the_stack" in line["stack"]
    assert "trace_id" not in line and "span_id" not in line


def test_json_lines_in_a_trace_carry_its_ids(restore_logging: None) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from operations import tracing

    out = io.StringIO()
    logs.configure("INFO", out)
    provider = TracerProvider()
    tracing.install(provider)
    try:
        with tracing.tracer().start_as_current_span("work") as span:
            logging.getLogger("operations.test").info("traced")
        logging.getLogger("operations.test").info("untraced")
    finally:
        tracing.install(None)
        provider.shutdown()
    traced, untraced = [json.loads(line) for line in out.getvalue().splitlines()]
    context = span.get_span_context()
    assert traced["trace_id"] == format(context.trace_id, "032x")
    assert traced["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in untraced
    assert not trace.get_current_span().get_span_context().is_valid


# One event, one line: text from outside cannot forge a log line, through `operations serve`
# with readable lines (OPERATIONS_LOG_FORMAT=text) as with JSON lines.

FORGED = "2026-12-07 12:00:00,000 CRITICAL operations.http.operations: forged"


@pytest.mark.parametrize("form", ["text", "json"])
async def test_a_line_break_in_a_correlation_id_forges_no_line(
    form: str, settings: Settings, amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    async with (
        serve_process(settings, {"OPERATIONS_LOG_FORMAT": form}) as served,
        Publisher(amqp) as publisher,
    ):
        await publisher.publish("create_order", f"op-1\n{FORGED}\r\x1b[2J", user="alice")
        await eventually(
            lambda: _logged(served.logs(), "dead-lettered create_order"), "the dead-letter line"
        )
        lines = served.logs().splitlines()
    assert not [line for line in lines if line.startswith(FORGED)]
    [line] = [line for line in lines if "dead-lettered create_order" in line]
    if form == "text":
        assert line.endswith(f"[correlation_id=op-1\\n{FORGED}\\r\\x1b[2J]")
    else:
        assert json.loads(line)["correlation_id"] == f"op-1\n{FORGED}\r\x1b[2J"


async def _logged(text: str, what: str) -> bool:
    return what in text


def test_readable_lines_escape_every_control_character(restore_logging: None) -> None:
    out = io.StringIO()
    logs.configure("INFO", out, form="text")
    logging.getLogger("operations.test").warning("path %s", "/operations/a\nb\u2028c\x85d\te\x00")
    assert out.getvalue().count("\n") == 1
    assert "path /operations/a\\nb\\u2028c\\x85d\\te\\x00" in out.getvalue()


def test_a_traceback_is_marked_line_by_line(restore_logging: None) -> None:
    out = io.StringIO()
    logs.configure("INFO", out, form="text")
    try:
        raise ValueError(f"bad id x\n{FORGED}")
    except ValueError:
        logging.getLogger("operations.test").exception("failed")
    first, *rest = out.getvalue().rstrip("\n").split("\n")
    assert first.endswith("failed")
    assert rest[0] == "  | Traceback (most recent call last):"
    assert all(line.startswith("  | ") for line in rest)
    assert rest[-2:] == ["  | ValueError: bad id x", f"  | {FORGED}"]


def test_auto_is_json_off_a_terminal(restore_logging: None) -> None:
    out = io.StringIO()
    logs.configure("INFO", out)
    logging.getLogger("operations.test").info("a\nb")
    assert json.loads(out.getvalue())["message"] == "a\nb"
