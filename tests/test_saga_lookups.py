"""What an operator asks the saga store, against the memory and the Redis store alike: sagas by
business-key value (bounded, left when a value changes, kept until they expire), sagas overdue
at a step (counted, listed, told once, cleared when the step arrives), what a saga's last step
sent, the retry hold; and a cancellation that a saga which moved on no longer passes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis

from operations.errors import SagaTypeError
from operations.sagas import RedisSagaStore, Saga, SagaContext, SagaMessage, SagaStore, start, step
from operations.sagas.business_keys import MAX_VALUE_CHARS, MAX_VALUES, key_values
from operations.sagas.objectives import Objectives
from operations.sagas.records import SagaStatus
from tests.sagas_support import Harness
from tests.support import new_id

OBJECTIVE = 0.3


@dataclass
class ParcelData:
    order_id: str = ""
    customer_id: int = 0
    parcels: list[str] = field(default_factory=list)
    fragile: bool = False


class ParcelSaga(Saga[ParcelData]):
    name = "parcel"
    data_type = ParcelData
    path = ["parcel_ordered", "parcel_moved", "parcel_delivered"]  # noqa: RUF012
    business_keys = ("order_id", "customer_id", "parcels", "fragile")

    @start("parcel_ordered")
    async def ordered(self, message: SagaMessage, context: SagaContext) -> None:
        self.data.order_id = str(message.get("orderId"))
        self.data.customer_id = int(message.get("customerId", 0))
        self.data.parcels = list(message.get("parcels", []))
        self.data.fragile = True
        self.publish("parcels", "move_parcel", {"orderId": self.data.order_id})

    @step("parcel_moved", objective=OBJECTIVE)
    async def moved(self, message: SagaMessage, context: SagaContext) -> None:
        self.data.order_id = str(message.get("newOrderId") or self.data.order_id)
        self.publish("parcels", "deliver_parcel", {"orderId": self.data.order_id})

    @step("parcel_delivered")
    async def delivered(self, message: SagaMessage, context: SagaContext) -> None:
        self.complete()


STEPS = [("parcel", "parcel_moved")]


@pytest.fixture
def parcels(store: SagaStore) -> Harness:
    return Harness.build(store, [ParcelSaga])


async def send(h: Harness, name: str, saga_id: str, **body: object) -> None:
    (result,) = await h.send(name, body, correlation_id=saga_id, message_id=new_id())
    assert result.outcome.value in ("handled", "completed"), result


def test_key_values_are_text_bounded_and_distinct() -> None:
    data = {
        "order_id": "o-1",
        "customer_id": 42,
        "parcels": ["p-1", "o-1", "", "x" * (MAX_VALUE_CHARS + 1), *(f"q-{n}" for n in range(40))],
        "fragile": True,
    }
    values = key_values(ParcelSaga, data)
    assert values[:4] == ["o-1", "42", "p-1", "q-0"]
    assert len(values) == MAX_VALUES  # bounded whatever the data holds
    assert "True" not in values and "" not in values  # neither a flag nor an empty string


async def test_a_saga_is_found_by_any_key_until_a_value_changes(parcels: Harness) -> None:
    await send(parcels, "parcel_ordered", "s1", orderId="o-1", customerId=7, parcels=["p-1"])
    await send(parcels, "parcel_ordered", "s2", orderId="o-2", customerId=7, parcels=["p-2"])
    store = parcels.store
    assert [record.id for record in await store.holding("o-1", 10)] == ["s1"]
    assert [record.id for record in await store.holding("p-2", 10)] == ["s2"]
    assert {record.id for record in await store.holding("7", 10)} == {"s1", "s2"}
    assert [record.id for record in await store.holding("7", 1)] == ["s2"]  # newest first
    assert await store.holding("o-3", 10) == []

    await send(parcels, "parcel_moved", "s1", newOrderId="o-9")
    assert await store.holding("o-1", 10) == []
    assert [record.id for record in await store.holding("o-9", 10)] == ["s1"]
    if isinstance(store, RedisSagaStore):  # the old value's index let go of it in the same write
        assert await store.redis.exists(store.keys.business_key(0, "o-1")) == 0

    await send(parcels, "parcel_delivered", "s1")
    (finished,) = await store.holding("o-9", 10)
    assert finished.status is SagaStatus.COMPLETED  # found until it expires


async def test_a_value_index_lives_as_long_as_its_sagas(redis_client: aioredis.Redis) -> None:
    store = RedisSagaStore(redis_client, prefix=f"t-{new_id()}")
    h = Harness.build(store, [ParcelSaga])
    h.coordinator.finished_ttl_seconds = 1
    await send(h, "parcel_ordered", "a", orderId="o-a", customerId=5)
    await send(h, "parcel_ordered", "b", orderId="o-b", customerId=5)
    index = store.keys.business_key(0, "5")
    assert await redis_client.ttl(index) == -1  # persistent while one of its sagas runs
    await send(h, "parcel_moved", "a")
    await send(h, "parcel_delivered", "a")
    assert await redis_client.ttl(index) == -1  # b still runs
    await asyncio.sleep(1.1)
    await send(h, "parcel_moved", "b")  # a write to the index drops the expired member
    assert await redis_client.zrange(index, 0, -1) == [b"parcel:b"]
    await send(h, "parcel_delivered", "b")
    assert 0 < await redis_client.ttl(index) <= 3  # and it expires with its last member
    await redis_client.delete(*[key async for key in redis_client.scan_iter(f"{store.prefix}:*")])


async def test_a_saga_is_overdue_past_its_steps_objective_until_the_step_arrives(
    parcels: Harness,
) -> None:
    store = parcels.store
    await send(parcels, "parcel_ordered", "late", orderId="o-l")
    await send(parcels, "parcel_ordered", "early", orderId="o-e")
    assert await store.overdue_counts(STEPS) == {STEPS[0]: 0}
    record = (await parcels.load("parcel", "late")).record
    assert record.overdue_step == "parcel_moved"
    assert record.overdue_at == pytest.approx(record.steps[-1].at + OBJECTIVE)
    assert record.overdue is None
    await send(parcels, "parcel_moved", "early")  # on time: waits for a step without objective

    await asyncio.sleep(OBJECTIVE + 0.05)
    assert await store.overdue_counts(STEPS) == {STEPS[0]: 1}
    assert [r.id for r in await store.overdue(STEPS, 10)] == ["late"]
    assert await store.newly_overdue(STEPS, 10) == [("parcel", "late", "parcel_moved")]
    assert await store.newly_overdue(STEPS, 10) == []  # told once
    assert await store.overdue_counts(STEPS) == {STEPS[0]: 1}  # still overdue, still counted

    await send(parcels, "parcel_moved", "late")
    assert await store.overdue_counts(STEPS) == {STEPS[0]: 0}
    assert await store.overdue(STEPS, 10) == []
    assert (await parcels.load("parcel", "late")).record.overdue_step is None


def test_the_operators_objectives_win_over_the_declared_ones() -> None:
    assert Objectives([ParcelSaga], {}).steps == STEPS  # as declared: one step has one
    objectives = Objectives([ParcelSaga], {"parcel": 60.0})
    assert objectives.of("parcel", "parcel_moved") == 60.0  # over the step's declaration
    assert objectives.of("parcel", "parcel_delivered") == 60.0
    assert objectives.of("parcel", "parcel_ordered") is None  # a start is never waited for
    overridden = Objectives([ParcelSaga], {"parcel.parcel_moved": 5.0})
    assert overridden.of("parcel", "parcel_moved") == 5.0
    assert overridden.steps == [("parcel", "parcel_moved")]
    with pytest.raises(SagaTypeError, match=r"parcel\.parcel_lost"):
        Objectives([ParcelSaga], {"parcel.parcel_lost": 5.0})
    with pytest.raises(SagaTypeError, match="'boat'"):
        Objectives([ParcelSaga], {"boat": 5.0})


async def test_the_last_step_that_sent_is_kept_and_a_retry_holds(parcels: Harness) -> None:
    store = parcels.store
    await send(parcels, "parcel_ordered", "r1", orderId="o-r")
    (sent,) = await store.last_sent("parcel", "r1")
    assert (sent.message, sent.correlation_id, dict(sent.body)) == (
        "move_parcel",
        "r1",
        {"orderId": "o-r"},
    )
    assert sent.message_id == parcels.publisher.named("move_parcel")[0].message_id
    await send(parcels, "parcel_moved", "r1")
    assert [entry.message for entry in await store.last_sent("parcel", "r1")] == ["deliver_parcel"]
    assert await store.hold_retry("parcel", "r1", 5) is True
    assert await store.hold_retry("parcel", "r1", 5) is False
    await store.release_retry("parcel", "r1")
    assert await store.hold_retry("parcel", "r1", 5) is True


async def test_a_cancel_that_no_longer_matches_leaves_the_saga_alone(parcels: Harness) -> None:
    await send(parcels, "parcel_ordered", "c1", orderId="o-c")
    before = await parcels.load("parcel", "c1")
    cancellation = await parcels.coordinator.cancel(
        "parcel", "c1", "by the test", only_if=lambda record: False
    )
    assert (cancellation.accepted, cancellation.why) == (False, "moved_on")
    after = await parcels.load("parcel", "c1")
    assert (after.version, after.record.status) == (before.version, SagaStatus.PENDING)
    taken = await parcels.coordinator.cancel("parcel", "c1", "by the test", only_if=lambda r: True)
    assert (taken.accepted, taken.why) == (True, "accepted")


async def test_two_processes_tell_each_overdue_saga_once(
    redis_client: aioredis.Redis, second_redis: aioredis.Redis
) -> None:
    prefix = f"t-{new_id()}"
    one = Harness.build(RedisSagaStore(redis_client, prefix=prefix), [ParcelSaga])
    other = RedisSagaStore(second_redis, prefix=prefix)
    sagas = [f"s{n}" for n in range(30)]
    for saga_id in sagas:
        await send(one, "parcel_ordered", saga_id, orderId=f"o-{saga_id}")
    await asyncio.sleep(OBJECTIVE + 0.05)
    told = await asyncio.gather(
        *(store.newly_overdue(STEPS, 100) for store in (one.store, other, one.store, other))
    )
    ids = [saga_id for each in told for _, saga_id, _ in each]
    assert sorted(ids) == sorted(sagas)  # every one told, none twice
    assert await other.overdue_counts(STEPS) == {STEPS[0]: 30}
    await redis_client.delete(*[key async for key in redis_client.scan_iter(f"{prefix}:*")])
