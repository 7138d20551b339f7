"""Components with a lifecycle: the owner of the background tasks, the service's parts started
from one list and stopped in reverse, a cancel's compensation cancelled at stop, and one named
AMQP connection per role for a real ``operations serve``."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import httpx
import orjson
import pytest
from aio_pika.abc import AbstractRobustConnection

from operations import lifecycle
from operations.errors import TokenError
from operations.lifecycle import Part
from operations.metrics import Registry
from operations.sagas import Saga, SagaContext, SagaMessage, compensates, start
from operations.service import Service
from operations.settings import Settings
from operations.tasks import BackgroundTasks
from tests.dead_letter_support import copy_headers, letters, put_copies
from tests.identity_provider import IdentityProvider, claims
from tests.support import SERVICES, eventually, serve_process, start_service

Token = Callable[..., str]

# -- the owner of the background tasks -----------------------------------------------------


async def test_a_failing_task_is_logged_once_with_its_name_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Registry()
    tasks = BackgroundTasks(metrics)
    steady_started = asyncio.Event()

    async def steady() -> None:
        steady_started.set()
        await asyncio.Event().wait()

    async def doomed() -> None:
        raise RuntimeError("the pass broke")

    with caplog.at_level(logging.ERROR, logger="operations.tasks"):
        running = tasks.start("steady-pass", steady())
        failing = tasks.start("doomed-pass", doomed())
        await asyncio.wait_for(steady_started.wait(), 5)
        await asyncio.wait({failing}, timeout=5)
        await asyncio.sleep(0)  # the done callbacks run on the next turn of the loop

    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert [record.getMessage() for record in errors] == ["background task doomed-pass failed"]
    assert errors[0].exc_info is not None and "the pass broke" in str(errors[0].exc_info[1])
    assert metrics.background_task_failures.value(task="doomed-pass") == 1
    assert not running.done() and len(tasks) == 1  # the finished one is forgotten
    await tasks.stop()
    assert running.cancelled() and len(tasks) == 0


async def test_stopping_cancels_every_task_and_waits_for_them() -> None:
    tasks = BackgroundTasks()
    ended: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.append(name)
            if name == "first":  # a task started while stopping is stopped too
                tasks.start("late", forever("late"))

    started = [tasks.start(name, forever(name)) for name in ("first", "second", "third")]
    await asyncio.sleep(0)
    await tasks.stop()
    assert sorted(ended) == ["first", "late", "second", "third"]
    assert all(task.cancelled() for task in started) and len(tasks) == 0


# -- the service's parts -------------------------------------------------------------------


@dataclass
class Recorder:
    """A part of the test's own, added to a real service: it notes its start and its stop."""

    name: str
    calls: list[str]

    async def start(self) -> None:
        self.calls.append(f"start {self.name}")

    async def stop(self) -> None:
        self.calls.append(f"stop {self.name}")


async def test_the_parts_start_in_list_order_and_stop_in_reverse(
    settings: Settings, redis_client: object, amqp: object, caplog: pytest.LogCaptureFixture
) -> None:
    service = Service(replace(settings, dead_letter_keep=True), {})
    calls: list[str] = []
    service.parts.parts.insert(0, Part.of("first", Recorder("first", calls)))
    service.parts.parts.append(Part.of("last", Recorder("last", calls)))
    names = [part.name for part in service.parts.parts]
    broker = ["store layout", "tracking consumer", "sagas", "dead-letter intake", "queue depths"]
    with caplog.at_level(logging.DEBUG, logger="operations.lifecycle"):
        await service.start()
        await eventually(_true(lambda: service.consumer.ready), "the consumer to start")
        await eventually(_true(lambda: service.intake is not None and service.intake.started), "")
        await eventually(_true(lambda: service.depths.started), "the queue depths' pass to start")
        assert calls == ["start first", "start last"]
        await service.stop()
    assert calls == ["start first", "start last", "stop last", "stop first"]
    prefixes = ("operations-", "hub", "saga-", "consume")
    left = [task.get_name() for task in asyncio.all_tasks() if task.get_name().startswith(prefixes)]
    assert left == []  # every background task of the service has ended

    said = [record.getMessage() for record in caplog.records]
    started = [line.removeprefix("started the ") for line in said if line.startswith("started")]
    stopped = [line.removeprefix("stopped the ") for line in said if line.startswith("stopped")]
    assert started == [*names, *broker]
    outer = list(reversed(names))
    at = outer.index("broker parts")
    assert stopped == [*outer[:at], *reversed(broker), *outer[at:]]
    assert service.parts.started == []


def _true(check: Callable[[], bool]) -> Callable[[], Any]:
    async def checked() -> bool:
        return check()

    return checked


# -- a fetch of the identity provider's keys is cancelled when the service stops -------------


async def test_stopping_the_service_cancels_a_jwks_fetch_in_flight(
    settings: Settings, redis_client: object, amqp: object, idp: IdentityProvider
) -> None:
    """Before, the fetch was a bare task: one hanging on the provider outlived the service."""
    idp.mode = "hang"
    fetching = "operations-jwks-fetch"
    try:
        async with start_service(replace(settings, jwt_jwks_url=idp.url)) as running:
            verifier = running.service.verifier
            waiting = asyncio.create_task(verifier.verify(idp.sign(claims(), "rsa-1")))

            async def in_flight() -> bool:
                return any(task.get_name() == fetching for task in asyncio.all_tasks())

            await eventually(in_flight, "the fetch to start")
        assert [task for task in asyncio.all_tasks() if task.get_name() == fetching] == []
        with pytest.raises(TokenError):
            await asyncio.wait_for(waiting, 2.0)
    finally:
        idp.released.set()


# -- a cancel's compensation is cancelled when the service stops ---------------------------

COMPENSATING = asyncio.Event()
COMPENSATIONS_CANCELLED: list[str] = []


@dataclass
class VehicleData:
    added: bool = False


class StuckVehicleSaga(Saga[VehicleData]):
    """Its compensation never ends by itself (an unreachable service, say)."""

    name = "stuck_vehicle"
    data_type = VehicleData

    @start("add_vehicle")
    async def added(self, message: SagaMessage, context: SagaContext) -> None:
        self.data.added = True

    @compensates("add_vehicle")
    async def remove(self, message: SagaMessage, context: SagaContext) -> None:
        COMPENSATING.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            COMPENSATIONS_CANCELLED.append(self.id)
            raise


async def test_stopping_the_service_cancels_a_compensation_under_way(
    settings: Settings,
    redis_client: object,
    amqp: AbstractRobustConnection,
    token: Token,
) -> None:
    """Before, the task a cancel started was left running, unowned, after the service stopped."""
    COMPENSATING.clear()
    COMPENSATIONS_CANCELLED.clear()
    served = replace(settings, saga_types=("tests.test_lifecycle:StuckVehicleSaga",))
    operation = str(uuid.uuid4())
    admin = {"Authorization": f"Bearer {token('ops', 'admin')}"}
    async with start_service(served) as running:
        async with httpx.AsyncClient(base_url=running.url, timeout=30) as http:
            await _start_saga(amqp, operation)

            async def cancelled() -> bool:
                answer = await http.post(f"/operations/{operation}/cancel", headers=admin)
                return answer.status_code == 202

            await eventually(cancelled, "the cancel to be accepted")
            await asyncio.wait_for(COMPENSATING.wait(), 10)
        assert COMPENSATIONS_CANCELLED == []
    assert [operation] == COMPENSATIONS_CANCELLED


async def _start_saga(amqp: AbstractRobustConnection, operation: str) -> None:
    async with amqp.channel(publisher_confirms=True) as channel:
        vehicles = await channel.declare_exchange("vehicles", "topic", durable=True)
        await vehicles.publish(
            aio_pika.Message(
                b"{}",
                headers={
                    "message_context": orjson.dumps({"user": {"id": "u"}}).decode(),
                    "Saga": "Pending",
                },
                correlation_id=operation,
                message_id=uuid.uuid4().hex,
            ),
            routing_key="add_vehicle",
        )


# -- one AMQP connection per role ----------------------------------------------------------

ROLES = {"operations tracking", "operations sagas", "operations dead-letters"}
"""The connections of a process running sagas and keeping dead letters (docs/operating.md)."""


@pytest.fixture
def broker_control() -> None:
    if not os.environ.get("OPERATIONS_RUN_DIR"):
        pytest.skip("rabbitmqctl needs OPERATIONS_RUN_DIR (and OPERATIONS_AMQP_PORT) of the broker")


async def test_a_process_running_sagas_opens_one_named_connection_per_role(
    settings: Settings,
    redis_client: object,
    amqp: AbstractRobustConnection,
    token: Token,
    broker_control: None,
) -> None:
    """Before, it opened a connection each for the tracking consumer, the saga consumer, the
    saga publisher, the dead-letter intake and the redrives (on first use)."""
    vhost = unquote(urlsplit(settings.amqp_url).path.removeprefix("/")) or "/"
    before = set(await _connections(vhost))
    env = {"OPERATIONS_SAGAS": "true", "OPERATIONS_DEAD_LETTER_KEEP": "true"}
    async with serve_process(settings, env) as served:
        # A redrive publishes on the dead-letter connection, not on one more.
        await put_copies(amqp, settings.dead_letter_queue, [copy_headers()])
        admin = {"Authorization": f"Bearer {token('ops', 'admin')}"}
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:

            async def kept() -> list[dict[str, Any]]:
                return await letters(http, admin)

            (letter,) = await eventually(kept, "the dead letter to be kept")
            answer = await http.post(f"/dead-letters/{letter['id']}/redrive", headers=admin)
            assert answer.status_code == 200, answer.text

        # Other processes on this virtual host may come and go meanwhile: only connections
        # opened since, and named as the service names its own, are counted.
        mine = {
            peer: name
            for peer, name in (await _connections(vhost)).items()
            if peer not in before and name.startswith("operations ")
        }
        assert sorted(mine.values()) == sorted(ROLES), served.logs()

    async def closed() -> bool:
        return not set(mine) & set(await _connections(vhost))

    await eventually(closed, "the process's connections to be closed", timeout=30, every=0.5)


async def _connections(vhost: str) -> dict[str, str]:
    """The connections on ``vhost`` (their peer address and port) and their names (client
    property ``connection_name``), as ``rabbitmqctl list_connections`` tells them."""
    process = await asyncio.create_subprocess_exec(
        str(SERVICES),
        *("rabbitmqctl", "list_connections", "-p", vhost, "name", "client_properties"),
        *("--formatter", "json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    named = {}
    for connection in orjson.loads(stdout):
        properties = {name: value for name, _, value in connection["client_properties"]}
        named[connection["name"]] = str(properties.get("connection_name", ""))
    return named


async def test_parts_made_of_parts_stop_every_one_of_them_though_together_they_take_longer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each stop is bounded, but the broker's parts stop inside one part: its bound is theirs
    together, so a slow first stop never leaves a later part (and the tasks it holds) running."""
    monkeypatch.setattr(lifecycle, "STOP_SECONDS", 0.3)
    stopped: list[str] = []

    def slow(name: str) -> Part:
        async def stop() -> None:
            await asyncio.sleep(0.2)
            stopped.append(name)

        return Part(name, stop=stop, stop_seconds=0.3)

    retrying = lifecycle.Retrying(
        "starting",
        [slow("consumer"), slow("sagas"), slow("intake")],
        lambda *_: False,
        BackgroundTasks(),
    )
    broker = Part.of("broker parts", retrying)
    assert broker.stop_seconds >= 3 * 0.3, "the bound of parts made of parts is theirs together"
    parts = lifecycle.Parts([broker])
    await parts.start()
    await retrying.tasks.finish(5)
    assert retrying.parts.started == ["consumer", "sagas", "intake"]
    await parts.stop()
    assert stopped == ["intake", "sagas", "consumer"]
