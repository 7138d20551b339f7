"""Cancelling a saga (contract §8): the coordinator's ``cancel`` racing a step on both stores,
and ``POST /operations/{id}/cancel`` end to end over the real RabbitMQ: compensation on the wire,
the rejection pushed live, the deadline stopped, and every refusal."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from operations.sagas import (
    RedisSagaStore,
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
from operations.sagas.store import Loaded
from operations.settings import Settings
from operations.states import State
from tests.api import answered, bearer, order_body
from tests.live import LiveClient
from tests.sagas_support import Harness, Sent, Wire
from tests.support import Publisher, RunningService, eventually

Token = Callable[..., str]
# A step of the gated saga, once entered, waits for its saga's gate.
ENTERED: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
GATE: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)


@dataclass
class ParcelData:
    done: list[str] = field(default_factory=list)


class GatedParcelSaga(Saga[ParcelData]):
    name = "gated_parcel"
    data_type = ParcelData

    @start("parcel_sent")
    async def sent(self, message: SagaMessage, context: SagaContext) -> None:
        self.data.done.append("sent")
        self.publish("parcels", "pick_up_parcel", {})

    @compensates("parcel_sent")
    async def unsend(self, message: SagaMessage, context: SagaContext) -> None:
        code = self.rejection.code if self.rejection else None
        self.publish("parcels", "return_parcel", {"code": code}, saga_state=State.REJECTED)

    @step("parcel_scanned")
    async def scanned(self, message: SagaMessage, context: SagaContext) -> None:
        ENTERED[self.id].set()
        await GATE[self.id].wait()
        self.data.done.append("scanned")
        self.publish("parcels", "deliver_parcel", {})

    def refuses_cancel(self) -> str | None:
        return "the parcel is scanned for delivery" if "scanned" in self.data.done else None


class PausingStore:
    """Another process's view of the store whose next load, once armed, waits to be resumed
    after it has read: what it then commits was decided on a state that may have moved on."""

    def __init__(self, inner: SagaStore) -> None:
        self.inner = inner
        self.armed = False
        self.read = asyncio.Event()
        self.resume = asyncio.Event()

    async def load(self, saga_name: str, saga_id: str) -> Loaded | None:
        loaded = await self.inner.load(saga_name, saga_id)
        if self.armed:
            self.armed = False
            self.read.set()
            await self.resume.wait()
        return loaded

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture(autouse=True)
def gates() -> None:
    ENTERED.clear()
    GATE.clear()


async def test_a_cancel_that_wins_the_race_with_a_step_leaves_the_step_nothing_to_do(
    store: SagaStore,
) -> None:
    h = Harness.build(store, [GatedParcelSaga])
    parcel = uuid.uuid4().hex
    await h.send("parcel_sent", correlation_id=parcel, message_id=uuid.uuid4().hex)
    stepping = asyncio.create_task(
        h.send("parcel_scanned", correlation_id=parcel, message_id=uuid.uuid4().hex)
    )
    await asyncio.wait_for(ENTERED[parcel].wait(), 5)  # the step has read the saga

    cancellation = await h.coordinator.cancel("gated_parcel", parcel, "cancelled by its owner")
    assert cancellation.accepted
    GATE[parcel].set()
    (late,) = await asyncio.wait_for(stepping, 5)
    assert late.outcome in (SagaOutcome.COMPENSATING, SagaOutcome.FINISHED)
    compensated = await h.coordinator.compensate("gated_parcel", parcel)
    assert compensated.outcome in (SagaOutcome.REJECTED, SagaOutcome.FINISHED)

    record = await h.record("gated_parcel", parcel)
    assert (record.status, record.code, record.reason) == (
        SagaStatus.REJECTED,
        "cancelled",
        "cancelled by its owner",
    )
    assert [(s.message, s.compensated) for s in record.steps] == [("parcel_sent", True)]
    assert record.data["done"] == ["sent"]
    await eventually(lambda: _published(h, ["pick_up_parcel", "return_parcel"]), "the compensation")
    assert h.publisher.named("return_parcel")[0].body == {"code": "cancelled"}
    assert await store.due(4_102_444_800.0) == []  # no deadline, no compensation left to resume


async def test_a_step_that_wins_the_race_with_a_cancel_is_kept_and_decides_it(
    store: SagaStore,
) -> None:
    """Two processes on one store: the cancel reads the saga, a step commits, and the cancel's
    commit then loses; decided again on the saga the step left, it is refused, and the step's
    update is not lost."""
    h = Harness.build(store, [GatedParcelSaga])
    pausing = PausingStore(store)
    other = Harness.build(pausing, [GatedParcelSaga])
    parcel = uuid.uuid4().hex
    await h.send("parcel_sent", correlation_id=parcel, message_id=uuid.uuid4().hex)
    pausing.armed = True
    cancelling = asyncio.create_task(other.coordinator.cancel("gated_parcel", parcel, "late"))
    await asyncio.wait_for(pausing.read.wait(), 5)
    GATE[parcel].set()
    (stepped,) = await h.send("parcel_scanned", correlation_id=parcel, message_id="m-2")
    assert stepped.outcome is SagaOutcome.HANDLED
    pausing.resume.set()

    cancellation = await asyncio.wait_for(cancelling, 5)
    assert not cancellation.accepted
    assert cancellation.reason == "the parcel is scanned for delivery"
    record = await h.record("gated_parcel", parcel)
    assert record.status is SagaStatus.PENDING and record.data["done"] == ["sent", "scanned"]
    assert other.publisher.published == []


async def _published(h: Harness, names: list[str]) -> bool:
    return h.publisher.names == names


# ------------------------------------------------------------------------------ over HTTP


@pytest.fixture
async def live(service: RunningService) -> AsyncIterator[LiveClient]:
    client = LiveClient(service.url)
    yield client
    await client.close()


async def order(http: httpx.AsyncClient, user_token: str) -> tuple[str, str, list[str]]:
    body = order_body(parcels=2)
    response = await http.post("/orders", json=body, headers=bearer(user_token))
    assert response.status_code == 202, response.text
    return response.json()["operationId"], response.json()["orderId"], body["parcelIds"]


async def saga_status(http: httpx.AsyncClient, operation: str, user_token: str) -> dict[str, Any]:
    return await answered(http, f"/operations/{operation}/saga", bearer(user_token))


async def test_cancel_mid_flight_compensates_on_the_wire_and_is_pushed_live(
    service: RunningService,
    settings: Settings,
    http: httpx.AsyncClient,
    token: Token,
    publisher: Publisher,
    wire: Wire,
    live: LiveClient,
    redis_client: aioredis.Redis,
) -> None:
    """The orders service has created the order; before the parcels are added, the owner
    cancels. CancelOrder (Saga: Rejected, code cancelled) and MakeOrderRejected go out, the user
    sees the rejection live, and the saga's deadline is gone."""
    user = str(uuid.uuid4())
    await live.connect({"token": token(user)})
    operation, order_id, _ = await order(http, token(user))

    async def waiting_for(message: str) -> bool:
        response = await http.get(f"/operations/{operation}/saga", headers=bearer(token(user)))
        if response.status_code != 200:  # the saga has not started yet
            return False
        return {"message": message, "status": "waiting"} in response.json()["path"]

    await eventually(lambda: waiting_for("order_created"), "the saga to start")
    await publisher.publish(
        "order_created", operation, user=user, saga="Pending", body={"orderId": order_id}
    )
    await eventually(lambda: waiting_for("parcel_added_to_order"), "the order to be created")
    store = RedisSagaStore(redis_client, settings.key_prefix)
    assert await store.due(4_102_444_800.0) == [("order_making", operation)]

    cancelled = await http.post(f"/operations/{operation}/cancel", headers=bearer(token(user)))
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json() == {"operationId": operation, "cancelled": True}

    rejected = await live.wait_for_state(operation, "rejected", timeout=30)
    sent = await wire.until(operation, "make_order_rejected")
    assert [m.routing_key for m in sent] == ["make_order", "cancel_order", "make_order_rejected"]
    cancel_order: Sent = sent[1]
    assert cancel_order.saga == "Rejected" and cancel_order.body["code"] == "cancelled"
    assert cancel_order.body["reason"] == f"cancelled by its owner, {user}"
    assert (rejected["code"], rejected["name"]) == ("cancelled", "cancel_order")

    saga = await saga_status(http, operation, token(user))
    assert (saga["status"], saga["code"]) == ("rejected", "cancelled")
    assert saga["path"][0] == {"message": "make_order", "status": "compensated"}
    assert await store.due(4_102_444_800.0) == []  # the deadline is stopped

    again = await http.post(f"/operations/{operation}/cancel", headers=bearer(token(user)))
    assert (again.status_code, again.json()["code"]) == (409, "not_cancellable")


async def test_the_order_maker_refuses_once_the_vehicle_is_reserved(
    service: RunningService, http: httpx.AsyncClient, token: Token, publisher: Publisher
) -> None:
    user = str(uuid.uuid4())
    operation, order_id, parcels = await order(http, token(user))
    flow = [("order_created", {"orderId": order_id})]
    flow += [("parcel_added_to_order", {"orderId": order_id, "parcelId": p}) for p in parcels]
    flow += [("vehicle_assigned_to_order", {"orderId": order_id})]
    for message, body in flow:
        await publisher.publish(message, operation, user=user, saga="Pending", body=body)

    async def reserved() -> bool:
        response = await http.get(f"/operations/{operation}/saga", headers=bearer(token(user)))
        return response.status_code == 200 and bool(response.json()["data"]["resource_reserved"])

    await eventually(reserved, "the reservation to be asked for", timeout=20)
    refused = await http.post(
        f"/operations/{operation}/cancel", headers=bearer(token("ops", "admin"))
    )
    assert (refused.status_code, refused.json()["code"]) == (409, "not_cancellable")
    assert "reserved" in refused.json()["reason"]
    assert (await saga_status(http, operation, token(user)))["status"] == "pending"


async def test_who_may_cancel_what(
    service: RunningService, http: httpx.AsyncClient, token: Token, publisher: Publisher
) -> None:
    user = str(uuid.uuid4())
    operation, _, _ = await order(http, token(user))

    async def started() -> bool:
        response = await http.get(f"/operations/{operation}/saga", headers=bearer(token(user)))
        return response.status_code == 200

    await eventually(started, "the saga to start")
    url = f"/operations/{operation}/cancel"
    assert (await http.post(url)).status_code == 401
    stranger = await http.post(url, headers=bearer(token("someone-else")))
    assert (stranger.status_code, stranger.json()["code"]) == (404, "operation_not_found")
    unknown = await http.post(f"/operations/{uuid.uuid4()}/cancel", headers=bearer(token(user)))
    assert unknown.status_code == 404

    untracked = str(uuid.uuid4())  # an operation no saga drives
    await publisher.publish("create_order", untracked, user=user, saga="Pending")

    async def tracked() -> bool:
        response = await http.get(f"/operations/{untracked}", headers=bearer(token(user)))
        return response.status_code == 200

    await eventually(tracked, "the untracked operation to be recorded")
    no_saga = await http.post(f"/operations/{untracked}/cancel", headers=bearer(token(user)))
    assert (no_saga.status_code, no_saga.json()["code"]) == (409, "not_cancellable")
    assert "no saga" in no_saga.json()["reason"]

    by_admin = await http.post(url, headers=bearer(token("ops", "admin")))
    assert by_admin.status_code == 202

    async def rejected() -> dict[str, Any] | None:
        saga = await saga_status(http, operation, token(user))
        return saga if saga["status"] == "rejected" else None

    saga = await eventually(rejected, "the cancelled saga to be compensated")
    assert saga["reason"] == "cancelled by an admin, ops"


def test_the_openapi_document_lists_every_status_cancel_answers() -> None:
    from operations.http import openapi

    responses = openapi.document()["paths"]["/operations/{id}/cancel"]["post"]["responses"]
    assert set(responses) == {"202", "400", "401", "404", "409", "413", "503"}
