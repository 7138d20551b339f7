"""One reader of the copies the service publishes: the service's ``x-operations-*`` headers are
named in ``operations/amqp/copies.py`` alone, and a copy sent back for another attempt is read
there alone, for the tracking path and the saga intake alike (the dead-letter store reads a dead
letter's headers, which is another message)."""

from __future__ import annotations

import ast
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from operations.amqp.copies import (
    ATTEMPTS_HEADER,
    EXCHANGE_HEADER,
    FAILURES_HEADER,
    ROUTING_KEY_HEADER,
    as_first_sent,
    attempts_of,
    copy_headers,
    failures_of,
)
from operations.amqp.settlements import DeadLetter, Retry

ROOT = Path(__file__).resolve().parent.parent
COPIES = Path("operations/amqp/copies.py")
# What a returned copy carries for its reader; and who may name those headers besides.
RETURN_HEADERS = {"EXCHANGE_HEADER", "ROUTING_KEY_HEADER", "ATTEMPTS_HEADER", "FAILURES_HEADER"}
DEAD_LETTER_READER = Path("operations/deadletters/letters.py")


def _modules() -> list[Path]:
    return sorted(path.relative_to(ROOT) for path in (ROOT / "operations").rglob("*.py"))


def _tree(path: Path) -> ast.AST:
    return ast.parse((ROOT / path).read_text(encoding="utf-8"))


def test_the_service_headers_are_named_in_one_module() -> None:
    named = {
        path
        for path in _modules()
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith("x-operations-")
        and len(node.value) > len("x-operations-")
    }
    assert named == {COPIES}


def test_only_the_reader_reads_a_copy_sent_back() -> None:
    users = {
        (path, node.id)
        for path in _modules()
        if path != COPIES
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.Name) and node.id in RETURN_HEADERS
    }
    allowed = {(DEAD_LETTER_READER, "EXCHANGE_HEADER"), (DEAD_LETTER_READER, "ROUTING_KEY_HEADER")}
    assert sorted(users - allowed) == []


@dataclass
class Message:
    exchange: str | None
    routing_key: str | None
    headers: Mapping[str, Any] = field(default_factory=dict)
    body: bytes = b"{}"
    correlation_id: str | None = "op-1"
    message_id: str | None = "m-1"
    timestamp: dt.datetime | None = None
    content_type: str | None = None


def test_a_copy_sent_back_reads_as_first_published_with_its_counts() -> None:
    first = Message("orders", "order_created", {"x-delivery-count": 2, "Saga": "Completed"})
    headers = copy_headers(first, Retry("boom", 1.0, 3, 2))
    assert headers[EXCHANGE_HEADER] == "orders" and headers[ROUTING_KEY_HEADER] == "order_created"
    assert (headers[ATTEMPTS_HEADER], headers[FAILURES_HEADER]) == (3, 2)
    assert "x-delivery-count" not in headers and headers["Saga"] == "Completed"

    back = Message("", "operations.retry", headers)
    read = as_first_sent(back)
    assert (read.exchange, read.routing_key) == ("orders", "order_created")
    assert (read.body, read.correlation_id, read.message_id) == (b"{}", "op-1", "m-1")
    assert (attempts_of(back), failures_of(back)) == (3, 2)
    # Sent back again, it keeps where it was first published.
    again = copy_headers(back, DeadLetter("failed 3 times"))
    assert (again[EXCHANGE_HEADER], again[ROUTING_KEY_HEADER]) == ("orders", "order_created")


def test_a_published_message_is_read_as_it_is_and_has_failed_no_time() -> None:
    published = Message("orders", "order_created", {FAILURES_HEADER: 4, EXCHANGE_HEADER: "x"})
    assert as_first_sent(published) is published
    assert failures_of(published) == 0
    for value in (True, -1, "2", 1.5):
        assert failures_of(Message("", "q", {FAILURES_HEADER: value})) == 0
