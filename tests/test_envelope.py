"""Unit tests for operations.envelope.parse: from a delivered message to an Envelope."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from operations.amqp.catalogue import Catalogue
from operations.auth.identity import MAX_ID_LENGTH
from operations.envelope import MAX_TEXT_LENGTH, Envelope
from operations.errors import EnvelopeError, OperationsError
from operations.settings import DEFAULT_MESSAGES_FILE
from operations.states import MessageKind, State

PACCO = Catalogue.load(DEFAULT_MESSAGES_FILE)
LIMIT = 262_144
USER = uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e")
USER_D = str(USER)  # the canonical spelling: lower case, hyphenated
OPERATION = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


@dataclass(frozen=True)
class Delivery:
    """A delivered message shaped like aio-pika's IncomingMessage (the ``Delivered`` protocol)."""

    exchange: str | None = "orders"
    routing_key: str | None = "create_order"
    body: bytes = b"{}"
    headers: Mapping[str, Any] = field(default_factory=dict)
    correlation_id: str | None = OPERATION
    message_id: str | None = "message-1"
    timestamp: dt.datetime | None = None
    content_type: str | None = None


def read(delivery: Delivery, max_bytes: int = LIMIT) -> Envelope:
    return PACCO.read(delivery, max_bytes)


def dotnet_context(user: str | None = USER.hex, name: str | None = None) -> bytearray:
    """A CorrelationContext as a .NET publisher sends it: PascalCase JSON in a byte array."""
    document: dict[str, Any] = {"CorrelationId": uuid.uuid4().hex, "Name": name, "TraceId": "t-1"}
    if user is not None:
        document["User"] = {"Id": user, "IsAuthenticated": True, "Role": "user", "Claims": {}}
    return bytearray(orjson.dumps(document))


def python_context(user: str | None = USER_D, name: str | None = None) -> str:
    """A CorrelationContext as a Python publisher sends it: camelCase JSON text."""
    document: dict[str, Any] = {"correlationId": uuid.uuid4().hex, "name": name}
    if user is not None:
        document["user"] = {"id": user, "isAuthenticated": True, "role": "user", "claims": {}}
    return orjson.dumps(document).decode()


# --- routing and kinds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exchange", "message", "kind", "state"),
    [
        ("orders", "create_order", MessageKind.COMMAND, State.PENDING),
        ("orders", "order_created", MessageKind.EVENT, State.COMPLETED),
        ("orders", "create_order_rejected", MessageKind.REJECTED_EVENT, State.REJECTED),
        ("availability", "reserve_resource", MessageKind.COMMAND, State.PENDING),
        ("vehicles", "add_vehicle_rejected", MessageKind.REJECTED_EVENT, State.REJECTED),
    ],
)
def test_kind_decides_the_state_without_a_saga_header(
    exchange: str, message: str, kind: MessageKind, state: State
) -> None:
    envelope = read(Delivery(exchange=exchange, routing_key=message, body=b'{"code":"c"}'))
    assert envelope.exchange == exchange
    assert envelope.message == message
    assert envelope.kind is kind
    assert envelope.state is state


def test_a_minimal_command_reads_cleanly() -> None:
    sent = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    envelope = read(Delivery(timestamp=sent, message_id="m-42"))
    assert envelope == Envelope(
        message="create_order",
        exchange="orders",
        kind=MessageKind.COMMAND,
        state=State.PENDING,
        operation_id=OPERATION,
        message_id="m-42",
        user_id=None,
        name="create_order",
        code=None,
        reason=None,
        sent_at=sent,
        problems=(),
    )


def test_unknown_routing_key_raises_with_field_routing_key() -> None:
    with pytest.raises(EnvelopeError) as caught:
        read(Delivery(routing_key="no_such_message"))
    assert caught.value.field == "routing_key"
    assert caught.value.code == "invalid_message"
    assert isinstance(caught.value, OperationsError)


def test_missing_routing_key_raises_with_field_routing_key() -> None:
    with pytest.raises(EnvelopeError) as caught:
        read(Delivery(routing_key=None))
    assert caught.value.field == "routing_key"


def test_known_message_on_another_exchange_is_found_by_name() -> None:
    envelope = read(Delivery(exchange="somewhere-else", routing_key="order_created"))
    assert envelope.kind is MessageKind.EVENT
    assert envelope.state is State.COMPLETED
    assert envelope.exchange == "somewhere-else"


# --- the Saga header -----------------------------------------------------------------------------


SAGA_VALUES = ["pending", "Pending", "PENDING", "completed", "Completed", "rejected", "REJECTED"]


@pytest.mark.parametrize("value", SAGA_VALUES)
@pytest.mark.parametrize("as_type", [str, bytes, bytearray])
@pytest.mark.parametrize("message", ["create_order", "order_created", "create_order_rejected"])
def test_valid_saga_header_wins_over_the_kind(value: str, as_type: type, message: str) -> None:
    raw: Any = value if as_type is str else as_type(value.encode())
    envelope = read(
        Delivery(routing_key=message, headers={"Saga": raw}, body=b'{"code":"c","reason":"r"}')
    )
    assert envelope.state is State(value.lower())
    assert envelope.problems == ()


@pytest.mark.parametrize("key", ["Saga", "saga", "SAGA", "sAgA"])
def test_saga_header_name_in_any_case(key: str) -> None:
    envelope = read(Delivery(routing_key="order_created", headers={key: "pending"}))
    assert envelope.state is State.PENDING


@pytest.mark.parametrize(
    "value", ["", "unknown", "done", "failed", "pend", b"nope", bytearray(b"x")]
)
@pytest.mark.parametrize(
    ("message", "default"),
    [
        ("create_order", State.PENDING),
        ("order_created", State.COMPLETED),
        ("create_order_rejected", State.REJECTED),
    ],
)
def test_other_saga_values_count_as_absent(
    value: str | bytes | bytearray, message: str, default: State
) -> None:
    envelope = read(Delivery(routing_key=message, headers={"Saga": value}, body=b'{"code":"c"}'))
    assert envelope.state is default
    assert not any("Saga" in problem for problem in envelope.problems)


@pytest.mark.parametrize("value", [1, 0, 3.5, ["pending"], {"state": "pending"}, True])
def test_saga_of_a_wrong_type_is_a_problem_and_counts_as_absent(value: object) -> None:
    envelope = read(Delivery(routing_key="order_created", headers={"Saga": value}))
    assert envelope.state is State.COMPLETED
    saga_problems = [p for p in envelope.problems if p.startswith("headers.Saga")]
    assert len(saga_problems) == 1
    assert type(value).__name__ in saga_problems[0]


def test_saga_bytes_that_are_not_utf8_are_a_problem_and_count_as_absent() -> None:
    envelope = read(Delivery(routing_key="create_order", headers={"Saga": b"\xff\xfe"}))
    assert envelope.state is State.PENDING
    assert any(p.startswith("headers.Saga") for p in envelope.problems)


# --- message_context -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "context",
    [
        pytest.param(python_context(user=USER_D, name="Create order"), id="camel-str"),
        pytest.param(python_context(user=USER_D, name="Create order").encode(), id="camel-bytes"),
        pytest.param(
            bytearray(python_context(user=USER_D, name="Create order").encode()), id="camel-ba"
        ),
        pytest.param(dotnet_context(user=USER.hex, name="Create order"), id="pascal-bytearray"),
        pytest.param(bytes(dotnet_context(user=USER.hex, name="Create order")), id="pascal-bytes"),
        pytest.param(dotnet_context(user=USER.hex, name="Create order").decode(), id="pascal-str"),
    ],
)
def test_message_context_in_every_encoding_and_key_style(context: str | bytes) -> None:
    envelope = read(Delivery(headers={"message_context": context}))
    assert envelope.user_id == USER_D
    assert envelope.name == "Create order"
    assert envelope.problems == ()


def test_message_context_header_name_in_any_case() -> None:
    envelope = read(Delivery(headers={"Message_Context": python_context(name="n")}))
    assert envelope.user_id == USER_D
    assert envelope.name == "n"


def test_message_context_as_an_amqp_table() -> None:
    table = {"Name": "From a table", "User": {"Id": USER.hex.upper()}}
    envelope = read(Delivery(headers={"message_context": table}))
    assert envelope.user_id == USER_D
    assert envelope.name == "From a table"


@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param(USER.hex, id="N"),
        pytest.param(str(USER), id="D"),
        pytest.param("{" + str(USER) + "}", id="B"),
        pytest.param(USER.hex.upper(), id="N-upper"),
        pytest.param(str(USER).upper(), id="D-upper"),
        pytest.param("{" + str(USER).upper() + "}", id="B-upper"),
        pytest.param("  " + USER.hex + "  ", id="N-padded"),
    ],
)
def test_user_id_guid_formats_normalise_to_one_spelling(spelling: str) -> None:
    envelope = read(Delivery(headers={"message_context": python_context(user=spelling)}))
    assert envelope.user_id == USER_D


def test_user_id_that_is_not_a_guid_is_kept_trimmed() -> None:
    envelope = read(Delivery(headers={"message_context": python_context(user="  alice  ")}))
    assert envelope.user_id == "alice"


def test_name_absent_falls_back_to_the_message_name() -> None:
    context = orjson.dumps({"user": {"id": USER.hex}})
    envelope = read(Delivery(routing_key="approve_order", headers={"message_context": context}))
    assert envelope.name == "approve_order"
    assert envelope.user_id == USER_D


@pytest.mark.parametrize("name", [None, "", "   "])
def test_null_or_blank_name_falls_back_to_the_message_name(name: str | None) -> None:
    context = orjson.dumps({"name": name})
    envelope = read(Delivery(routing_key="cancel_order", headers={"message_context": context}))
    assert envelope.name == "cancel_order"


def test_no_message_context_gives_no_user_and_the_message_name() -> None:
    envelope = read(Delivery(routing_key="delete_order"))
    assert envelope.user_id is None
    assert envelope.name == "delete_order"
    assert envelope.problems == ()


def test_name_is_trimmed_and_cut_to_the_maximum_length() -> None:
    long_name = "x" * (MAX_TEXT_LENGTH + 10)
    envelope = read(Delivery(headers={"message_context": python_context(name=long_name)}))
    assert envelope.name == "x" * MAX_TEXT_LENGTH
    assert any(p.startswith("message_context.name") for p in envelope.problems)


def test_name_of_a_wrong_type_is_a_problem_and_falls_back() -> None:
    context = orjson.dumps({"name": 42})
    envelope = read(Delivery(headers={"message_context": context}))
    assert envelope.name == "create_order"
    assert any(p.startswith("message_context.name") for p in envelope.problems)


@pytest.mark.parametrize(
    ("context", "problem_start"),
    [
        pytest.param("this is not json", "headers.message_context", id="not-json"),
        pytest.param(b"{broken", "headers.message_context", id="broken-bytes"),
        pytest.param("[1, 2, 3]", "headers.message_context", id="json-array"),
        pytest.param('"just a string"', "headers.message_context", id="json-string"),
        pytest.param(b"\xff\xfe{}", "headers.message_context", id="not-utf8"),
        pytest.param(12345, "headers.message_context", id="an-int"),
        pytest.param('{"user": "alice"}', "message_context.user", id="user-a-string"),
        pytest.param('{"user": [1]}', "message_context.user", id="user-a-list"),
        pytest.param('{"user": {"id": 42}}', "message_context.user.id", id="user-id-a-number"),
        pytest.param('{"User": {"Id": {"x": 1}}}', "message_context.user.id", id="user-id-obj"),
    ],
)
def test_malformed_message_context_is_a_problem_but_still_an_envelope(
    context: object, problem_start: str
) -> None:
    envelope = read(Delivery(routing_key="order_created", headers={"message_context": context}))
    assert envelope.state is State.COMPLETED
    assert envelope.operation_id == OPERATION
    assert envelope.user_id is None
    assert envelope.name == "order_created"
    assert len(envelope.problems) == 1
    assert envelope.problems[0].startswith(problem_start)


def test_malformed_context_does_not_hide_a_valid_saga_header() -> None:
    envelope = read(
        Delivery(routing_key="order_created", headers={"message_context": "[]", "Saga": "pending"})
    )
    assert envelope.state is State.PENDING
    assert len(envelope.problems) == 1


@pytest.mark.parametrize(
    "user", ["u" * (MAX_ID_LENGTH + 1), "alice\n2026 forged", "bob\x1b[2J", "eve\u202e"]
)
def test_a_user_id_no_token_could_name_is_a_problem(user: str) -> None:
    envelope = read(Delivery(headers={"message_context": python_context(user=user)}))
    assert envelope.user_id is None
    assert any(p.startswith("message_context.user.id") for p in envelope.problems)


@pytest.mark.parametrize("user", [None, {}, {"id": None}, {"id": ""}, {"id": "   "}])
def test_absent_or_empty_user_gives_no_user_and_no_problem(user: object) -> None:
    context = orjson.dumps({"name": "n", "user": user})
    envelope = read(Delivery(headers={"message_context": context}))
    assert envelope.user_id is None
    assert envelope.problems == ()


# --- correlation id and message id ---------------------------------------------------------------


@pytest.mark.parametrize("correlation_id", [None, "", "   "])
def test_missing_correlation_id_gives_no_operation_id(correlation_id: str | None) -> None:
    envelope = read(Delivery(correlation_id=correlation_id))
    assert envelope.operation_id is None
    assert envelope.state is State.PENDING


@pytest.mark.parametrize(
    "spelling",
    [OPERATION, OPERATION.upper(), OPERATION.replace("-", ""), "{" + OPERATION + "}"],
)
def test_correlation_id_guid_is_normalised(spelling: str) -> None:
    assert read(Delivery(correlation_id=spelling)).operation_id == OPERATION


def test_correlation_id_that_is_not_a_guid_is_kept() -> None:
    assert read(Delivery(correlation_id="order-17")).operation_id == "order-17"


def test_correlation_id_at_the_maximum_length_is_accepted() -> None:
    at_limit = "c" * MAX_ID_LENGTH
    assert read(Delivery(correlation_id=at_limit)).operation_id == at_limit


@pytest.mark.parametrize(
    "correlation_id",
    [
        pytest.param("c" * (MAX_ID_LENGTH + 1), id="too-long"),
        pytest.param("abc\x00def", id="nul"),
        pytest.param("abc\ndef", id="newline"),
        pytest.param("abc\x1b[31m", id="escape"),
        pytest.param("abc\u200bdef", id="zero-width"),
    ],
)
def test_bad_correlation_id_raises_with_field_correlation_id(correlation_id: str) -> None:
    with pytest.raises(EnvelopeError) as caught:
        read(Delivery(correlation_id=correlation_id))
    assert caught.value.field == "correlation_id"
    assert str(caught.value).startswith("correlation_id:")


@pytest.mark.parametrize("message_id", [None, ""])
def test_missing_message_id_is_none(message_id: str | None) -> None:
    assert read(Delivery(message_id=message_id)).message_id is None


def test_over_long_message_id_raises_with_field_message_id() -> None:
    with pytest.raises(EnvelopeError) as caught:
        read(Delivery(message_id="m" * (MAX_ID_LENGTH + 1)))
    assert caught.value.field == "message_id"


# --- rejected events and bodies ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"code": "no_parcels", "reason": "Order has no parcels."}, id="camel"),
        pytest.param({"Code": "no_parcels", "Reason": "Order has no parcels."}, id="pascal"),
        pytest.param(
            {"id": OPERATION, "CODE": " no_parcels ", "REASON": "Order has no parcels.  "},
            id="upper-padded",
        ),
    ],
)
def test_rejected_event_reads_code_and_reason_from_the_body(body: dict[str, str]) -> None:
    envelope = read(Delivery(routing_key="approve_order_rejected", body=orjson.dumps(body)))
    assert envelope.state is State.REJECTED
    assert envelope.code == "no_parcels"
    assert envelope.reason == "Order has no parcels."
    assert envelope.problems == ()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not json at all", id="not-json"),
        pytest.param(b"", id="empty"),
        pytest.param(b"[1, 2]", id="array"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
    ],
)
def test_rejected_event_with_an_unreadable_body_has_a_problem_and_no_code(body: bytes) -> None:
    envelope = read(Delivery(routing_key="create_order_rejected", body=body))
    assert envelope.state is State.REJECTED
    assert envelope.code is None
    assert envelope.reason is None
    assert len(envelope.problems) == 1
    assert envelope.problems[0].startswith("body")


def test_rejected_event_with_code_of_a_wrong_type_is_a_problem() -> None:
    body = orjson.dumps({"code": 17, "reason": "kept"})
    envelope = read(Delivery(routing_key="create_order_rejected", body=body))
    assert envelope.code is None
    assert envelope.reason == "kept"
    assert any(p.startswith("body.code") for p in envelope.problems)


def test_command_with_saga_rejected_reads_reason_from_its_body() -> None:
    body = orjson.dumps({"Reason": "vehicle unavailable", "Code": "vehicle_unavailable"})
    envelope = read(
        Delivery(routing_key="create_order", headers={"Saga": bytearray(b"Rejected")}, body=body)
    )
    assert envelope.kind is MessageKind.COMMAND
    assert envelope.state is State.REJECTED
    assert envelope.reason == "vehicle unavailable"
    assert envelope.code == "vehicle_unavailable"


def test_rejected_event_with_saga_pending_does_not_read_its_body() -> None:
    body = orjson.dumps({"code": "c", "reason": "r"})
    envelope = read(
        Delivery(routing_key="create_order_rejected", headers={"Saga": "pending"}, body=body)
    )
    assert envelope.state is State.PENDING
    assert envelope.code is None
    assert envelope.reason is None


def test_a_malformed_body_of_any_message_is_a_problem_but_its_state_stands() -> None:
    envelope = read(Delivery(routing_key="order_created", body=b"definitely not json"))
    assert envelope.state is State.COMPLETED
    assert envelope.code is None
    assert envelope.problems == ("body: not valid JSON",)


# --- size limit ----------------------------------------------------------------------------------


def size_problems(envelope: Envelope, limit: int) -> list[str]:
    return [p for p in envelope.problems if "exceeds the limit" in p and str(limit) in p]


def test_oversized_body_is_a_problem_and_the_body_is_not_read() -> None:
    body = orjson.dumps({"code": "c", "reason": "r" * 500})
    envelope = read(Delivery(routing_key="create_order_rejected", body=body), max_bytes=100)
    assert envelope.state is State.REJECTED
    assert envelope.code is None
    assert envelope.reason is None
    assert len(envelope.problems) == 1
    assert size_problems(envelope, 100) == list(envelope.problems)
    assert str(len(body)) in envelope.problems[0]


def test_oversized_command_body_is_a_problem_even_if_never_read() -> None:
    envelope = read(Delivery(routing_key="create_order", body=b"x" * 101), max_bytes=100)
    assert envelope.state is State.PENDING
    assert len(size_problems(envelope, 100)) == 1


def test_oversized_context_is_a_problem_and_is_not_read() -> None:
    context = python_context(name="big")
    limit = len(context) - 1
    envelope = read(
        Delivery(routing_key="create_order", headers={"message_context": context}, body=b"{}"),
        max_bytes=limit,
    )
    assert envelope.user_id is None
    assert envelope.name == "create_order"
    assert len(size_problems(envelope, limit)) == 1


def test_a_message_exactly_at_the_limit_is_read() -> None:
    body = orjson.dumps({"code": "c", "reason": "r"})
    context = python_context()
    envelope = read(
        Delivery(
            routing_key="create_order_rejected", headers={"message_context": context}, body=body
        ),
        max_bytes=len(body) + len(context.encode()),
    )
    assert envelope.problems == ()
    assert envelope.code == "c"
    assert envelope.reason == "r"
    assert envelope.user_id == USER_D


def test_body_and_context_are_limited_each_on_its_own() -> None:
    """Each part is checked against max_bytes alone, so the owner survives a huge body."""
    context = bytes(dotnet_context())
    body = b'{"code": "c"}'
    limit = max(len(body), len(context))
    envelope = read(
        Delivery(
            routing_key="create_order_rejected", headers={"message_context": context}, body=body
        ),
        max_bytes=limit,
    )
    assert size_problems(envelope, limit) == []
    assert envelope.code == "c"


@pytest.mark.parametrize("as_type", [bytes, bytearray])
def test_oversized_binary_context_is_a_problem(as_type: type) -> None:
    """A .NET publisher's message_context arrives as a bytearray; it counts toward the limit."""
    context = as_type(dotnet_context(name="big"))
    limit = len(context) - 1
    envelope = read(Delivery(headers={"message_context": context}, body=b"{}"), max_bytes=limit)
    assert envelope.user_id is None
    assert envelope.name == "create_order"
    assert len(size_problems(envelope, limit)) == 1


@pytest.mark.parametrize("as_type", [str, bytes, bytearray])
def test_context_size_is_counted_in_utf8_bytes(as_type: type) -> None:
    """The limit is in bytes: a context counts by its UTF-8 length, not by its characters."""
    text = python_context(name="é" * 100)  # 100 characters, 200 bytes of name
    context = text if as_type is str else as_type(text.encode())
    body = b"{}"
    limit = len(body) + len(text)  # body + context fit in characters, not in bytes
    assert len(text.encode()) > limit  # the context alone is over the limit in bytes
    envelope = read(Delivery(headers={"message_context": context}, body=body), max_bytes=limit)
    assert len(size_problems(envelope, limit)) == 1
    assert envelope.user_id is None
