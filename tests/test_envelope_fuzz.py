"""Fuzzing ``operations.envelope.parse``: whatever a broker may deliver, parsing either returns an
envelope within the documented limits or raises :class:`EnvelopeError` naming a field, and a
well-formed message as a .NET (Convey) publisher sends it reads cleanly with the contract's
state."""

from __future__ import annotations

import datetime as dt
import json
import string
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, event, given, settings

from operations.amqp.catalogue import Catalogue
from operations.auth.identity import MAX_ID_LENGTH
from operations.envelope import MAX_TEXT_LENGTH, Envelope
from operations.errors import EnvelopeError
from operations.settings import DEFAULT_MESSAGES_FILE
from operations.states import MessageKind, State

PACCO = Catalogue.load(DEFAULT_MESSAGES_FILE)
SUBSCRIPTIONS = sorted(PACCO, key=lambda s: (s.exchange, s.message))
MESSAGES = sorted({s.message for s in SUBSCRIPTIONS})
LIMIT = 262_144
MAX_PROBLEM_LENGTH = 300  # problems name a field and a type, never echo the value

FUZZ = settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)


@dataclass(frozen=True)
class Delivery:
    """A delivered message shaped like aio-pika's IncomingMessage (the ``Delivered`` protocol)."""

    exchange: str | None
    routing_key: str | None
    body: bytes
    headers: Mapping[str, Any]
    correlation_id: str | None
    message_id: str | None
    timestamp: dt.datetime | None
    content_type: str | None = None


# --- building blocks -----------------------------------------------------------------------------


def letter_cases(word: str) -> st.SearchStrategy[str]:
    """``word`` in any mix of upper and lower case."""
    flips = st.lists(st.booleans(), min_size=len(word), max_size=len(word))
    return flips.map(
        lambda up: "".join(c.upper() if u else c for c, u in zip(word, up, strict=True))
    )


def camel_or_pascal(key: str) -> st.SearchStrategy[str]:
    return st.sampled_from((key, key[:1].upper() + key[1:], key.upper(), key.lower()))


# Any JSON value, including ones orjson refuses (NaN, Infinity, integers beyond 64 bits).
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.uuids().map(str),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)

# Every type pamqp may deliver in a header table.
amqp_scalars: st.SearchStrategy[Any] = (
    st.text(max_size=40)
    | st.binary(max_size=40)
    | st.binary(max_size=40).map(bytearray)
    | st.integers()
    | st.floats()
    | st.booleans()
    | st.none()
    | st.datetimes()
    | st.datetimes(timezones=st.just(dt.UTC))
    | st.decimals()
)
amqp_values: st.SearchStrategy[Any] = st.recursive(
    amqp_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)

# Ids of any text: control characters, whitespace, GUIDs in every spelling, very long ones.
long_texts = st.builds(
    lambda unit, count: (unit * count)[: count + 1],
    st.text(min_size=1, max_size=3),
    st.integers(MAX_ID_LENGTH - 5, 5 * MAX_TEXT_LENGTH),
)
guids = st.uuids().flatmap(
    lambda value: st.sampled_from(
        (value.hex, str(value), value.hex.upper(), f"{{{value}}}", f" {value} ")
    )
)
id_texts = (
    st.text(max_size=60)
    | st.text(alphabet=st.characters(max_codepoint=0x20), max_size=10)
    | guids
    | long_texts
)
optional_ids = st.none() | id_texts

# Values for the text fields (user id, name, code, reason): right and wrong types, any length.
field_values: st.SearchStrategy[Any] = (
    id_texts
    | st.binary(max_size=40)
    | st.integers()
    | st.floats()
    | st.booleans()
    | st.none()
    | st.lists(st.text(max_size=5), max_size=3)
    | st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2)
)

user_objects = st.fixed_dictionaries(
    {"id": st.none() | id_texts | st.binary(max_size=40)}, optional={"role": field_values}
).flatmap(
    lambda user: camel_or_pascal("id").map(
        lambda key: {key if name == "id" else name: value for name, value in user.items()}
    )
)
users: st.SearchStrategy[Any] = (
    user_objects
    | st.dictionaries(
        st.sampled_from(("id", "isAuthenticated", "role", "claims")).flatmap(camel_or_pascal)
        | st.text(max_size=8),
        field_values,
        max_size=5,
    )
    | field_values
)

context_documents: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
    st.sampled_from(
        ("correlationId", "name", "resourceId", "traceId", "connectionId", "createdAt")
    ).flatmap(camel_or_pascal)
    | st.text(max_size=10),
    field_values | json_values,
    max_size=6,
).flatmap(
    lambda document: st.fixed_dictionaries(
        {}, optional={"user": users, "User": users, "USER": users}
    ).map(lambda user: {**document, **user})
)


def as_json(value: Any) -> str:
    """JSON text of anything hypothesis built (datetimes, bytes, decimals become strings)."""
    return json.dumps(value, default=repr)


def encodings(text: str) -> st.SearchStrategy[Any]:
    return st.sampled_from((text, text.encode(), bytearray(text.encode())))


plausible_contexts: st.SearchStrategy[dict[str, Any]] = st.builds(
    lambda user_key, user, name_key, name: {user_key: user, name_key: name},
    camel_or_pascal("user"),
    user_objects,
    camel_or_pascal("name"),
    field_values,
)

message_contexts: st.SearchStrategy[Any] = (
    plausible_contexts.map(as_json).flatmap(encodings)  # a user and a name, of any types
    | context_documents.map(as_json).flatmap(encodings)  # valid JSON objects, str or bytes
    | json_values.map(as_json).flatmap(encodings)  # valid JSON of any shape
    | st.text(max_size=60).flatmap(encodings)  # mostly invalid JSON
    | st.binary(max_size=60)  # often not UTF-8
    | context_documents  # an AMQP table instead of JSON text
    | plausible_contexts
    | amqp_values  # any other type
    | st.builds(  # a huge but valid document
        lambda size: as_json({"user": {"id": "u"}, "name": "x" * size}).encode(),
        st.integers(1_000, LIMIT + 1_000),
    )
)

saga_headers: st.SearchStrategy[Any] = (
    st.sampled_from(("pending", "completed", "rejected"))
    .flatmap(letter_cases)
    .map(lambda text: f" {text}\t")
    .flatmap(encodings)
    | st.sampled_from(("pending", "completed", "rejected")).flatmap(letter_cases).flatmap(encodings)
    | st.text(max_size=12).flatmap(encodings)
    | amqp_values
)


@st.composite
def headers(draw: st.DrawFn) -> dict[str, Any]:
    table: dict[str, Any] = draw(st.dictionaries(st.text(max_size=12), amqp_values, max_size=4))
    for wanted, values in (("message_context", message_contexts), ("saga", saga_headers)):
        for key in draw(st.lists(letter_cases(wanted), max_size=2)):
            table[key] = draw(values)
    return table


body_objects: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
    st.sampled_from(("code", "reason", "orderId", "id")).flatmap(camel_or_pascal)
    | st.text(max_size=10),
    field_values | json_values,
    max_size=6,
)

bodies: st.SearchStrategy[bytes] = (
    st.binary(max_size=200)
    | body_objects.map(lambda document: as_json(document).encode())
    | json_values.map(lambda value: as_json(value).encode())
    | st.builds(  # huge, past the limit or close to it
        lambda size: b'{"code":"' + b"c" * size + b'","reason":"r"}',
        st.integers(LIMIT - 100, LIMIT + 100),
    )
    | st.builds(lambda depth: b"[" * depth + b"]" * depth, st.integers(1, 5_000))  # deep
    | st.builds(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth, st.integers(1, 5_000))
)

deliveries = st.builds(
    Delivery,
    exchange=st.none() | st.sampled_from(PACCO.exchanges) | st.text(max_size=30),
    routing_key=st.integers(0, 5).flatmap(  # mostly known, so that the rest gets read
        lambda pick: st.text(max_size=40) if pick == 0 else st.sampled_from([*MESSAGES, None])
    ),
    body=bodies,
    headers=headers(),
    correlation_id=optional_ids,
    message_id=optional_ids,
    timestamp=st.none() | st.datetimes() | st.datetimes(timezones=st.just(dt.UTC)),
)


def saga_values(delivered: Delivery) -> set[State]:
    """The states any header named ``Saga`` in some letter case could mean."""
    found = set()
    for key, value in delivered.headers.items():
        if key.lower() != "saga":
            continue
        if isinstance(value, bytes | bytearray):
            try:
                value = bytes(value).decode()
            except UnicodeDecodeError:
                continue
        if isinstance(value, str):
            state = State.from_saga_header(value)
            if state is not None:
                found.add(state)
    return found


def check_limits(envelope: Envelope, delivered: Delivery) -> None:
    assert isinstance(envelope.state, State)
    assert isinstance(envelope.kind, MessageKind)
    assert envelope.message == delivered.routing_key
    assert envelope.exchange == (delivered.exchange or "")
    assert isinstance(envelope.name, str) and envelope.name.strip()
    assert len(envelope.name) <= MAX_TEXT_LENGTH
    for problem in envelope.problems:
        assert isinstance(problem, str) and problem.strip()
        assert len(problem) <= MAX_PROBLEM_LENGTH, problem
    for identifier in (envelope.user_id, envelope.operation_id, envelope.message_id):
        if identifier is not None:
            assert isinstance(identifier, str) and identifier
            assert len(identifier) <= MAX_ID_LENGTH
    if envelope.user_id is not None:
        assert envelope.user_id == envelope.user_id.strip()
    if envelope.operation_id is not None:
        assert envelope.operation_id.isprintable() and envelope.operation_id.strip()
    for text in (envelope.code, envelope.reason):
        if text is not None:
            assert isinstance(text, str) and text.strip()
            assert len(text) <= MAX_TEXT_LENGTH
    if envelope.state is not State.REJECTED:
        assert (envelope.code, envelope.reason) == (None, None)
    if envelope.state is not envelope.kind.default_state:
        assert envelope.state in saga_values(delivered)  # only a valid Saga header overrides
    assert envelope.sent_at == delivered.timestamp


# --- properties ----------------------------------------------------------------------------------


@pytest.mark.slow
@FUZZ
@given(delivered=deliveries, max_bytes=st.sampled_from((64, 4_096, LIMIT, LIMIT)))
def test_parse_returns_an_envelope_within_limits_or_raises_envelope_error(
    delivered: Delivery, max_bytes: int
) -> None:
    try:
        envelope = PACCO.read(delivered, max_bytes)
    except EnvelopeError as error:
        event(f"EnvelopeError on {error.field}")
        assert isinstance(error.reason, str) and error.reason.strip()
        assert isinstance(error.field, str) and error.field.strip()
        assert error.field in {"routing_key", "correlation_id", "message_id"}
        return
    event("envelope with problems" if envelope.problems else "clean envelope")
    event(f"state {envelope.state.value}, user id {'set' if envelope.user_id else 'absent'}")
    check_limits(envelope, delivered)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    headers=st.dictionaries(st.text(max_size=12), amqp_values, max_size=6),
    context=message_contexts,
    saga=saga_headers,
    body=bodies,
)
def test_any_header_and_body_on_a_known_message_gives_an_envelope(
    headers: dict[str, Any], context: Any, saga: Any, body: bytes
) -> None:
    """With a known routing key and sound ids, nothing in the headers or the body can make the
    message unreadable: it is applied with what it has, and its problems say what was not read."""
    delivered = Delivery(
        exchange="orders",
        routing_key="create_order_rejected",
        body=body,
        headers={**headers, "message_context": context, "Saga": saga},
        correlation_id=uuid.uuid4().hex,
        message_id=str(uuid.uuid4()),
        timestamp=None,
    )
    envelope = PACCO.read(delivered, 4_096)
    event("envelope with problems" if envelope.problems else "clean envelope")
    event(f"state {envelope.state.value}, user id {'set' if envelope.user_id else 'absent'}")
    check_limits(envelope, delivered)


# --- a well-formed .NET message ------------------------------------------------------------------


@dataclass(frozen=True)
class DotnetMessage:
    delivery: Delivery
    state: State
    user_id: str
    name: str
    code: str | None
    reason: str | None
    operation_id: str


words = st.text(alphabet=string.ascii_letters + string.digits + "_ -.", min_size=1, max_size=40)
names = words.filter(lambda text: text.strip() != "")


@st.composite
def dotnet_messages(draw: st.DrawFn) -> DotnetMessage:
    subscription = draw(st.sampled_from(SUBSCRIPTIONS))
    user = draw(st.uuids())
    operation = draw(st.uuids())
    user_spelling = draw(st.sampled_from((user.hex, str(user), user.hex.upper(), f"{{{user}}}")))
    name = draw(st.none() | names)
    pascal = draw(st.booleans())

    def key(camel: str) -> str:
        return camel[:1].upper() + camel[1:] if pascal else camel

    context = {
        key("correlationId"): operation.hex,
        key("user"): {
            key("id"): user_spelling,
            key("isAuthenticated"): True,
            key("role"): draw(st.sampled_from(("user", "admin"))),
            key("claims"): draw(st.dictionaries(words, words, max_size=2)),
        },
        key("name"): name,
        key("resourceId"): draw(st.none() | st.uuids().map(lambda value: value.hex)),
        key("traceId"): draw(words),
        key("connectionId"): draw(st.none() | words),
        key("createdAt"): draw(st.integers(0, 2**53)),
    }
    saga = draw(st.none() | st.sampled_from(State).flatmap(lambda s: letter_cases(s.value)))
    table: dict[str, Any] = {"message_context": draw(encodings(as_json(context)))}
    if saga is not None:
        table["Saga"] = saga.encode()  # a .NET publisher sends the header as bytes
    table.update(draw(st.dictionaries(st.sampled_from(("traceparent", "x-retry")), words)))

    state = State(saga.lower()) if saga is not None else subscription.kind.default_state
    document: dict[str, Any] = {key("orderId"): operation.hex}
    code = reason = None
    if subscription.kind is MessageKind.REJECTED_EVENT:
        code, reason = draw(names), draw(names)
        document[key("code")], document[key("reason")] = code, reason
    if state is not State.REJECTED:
        code = reason = None

    delivery = Delivery(
        exchange=subscription.exchange,
        routing_key=subscription.message,
        body=as_json(document).encode(),
        headers=table,
        correlation_id=operation.hex,
        message_id=str(draw(st.uuids())),
        timestamp=draw(st.none() | st.datetimes(timezones=st.just(dt.UTC))),
    )
    return DotnetMessage(
        delivery=delivery,
        state=state,
        user_id=str(user),
        name=name.strip() if name is not None else subscription.message,
        code=code.strip() if code is not None else None,
        reason=reason.strip() if reason is not None else None,
        operation_id=str(operation),
    )


@settings(max_examples=300, deadline=None)
@given(message=dotnet_messages())
def test_a_well_formed_dotnet_message_reads_cleanly(message: DotnetMessage) -> None:
    envelope = PACCO.read(message.delivery, LIMIT)
    assert envelope.problems == ()
    assert envelope.state is message.state  # a valid Saga header wins, else the kind decides
    assert envelope.user_id == message.user_id
    assert envelope.name == message.name
    assert (envelope.code, envelope.reason) == (message.code, message.reason)
    assert envelope.operation_id == message.operation_id
    assert envelope.message_id == message.delivery.message_id
    assert envelope.sent_at == message.delivery.timestamp
    check_limits(envelope, message.delivery)


def test_fixed_examples_of_both_outcomes() -> None:
    """The two outcomes the fuzz property accepts, on fixed inputs: an envelope, and an
    EnvelopeError naming its field (a control character in the operation id)."""
    both = Delivery("orders", "create_order", b"{}", {}, "op", None, None)
    assert PACCO.read(both, LIMIT).state is State.PENDING
    bad = Delivery("orders", "create_order", b"{}", {}, "op\x00", None, None)
    try:
        PACCO.read(bad, LIMIT)
    except EnvelopeError as error:
        assert error.field == "correlation_id"
    else:  # pragma: no cover
        raise AssertionError("a control character in correlation_id must be refused")
