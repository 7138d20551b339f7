"""Properties of the saga coordinator under any delivery order: the order-maker's messages for one
saga shuffled, duplicated (same message ids) and early ones re-delivered later, as the broker and
the retry queue would; and compensation exactly in reverse for any set of completed steps."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import hypothesis.strategies as st
import redis.asyncio as aioredis
from hypothesis import given, settings

from operations.pacco.ordermaking import REJECTED_EVENTS, OrderMakingSaga
from operations.sagas import (
    MemorySagaStore,
    RedisSagaStore,
    Rejection,
    Saga,
    SagaContext,
    SagaMessage,
    SagaOutcome,
    SagaStatus,
    SagaStore,
    compensates,
    start,
    step,
)
from operations.states import State
from tests.sagas_support import Harness, delete_prefix

FAR_FUTURE = 4_102_444_800.0
MAX_EARLY_RETRIES = 5
TERMINAL = ("order_approved", *REJECTED_EVENTS)


@dataclass(frozen=True)
class Delivery:
    name: str
    body: dict[str, Any]
    message_id: str


@dataclass(frozen=True)
class Scenario:
    parcels: int
    ending: str
    stream: list[Delivery]  # each message once, in the saga's own order
    deliveries: list[Delivery]  # shuffled, with duplicates
    seed: int  # where early messages come back in the queue


def order_stream(parcels: int, ending: str) -> list[Delivery]:
    order = "order-1"
    parcel_ids = [f"p{index}" for index in range(parcels)]

    def delivery(name: str, **body: Any) -> Delivery:
        return Delivery(name, {"orderId": order, **body}, uuid.uuid4().hex)

    return [
        delivery("make_order", customerId="customer-1", parcelIds=parcel_ids),
        delivery("order_created"),
        *(delivery("parcel_added_to_order", parcelId=parcel) for parcel in parcel_ids),
        delivery("vehicle_assigned_to_order"),
        delivery(ending),
    ]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    parcels = draw(st.integers(min_value=1, max_value=4))
    ending = draw(st.sampled_from(TERMINAL))
    stream = order_stream(parcels, ending)
    again = draw(st.lists(st.sampled_from(range(len(stream))), max_size=len(stream)))
    deliveries = draw(st.permutations(stream + [stream[index] for index in again]))
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    return Scenario(parcels, ending, stream, list(deliveries), seed)


async def deliver_all(
    h: Harness, saga_id: str, deliveries: list[Delivery], seed: int
) -> list[tuple[Delivery, SagaOutcome]]:
    """Deliver in order; an EARLY result goes back into the queue at a random place (the retry
    queue), at most MAX_EARLY_RETRIES times."""
    chance = random.Random(seed)
    queue = [(delivery, 0) for delivery in deliveries]  # (delivery, its retries so far)
    seen: list[tuple[Delivery, SagaOutcome]] = []
    while queue:
        delivery, retries = queue.pop(0)
        results = await h.send(
            delivery.name,
            delivery.body,
            correlation_id=saga_id,
            message_id=delivery.message_id,
            message_context={"Name": delivery.name, "User": {"Id": "u-1"}},
        )
        assert [(r.saga_name, r.saga_id) for r in results] == [("order_making", saga_id)]
        outcome = results[0].outcome
        assert outcome is not SagaOutcome.CONFLICT
        seen.append((delivery, outcome))
        if outcome is SagaOutcome.EARLY:
            retries += 1
            assert retries <= MAX_EARLY_RETRIES, "early for ever"
            # Back after some of the others; the last retry waits for everything queued.
            place = len(queue) if retries == MAX_EARLY_RETRIES else chance.randint(0, len(queue))
            queue.insert(place, (delivery, retries))
    return seen


async def records_for(store: SagaStore, saga_id: str) -> int:
    if isinstance(store, RedisSagaStore):
        keys = await store.redis.keys(store.keys.saga(f"order_making:{saga_id}"))
        everything = await store.redis.keys(f"{store.prefix}:{{*}}:saga:*")
        assert everything == keys
        return len(keys)
    assert isinstance(store, MemorySagaStore)
    assert set(store.records) <= {f"order_making:{saga_id}"}
    return len(store.records)


async def check_order_making(store: SagaStore, scenario: Scenario) -> None:
    h = Harness.build(store, [OrderMakingSaga])
    saga_id = uuid.uuid4().hex
    seen = await deliver_all(h, saga_id, scenario.deliveries, scenario.seed)

    # One saga instance for the id, finished by the terminal event of the stream.
    assert await records_for(store, saga_id) == 1
    loaded = await h.load("order_making", saga_id)
    record = loaded.record
    applied = [
        d
        for d, o in seen
        if o in (SagaOutcome.HANDLED, SagaOutcome.COMPLETED, SagaOutcome.REJECTED)
    ]

    # The step log is exactly what was applied, in order, each message once.
    assert [(s.message, s.message_id) for s in record.steps] == [
        (d.name, d.message_id) for d in applied
    ]
    assert len({s.message_id for s in record.steps}) == len(record.steps)
    assert record.steps[0].message == "make_order"
    assert record.steps[-1].message == scenario.ending
    # One commit per step; a rejected saga also commits each compensation and its ending.
    undone = [
        s for s in record.steps if s.compensated and OrderMakingSaga.steps[s.message].compensation
    ]
    rejected = record.status is not SagaStatus.COMPLETED
    assert loaded.version == len(record.steps) + (1 + len(undone) if rejected else 0)
    # Exactly one message finished the saga; everything after it was ignored, visibly.
    finishing = [
        index
        for index, (_, o) in enumerate(seen)
        if o in (SagaOutcome.COMPLETED, SagaOutcome.REJECTED, SagaOutcome.COMPENSATION_FAILED)
    ]
    assert len(finishing) == 1
    terminal = finishing[0]
    assert seen[terminal][0].name == scenario.ending
    assert all(o is SagaOutcome.FINISHED for _, o in seen[terminal + 1 :])
    assert [o for _, o in seen[:terminal]].count(SagaOutcome.HANDLED) == len(applied) - 1
    ending = seen[terminal][1]

    names = Counter(h.publisher.names)
    applied_names = Counter(d.name for d in applied)
    assert names["create_order"] == 1
    assert names["add_parcel_to_order"] == scenario.parcels * applied_names["order_created"]
    assert names["reserve_resource"] == applied_names["vehicle_assigned_to_order"]
    assert names["assign_vehicle_to_order"] <= 1
    if scenario.ending == "order_approved":
        assert (record.status, ending) == (SagaStatus.COMPLETED, SagaOutcome.COMPLETED)
        assert not any(s.compensated for s in record.steps)
        assert names["cancel_order"] == names["make_order_rejected"] == 0
        assert h.publisher.names[-1] == "make_order_completed"
        assert h.publisher.published[-1].saga is State.COMPLETED
    else:
        assert (record.status, ending) == (SagaStatus.REJECTED, SagaOutcome.REJECTED)
        assert record.code == scenario.ending
        # Every step before the rejecting one is compensated, that one is not, and the only
        # compensation (make_order's) went out once, before the final event.
        assert [s.compensated for s in record.steps] == [True] * (len(record.steps) - 1) + [False]
        assert all(s.compensation_error is None for s in record.steps)
        assert names["make_order_completed"] == 0
        assert h.publisher.names[-2:] == ["cancel_order", "make_order_rejected"]
        assert names["cancel_order"] == names["make_order_rejected"] == 1
        assert h.publisher.published[-1].body["code"] == scenario.ending

    # Nothing published twice; everything carries the saga's correlation id and first context.
    ids = [m.message_id for m in h.publisher.published]
    assert len(ids) == len(set(ids))
    assert {m.correlation_id for m in h.publisher.published} == {saga_id}
    assert all(
        m.message_context == {"User": {"Id": "u-1"}, "name": m.routing_key}
        for m in h.publisher.published
    )
    assert await store.pending(FAR_FUTURE) == []
    assert await store.due(FAR_FUTURE) == []

    # The whole stream again, duplicates and all: nothing changes, nothing more is published.
    published = list(h.publisher.published)
    again = await deliver_all(h, saga_id, scenario.deliveries, scenario.seed)
    assert {outcome for _, outcome in again} == {SagaOutcome.FINISHED}
    assert await h.load("order_making", saga_id) == loaded
    assert h.publisher.published == published
    assert await records_for(store, saga_id) == 1


@settings(max_examples=300, deadline=None)
@given(scenario=scenarios())
def test_order_making_in_any_delivery_order_memory(scenario: Scenario) -> None:
    asyncio.run(check_order_making(MemorySagaStore(), scenario))


@settings(max_examples=50, deadline=None)
@given(scenario=scenarios())
def test_order_making_in_any_delivery_order_redis(
    servers: tuple[str, str], scenario: Scenario
) -> None:
    async def run() -> None:
        client = aioredis.Redis.from_url(servers[1])
        prefix = f"prop-{uuid.uuid4().hex}"
        try:
            await check_order_making(RedisSagaStore(client, prefix=prefix), scenario)
        finally:
            await delete_prefix(client, prefix)
            await client.aclose()

    asyncio.run(run())


# --------------------------------------------------------- compensation for any completed steps

LINKS = ("link_0", "link_1", "link_2", "link_3", "link_4")
WITHOUT_COMPENSATION = {"link_2"}


@dataclass
class ChainData:
    broken: str = ""
    undone: list[str] = field(default_factory=list)


class ChainSaga(Saga[ChainData]):
    """chain_started and five links, each undone by its own compensation (but link_2, which has
    none); chain_broken rejects, chain_crashed raises; ``broken`` names a compensation that
    always fails."""

    name = "chain"
    data_type = ChainData

    @start("chain_started")
    async def started(self, message: SagaMessage, context: SagaContext) -> None:
        self.data.broken = str(message.get("broken", ""))

    @compensates("chain_started")
    async def unstart(self, message: SagaMessage, context: SagaContext) -> None:
        await self._undo(message)

    @step("link_0")
    async def link_0(self, message: SagaMessage, context: SagaContext) -> None:
        self.publish("chain", "did_link_0", {})

    @compensates("link_0")
    async def unlink_0(self, message: SagaMessage, context: SagaContext) -> None:
        await self._undo(message)

    @step("link_1")
    async def link_1(self, message: SagaMessage, context: SagaContext) -> None:
        self.publish("chain", "did_link_1", {})

    @compensates("link_1")
    async def unlink_1(self, message: SagaMessage, context: SagaContext) -> None:
        await self._undo(message)

    @step("link_2")
    async def link_2(self, message: SagaMessage, context: SagaContext) -> None:
        self.publish("chain", "did_link_2", {})

    @step("link_3")
    async def link_3(self, message: SagaMessage, context: SagaContext) -> None:
        self.publish("chain", "did_link_3", {})

    @compensates("link_3")
    async def unlink_3(self, message: SagaMessage, context: SagaContext) -> None:
        await self._undo(message)

    @step("link_4")
    async def link_4(self, message: SagaMessage, context: SagaContext) -> None:
        self.publish("chain", "did_link_4", {})

    @compensates("link_4")
    async def unlink_4(self, message: SagaMessage, context: SagaContext) -> None:
        await self._undo(message)

    @step("chain_broken")
    async def broken(self, message: SagaMessage, context: SagaContext) -> None:
        self.reject("broken", "chain_broken")

    @step("chain_crashed")
    async def crashed(self, message: SagaMessage, context: SagaContext) -> None:
        self.publish("chain", "never", {})
        raise ValueError("crash")

    async def _undo(self, message: SagaMessage) -> None:
        self.publish("chain", f"undo_{message.name}", {}, saga_state=State.REJECTED)
        await asyncio.sleep(0)
        if self.data.broken == message.name:
            raise RuntimeError(f"cannot undo {message.name}")
        self.data.undone.append(message.name)

    async def on_rejected(self, rejection: Rejection, context: SagaContext) -> None:
        self.publish("chain", "chain_rejected", {"code": rejection.code}, State.REJECTED)


@st.composite
def chains(draw: st.DrawFn) -> tuple[list[str], str, str, list[str]]:
    """(links delivered, in order, with duplicates; the rejecting message; the broken
    compensation or ''; the links delivered after the rejection)."""
    links = draw(st.lists(st.sampled_from(LINKS), unique=True))
    doubled = draw(st.lists(st.sampled_from(links), max_size=3)) if links else []
    before = draw(st.permutations(links + doubled))
    ending = draw(st.sampled_from(("chain_broken", "chain_crashed")))
    broken = draw(st.sampled_from(("", "chain_started", *LINKS)))
    after = draw(st.lists(st.sampled_from(LINKS), max_size=2))
    return list(before), ending, broken, after


async def check_chain(
    before: list[str], ending: str, broken: str, after: list[str], store: SagaStore
) -> None:
    h = Harness.build(store, [ChainSaga])
    saga_id = uuid.uuid4().hex
    ids = {name: uuid.uuid4().hex for name in LINKS}
    assert (
        await h.send("chain_started", {"broken": broken}, correlation_id=saga_id, message_id="s")
    )[0].outcome is SagaOutcome.HANDLED
    for name in before:
        await h.send(name, correlation_id=saga_id, message_id=ids[name])
    (result,) = await h.send(ending, correlation_id=saga_id, message_id="end")
    for name in after:
        late = await h.send(name, correlation_id=saga_id, message_id=uuid.uuid4().hex)
        assert late[0].outcome is SagaOutcome.FINISHED

    completed = ["chain_started", *dict.fromkeys(before)]  # first delivery of each link
    reverse = [name for name in reversed(completed) if name not in WITHOUT_COMPENSATION]
    if broken in reverse:
        expected_undone = reverse[: reverse.index(broken)]
        assert result.outcome is SagaOutcome.COMPENSATION_FAILED
    else:
        expected_undone = reverse
        assert result.outcome is SagaOutcome.REJECTED
    record = await h.record("chain", saga_id)
    assert record.data["undone"] == expected_undone
    assert record.status is (
        SagaStatus.COMPENSATION_FAILED if broken in reverse else SagaStatus.REJECTED
    )
    assert [s.message for s in record.steps] == [*completed, ending]
    undone = [f"undo_{name}" for name in expected_undone]
    names = h.publisher.names
    assert names == [f"did_{n}" for n in completed[1:]] + [*undone, "chain_rejected"]
    for entry in record.steps:
        if entry.message in expected_undone:
            assert (entry.compensated, entry.compensation_error) == (True, None)
        elif entry.message == broken and broken in reverse:
            assert not entry.compensated
            assert entry.compensation_error == f"RuntimeError: cannot undo {broken}"
        elif entry.message == ending:
            assert not entry.compensated
    ids_published = [m.message_id for m in h.publisher.published]
    assert len(ids_published) == len(set(ids_published))


@settings(max_examples=300, deadline=None)
@given(chain=chains())
def test_compensation_is_the_reverse_of_the_completed_steps(
    chain: tuple[list[str], str, str, list[str]],
) -> None:
    asyncio.run(check_chain(*chain, store=MemorySagaStore()))
