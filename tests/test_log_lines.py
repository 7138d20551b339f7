"""One event, one line: text from outside cannot forge a log line, through ``operations serve``
with readable lines (OPERATIONS_LOG_FORMAT=text) as with JSON lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import aio_pika
import pytest

from operations import logs
from operations.settings import Settings
from tests.support import Publisher, eventually, serve_process

FORGED = "2026-12-07 12:00:00,000 CRITICAL operations.api: forged"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


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
