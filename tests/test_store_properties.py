"""Properties of the real Lua apply script (through ``RedisStore.apply``, against the real Redis)
checked against a small pure-Python model of the contract §3 rules.

Any set of messages for a few operations, delivered in any order, any number of times (same message
ids), in batches of any size (the consumer pipelines a batch in one round trip), must end in the
model's record for every operation, give each delivery the model's outcome, and leave exactly the
applied changes in the history and in the change stream.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import hypothesis.strategies as st
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings

from operations.envelope import Envelope
from operations.records import ApplyOutcome, Change, Operation
from operations.states import MessageKind, State
from operations.store.keys import Keys
from operations.store.redis_store import RedisStore

NAMES = ("create_order", "add_parcel_to_order", "order_created", "create_order_rejected")
MESSAGE_IDS = ("m-1", "m-2", "m-3", "m-4")  # a small pool, so distinct messages can share an id
KINDS = {
    State.PENDING: MessageKind.COMMAND,
    State.COMPLETED: MessageKind.EVENT,
    State.REJECTED: MessageKind.REJECTED_EVENT,
}
SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --- the model -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    op: int
    message_id: str | None
    state: State
    name: str
    code: str | None
    reason: str | None
    user: str | None


@dataclass(frozen=True)
class ModelRecord:
    state: State
    name: str
    version: int
    code: str | None
    reason: str | None
    user_id: str | None


@dataclass
class Model:
    records: dict[int, ModelRecord] = field(default_factory=dict)
    seen: dict[int, set[str]] = field(default_factory=dict)

    def apply(self, message: Message) -> tuple[ApplyOutcome, ModelRecord | None]:
        """The outcome of one delivery and, when it applied, the record it made."""
        seen = self.seen.setdefault(message.op, set())
        if message.message_id is not None:
            if message.message_id in seen:
                return ApplyOutcome.DUPLICATE, None
            seen.add(message.message_id)
        current = self.records.get(message.op)
        if current is not None and (
            current.state.is_terminal
            or (message.state is State.PENDING and message.name == current.name)
        ):
            return ApplyOutcome.STALE, None
        terminal = message.state.is_terminal
        record = ModelRecord(
            state=message.state,
            name=message.name,
            version=1 if current is None else current.version + 1,
            code=message.code if terminal else None,
            reason=message.reason if terminal else None,
            user_id=current.user_id if current is not None and current.user_id else message.user,
        )
        self.records[message.op] = record
        return ApplyOutcome.APPLIED, record


def observed(record: Operation) -> ModelRecord:
    return ModelRecord(
        state=record.state,
        name=record.name,
        version=record.version,
        code=record.code,
        reason=record.reason,
        user_id=record.user_id,
    )


# --- scenarios -----------------------------------------------------------------------------------

texts = st.text(min_size=1, max_size=16)  # any code point but surrogates: control chars, quotes...
optional_texts = st.none() | texts


@dataclass(frozen=True)
class Scenario:
    operations: int
    messages: list[Message]
    deliveries: list[int]  # indexes into messages: each at least once, shuffled, some repeated
    batches: list[list[int]]  # the deliveries cut into consecutive batches


def messages(operations: int) -> st.SearchStrategy[Message]:
    return st.builds(
        Message,
        op=st.integers(0, operations - 1),
        message_id=st.none()
        | st.sampled_from(MESSAGE_IDS)
        | st.uuids().map(lambda value: value.hex)
        | texts,
        state=st.sampled_from(State),
        name=st.sampled_from(NAMES) | texts,
        code=optional_texts,
        reason=optional_texts,
        user=st.none() | st.sampled_from(("alice", "bob")) | texts,
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    operations = draw(st.integers(1, 3))
    sent = draw(st.lists(messages(operations), min_size=1, max_size=14))
    again = draw(st.lists(st.integers(0, len(sent) - 1), max_size=10))
    deliveries = draw(st.permutations([*range(len(sent)), *again]))
    sizes = draw(st.lists(st.integers(1, 8), max_size=len(deliveries)))
    batches: list[list[int]] = []
    start = 0
    for size in sizes:
        if start >= len(deliveries):
            break
        batches.append(deliveries[start : start + size])
        start += size
    if start < len(deliveries):
        batches.append(deliveries[start:])
    return Scenario(operations, sent, deliveries, batches)


# --- running a scenario against Redis ------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    operation_ids: list[str]
    changes: list[Change]  # one per delivery, in delivery order
    records: list[Operation | None]  # per operation, read back with store.get
    histories: list[list[dict[str, Any]]]  # per operation
    stream: list[tuple[str, dict[str, str]]]  # XRANGE of the change stream: (entry id, fields)


def envelope(operation_id: str, message: Message) -> Envelope:
    return Envelope(
        message=message.name,
        exchange="orders",
        kind=KINDS[message.state],
        state=message.state,
        operation_id=operation_id,
        message_id=message.message_id,
        user_id=message.user,
        name=message.name,
        code=message.code,
        reason=message.reason,
    )


async def run(redis_url: str, scenario: Scenario) -> Observed:
    prefix = f"p{uuid.uuid4().hex}"
    client = aioredis.Redis.from_url(redis_url)
    store = RedisStore(client, ttl_seconds=600, stream_max_length=100_000, keys=Keys(prefix))
    operation_ids = [uuid.uuid4().hex for _ in range(scenario.operations)]
    try:
        changes: list[Change] = []
        for batch in scenario.batches:
            sent = [scenario.messages[index] for index in batch]
            replies = await store.apply([envelope(operation_ids[m.op], m) for m in sent])
            for reply in replies:
                assert isinstance(reply, Change), reply
                changes.append(reply)
        records = [await store.get(op) for op in operation_ids]
        histories = [await store.history(op) for op in operation_ids]
        entries: Any = await client.xrange(store.keys.changes(0))
        stream = [
            (entry_id.decode(), {key.decode(): value.decode() for key, value in fields.items()})
            for entry_id, fields in entries
        ]
        return Observed(operation_ids, changes, records, histories, stream)
    finally:
        stale_keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
        if stale_keys:
            await client.unlink(*stale_keys)
        await client.aclose()


@dataclass(frozen=True)
class Expected:
    outcomes: list[tuple[ApplyOutcome, ModelRecord | None]]  # per delivery
    applied: list[tuple[int, Message, ModelRecord]]  # (delivery position, message, record) in order
    records: dict[int, ModelRecord]


def expect(scenario: Scenario) -> Expected:
    model = Model()
    outcomes: list[tuple[ApplyOutcome, ModelRecord | None]] = []
    applied: list[tuple[int, Message, ModelRecord]] = []
    for position, index in enumerate(scenario.deliveries):
        message = scenario.messages[index]
        outcome, record = model.apply(message)
        outcomes.append((outcome, record))
        if record is not None:
            applied.append((position, message, record))
    return Expected(outcomes, applied, model.records)


def history_row(entry: dict[str, Any]) -> tuple[Any, ...]:
    fields = ("version", "state", "name", "message", "messageId", "code", "reason")
    return tuple(entry[name] for name in fields)


def model_history_row(message: Message, record: ModelRecord) -> tuple[Any, ...]:
    return (
        record.version,
        record.state.value,
        record.name,
        message.name,
        message.message_id,
        record.code,
        record.reason,
    )


def observe(redis_url: str, scenario: Scenario) -> tuple[Observed, Expected]:
    assert [i for batch in scenario.batches for i in batch] == scenario.deliveries
    result = asyncio.run(run(redis_url, scenario))
    assert len(result.changes) == len(scenario.deliveries)
    return result, expect(scenario)


# --- properties ----------------------------------------------------------------------------------


@pytest.mark.slow
@SETTINGS
@given(scenario=scenarios())
def test_any_order_and_duplication_ends_in_the_models_record(
    servers: tuple[str, str], redis_client: aioredis.Redis, scenario: Scenario
) -> None:
    """Property A: each delivery's outcome and the final record of every operation match the
    model, whatever the order, the duplication and the batching."""
    result, expected = observe(servers[1], scenario)

    for position, (change, (outcome, record)) in enumerate(
        zip(result.changes, expected.outcomes, strict=True)
    ):
        message = scenario.messages[scenario.deliveries[position]]
        assert change.operation_id == result.operation_ids[message.op]
        assert change.outcome is outcome, (position, message)
        if record is None:
            assert (change.snapshot, change.cursor) == (None, None)
        else:
            assert change.cursor is not None
            snapshot = change.record
            assert snapshot is not None
            assert snapshot.id == change.operation_id
            assert observed(snapshot) == record, (position, message)

    for op, operation_id in enumerate(result.operation_ids):
        stored = result.records[op]
        wanted = expected.records.get(op)
        if wanted is None:
            assert stored is None
            continue
        assert stored is not None
        assert stored.id == operation_id
        assert observed(stored) == wanted
        creating = next(c for c in result.changes if c.operation_id == operation_id and c.record)
        assert creating.record is not None
        assert stored.created_at == creating.record.created_at  # set once, at creation


@SETTINGS
@given(scenario=scenarios())
def test_version_history_and_stream_hold_exactly_the_applied_changes(
    servers: tuple[str, str], redis_client: aioredis.Redis, scenario: Scenario
) -> None:
    """Property B: ``version`` goes up by one on each applied change and only then; the history
    holds one entry per applied change (versions 1..n), and the change stream holds exactly the
    applied changes, in delivery order, each at the cursor its Change reported."""
    result, expected = observe(servers[1], scenario)

    for op in range(scenario.operations):
        mine = [(message, record) for _, message, record in expected.applied if message.op == op]
        history = result.histories[op]
        assert [entry["version"] for entry in history] == list(range(1, len(mine) + 1))
        assert [history_row(entry) for entry in history] == [
            model_history_row(message, record) for message, record in mine
        ]

    cursors = [change.cursor for change in result.changes if change.outcome is ApplyOutcome.APPLIED]
    assert [entry_id for entry_id, _ in result.stream] == cursors
    assert len(result.stream) == len(expected.applied)
    for (_, fields), (position, message, record) in zip(
        result.stream, expected.applied, strict=True
    ):
        operation_id = result.operation_ids[message.op]
        assert fields["id"] == operation_id
        assert fields["state"] == record.state.value
        assert fields["user"] == (record.user_id or "")
        assert fields["op"].encode() == result.changes[position].snapshot
        snapshot = Operation.from_snapshot(fields["op"])
        assert (snapshot.id, observed(snapshot)) == (operation_id, record)


def test_the_model_agrees_with_the_examples_of_the_contract() -> None:
    """The model itself, on the cases spelled out in contract §3 (so a property failure points at
    the script, not at the model)."""
    model = Model()
    pending = Message(0, "a", State.PENDING, "create_order", None, None, "alice")
    same_step = Message(0, "b", State.PENDING, "create_order", None, None, None)
    next_step = Message(0, "c", State.PENDING, "add_parcel", "x", "y", "bob")
    rejected = Message(0, "d", State.REJECTED, "create_order_rejected", "no_stock", "gone", None)
    late = Message(0, "e", State.COMPLETED, "order_created", None, None, None)
    outcomes: Sequence[tuple[ApplyOutcome, ModelRecord | None]] = [
        model.apply(message)
        for message in (pending, pending, same_step, next_step, rejected, late, late)
    ]
    assert [outcome for outcome, _ in outcomes] == [
        ApplyOutcome.APPLIED,
        ApplyOutcome.DUPLICATE,
        ApplyOutcome.STALE,
        ApplyOutcome.APPLIED,
        ApplyOutcome.APPLIED,
        ApplyOutcome.STALE,
        ApplyOutcome.DUPLICATE,
    ]
    assert model.records[0] == ModelRecord(
        State.REJECTED, "create_order_rejected", 3, "no_stock", "gone", "alice"
    )
    assert model.seen[0] == {"a", "b", "c", "d", "e"}  # stale ones count as seen too
