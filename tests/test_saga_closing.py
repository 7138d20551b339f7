"""A saga's end is its operation's end: a saga that publishes nothing with a ``Saga`` header at
its end still completes or rejects its operation, with the saga's code and reason; a cancel
ends it ``cancelled`` even when the compensation's own message has no code; and the closing,
committed with the saga's ending, is carried out by another process's relay if the committing
one dies before sending it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import redis.asyncio as aioredis

from operations.metrics import Registry
from operations.records import ApplyOutcome
from operations.sagas import Saga, SagaContext, SagaMessage, start, step
from operations.sagas.coordinator import Coordinator
from operations.sagas.endings import envelope_of, with_closing
from operations.sagas.outbox import OutboxRelay
from operations.sagas.records import OutboxEntry, SagaRecord, SagaStatus, StepRecord
from operations.sagas.store import RedisSagaStore
from operations.states import State
from operations.store.keys import Keys
from operations.store.redis_store import RedisStore
from tests.sagas_support import FakePublisher
from tests.support import ServeProcess, eventually, new_id

Token = Callable[..., str]


async def test_a_saga_that_publishes_nothing_at_its_end_closes_its_operation(
    quiet_served: ServeProcess, token: Token
) -> None:
    user = str(uuid.uuid4())
    bearer = {"Authorization": f"Bearer {token(user)}"}
    waiting = {**bearer, "Prefer": "wait=20"}
    async with httpx.AsyncClient(base_url=quiet_served.url, timeout=30) as http:
        done = await http.post(
            "/sagas/quiet_delivery", json={"deliveryId": "d-1", "plan": "complete"}, headers=waiting
        )
        assert done.status_code == 200, quiet_served.logs()
        record = done.json()
        assert (record["state"], record["code"], record["userId"]) == ("completed", None, user)
        assert record["name"] == "start_delivery"  # the message the saga ended on
        saga = (await http.get(f"/operations/{record['id']}/saga", headers=bearer)).json()
        assert saga["status"] == "completed"

        refused = await http.post(
            "/sagas/quiet_delivery", json={"deliveryId": "d-2", "plan": "refuse"}, headers=waiting
        )
        assert refused.status_code == 200, quiet_served.logs()
        record = refused.json()
        assert (record["state"], record["code"], record["reason"]) == (
            "rejected",
            "too_heavy",
            "the parcel is too heavy",
        )


async def test_a_cancel_ends_the_operation_cancelled_though_the_compensation_sends_no_code(
    quiet_served: ServeProcess, token: Token
) -> None:
    user = str(uuid.uuid4())
    bearer = {"Authorization": f"Bearer {token(user)}"}
    async with httpx.AsyncClient(base_url=quiet_served.url, timeout=30) as http:
        started = await http.post(
            "/sagas/quiet_delivery", json={"deliveryId": "d-3", "plan": "wait"}, headers=bearer
        )
        assert started.status_code == 202, started.text
        operation = started.json()["operationId"]

        async def saga_is(status: str) -> bool:
            saga = await http.get(f"/operations/{operation}/saga", headers=bearer)
            return saga.status_code == 200 and saga.json()["status"] == status

        await eventually(lambda: saga_is("pending"), "the saga to start")
        cancelled = await http.post(f"/operations/{operation}/cancel", headers=bearer)
        assert cancelled.status_code == 202, cancelled.text
        await eventually(lambda: saga_is("rejected"), "the compensation to end")

        async def rejected() -> dict[str, Any] | None:
            record = (await http.get(f"/operations/{operation}", headers=bearer)).json()
            return record if record["state"] == "rejected" else None

        record = await eventually(rejected, "the operation to be rejected")
        by = f"cancelled by its owner, {user}"
        assert (record["code"], record["reason"]) == ("cancelled", by)
        assert record["name"] == "fail_delivery"  # the compensation's message, as it was named


@dataclass
class TripData:
    booked: bool = False


class QuietTripSaga(Saga[TripData]):
    name = "quiet_trip"
    data_type = TripData

    @start("trip_booked")
    async def booked(self, message: SagaMessage, context: SagaContext) -> None:
        self.data.booked = True

    @step("trip_done")
    async def done(self, message: SagaMessage, context: SagaContext) -> None:
        self.complete()


class DiesAfterCommit(OutboxRelay):
    """The relay of a process that dies right after committing: it never sends anything."""

    async def send(self, saga_name: str, saga_id: str) -> None:
        return None


async def test_a_closing_left_by_a_process_that_died_is_carried_out_by_another(
    redis_client: aioredis.Redis, no_retry_delay: None
) -> None:
    saga_store = RedisSagaStore(redis_client, prefix="t")
    operations = RedisStore(redis_client, 600, keys=Keys("t"))
    metrics = Registry()
    dying = DiesAfterCommit(saga_store, FakePublisher(), metrics, operations=operations)
    coordinator = Coordinator([QuietTripSaga], saga_store, dying, metrics)
    trip = str(uuid.uuid4())
    context = SagaContext(trip, {"user": {"id": "ann"}})
    await coordinator.process(SagaMessage("trip_booked", {}, new_id()), context)
    await coordinator.process(SagaMessage("trip_done", {}, new_id()), SagaContext(trip))
    loaded = await saga_store.load("quiet_trip", trip)
    assert loaded is not None and loaded.record.status is SagaStatus.COMPLETED
    assert await operations.get(trip) is None  # the closing is committed, not carried out

    publisher = FakePublisher()
    survivor = OutboxRelay(saga_store, publisher, metrics, operations=operations)
    assert await survivor.flush() == 1
    record = await operations.get(trip)
    assert record is not None
    assert (record.state, record.name, record.user_id) == (State.COMPLETED, "trip_done", "ann")
    assert publisher.published == []  # a closing is applied, never sent
    assert (await saga_store.outbox("quiet_trip", trip)).entries == []

    # Carried out again (a relay that died before acknowledging it): a duplicate.
    (closing,) = with_closing(loaded.record, [])
    (again,) = await operations.apply([envelope_of(closing)])
    assert not isinstance(again, Exception) and again.outcome is ApplyOutcome.DUPLICATE


def _ending(status: SagaStatus, code: str | None = None, reason: str | None = None) -> SagaRecord:
    record = SagaRecord.begun("trip", "t-1", {}, "op-1", {"user": {"id": "ann"}}, {})
    record.steps.append(StepRecord("trip_done", None, 0.0))
    record.status, record.code, record.reason = status, code, reason
    return record


def _sent(message: str, state: State, body: dict[str, Any] | None = None) -> OutboxEntry:
    return OutboxEntry(new_id(), "trips", message, body or {}, state, "op-1", {})


def test_where_the_closing_goes_in_the_outbox() -> None:
    """After the saga's own terminal message when that ends the operation alike (it wins or
    ties, as before); before it when it would end it otherwise; last when there is none."""
    note = _sent("note_trip", State.PENDING)
    done = _sent("trip_completed", State.COMPLETED)
    completed = with_closing(_ending(SagaStatus.COMPLETED), [note, done])
    assert [(e.message, e.closes_operation) for e in completed] == [
        ("note_trip", False),
        ("trip_completed", False),
        ("trip_completed", True),
    ]

    alike = _sent("trip_rejected", State.REJECTED, {"code": "full", "reason": "no seats"})
    rejected = _ending(SagaStatus.REJECTED, "full", "no seats")
    assert [e.closes_operation for e in with_closing(rejected, [alike])] == [False, True]
    codeless = _sent("trip_rejected", State.REJECTED, {"reason": "no seats"})
    compensating = _ending(SagaStatus.COMPENSATING, "cancelled", "cancelled by its owner, ann")
    closing, message = with_closing(compensating, [codeless])
    assert closing.closes_operation and message is codeless
    assert (closing.message, closing.body["code"]) == ("trip_rejected", "cancelled")

    assert with_closing(compensating, [note]) == [note]  # the saga may still end it itself
    (quiet,) = with_closing(_ending(SagaStatus.COMPLETED), [])
    assert (quiet.message, quiet.saga_state) == ("trip_done", State.COMPLETED)
    assert with_closing(_ending(SagaStatus.PENDING), [done]) == [done]
    same = {e.message_id for e in (closing, *with_closing(_ending(SagaStatus.REJECTED), []))}
    assert len(same) == 1  # one id per saga and ending, however often it is queued
