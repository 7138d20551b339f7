"""Saga types from the user's code (contract §8): ``operations serve`` as a process loads them from
a module on ``PYTHONPATH`` named in ``OPERATIONS_SAGA_TYPES``, binds the saga queue to their
messages and gives each its own settings; every bad value stops it with exit code 2 and a message
naming what is wrong."""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis
from aio_pika.abc import AbstractRobustConnection

from operations.amqp.catalogue import Catalogue
from operations.errors import SagaTypeError
from operations.pacco.ordermaking import OrderMakingSaga
from operations.sagas import Saga, SagaContext, SagaMessage, start, step
from operations.sagas.http import path_progress
from operations.sagas.records import SagaRecord, SagaStatus, StepRecord
from operations.sagas.registry import SagaTypes
from operations.settings import DEFAULT_MESSAGES_FILE, Settings
from tests.doubles import Answer, ServiceDouble
from tests.support import Publisher, eventually, run_operations, serve_process

ORDER_MAKER = "operations.pacco.ordermaking:OrderMakingSaga"
MODULE = '''
from dataclasses import dataclass

from operations.sagas import Saga, SagaContext, SagaMessage, start, step
from operations.settings import read_setting, whole_number
from operations.states import State


@dataclass
class WelcomeData:
    email: str = ""
    greeting: str = ""


class WelcomeSaga(Saga[WelcomeData]):
    """Signs a customer up: completes the registration, then says welcome."""

    name = "welcome"
    data_type = WelcomeData
    http_start = "sign_up"

    @classmethod
    def configure(cls, environ):
        return read_setting(environ, "WELCOME_GREETING", "hello", str)

    @start("sign_up")
    async def signing_up(self, message: SagaMessage, context: SagaContext) -> None:
        self.data.email = str(message.get("email", ""))
        self.data.greeting = self.settings
        self.publish("customers", "complete_customer_registration", {"email": self.data.email})

    @step("customer_created")
    async def created(self, message: SagaMessage, context: SagaContext) -> None:
        self.publish(
            "identity",
            "signed_up",
            {"email": self.data.email, "greeting": self.data.greeting},
            saga_state=State.COMPLETED,
        )
        self.complete()


class QuietSaga(Saga[WelcomeData]):
    """Started by messages only: it sets no http_start."""

    name = "quiet"
    data_type = WelcomeData

    @start("sign_in")
    async def signing_in(self, message: SagaMessage, context: SagaContext) -> None:
        self.complete()


class TwinSaga(WelcomeSaga):
    name = "welcome"


class NotASaga:
    name = "not_a_saga"


class StrangerSaga(WelcomeSaga):
    name = "stranger"

    @step("parcel_teleported")
    async def teleported(self, message: SagaMessage, context: SagaContext) -> None:
        self.complete()


class ColonSaga(WelcomeSaga):
    name = "welcome:v2"


class StrictSaga(WelcomeSaga):
    name = "strict"

    @classmethod
    def configure(cls, environ):
        return read_setting(environ, "STRICT_LIMIT", 1, whole_number(1, 10))
'''


@pytest.fixture
def saga_module(tmp_path: Path) -> dict[str, str]:
    """A saga module in a temporary directory, and the environment that puts it on the path."""
    (tmp_path / "welcome.py").write_text(textwrap.dedent(MODULE), encoding="utf-8")
    (tmp_path / "broken.py").write_text("raise RuntimeError('half-written module')\n")
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path}


@pytest.mark.parametrize(
    ("types", "named"),
    [
        ("nowhere.at_all:WelcomeSaga", "module 'nowhere.at_all' cannot be imported"),
        ("broken:WelcomeSaga", "half-written module"),
        ("welcome:MissingSaga", "'welcome' has no 'MissingSaga'"),
        ("welcome:NotASaga", "'welcome:NotASaga' is not a subclass of operations.sagas.Saga"),
        ("welcome", "'welcome' is not an import path of the form package.module:ClassName"),
        ("welcome:WelcomeSaga,welcome:TwinSaga", "two saga types are named 'welcome'"),
        ("welcome:StrangerSaga", "'parcel_teleported', which is not in the message catalogue"),
        ("welcome:ColonSaga", "saga name 'welcome:v2' must be 1 to 100 letters, digits"),
    ],
)
async def test_every_bad_saga_type_stops_serve_with_exit_code_2(
    saga_module: dict[str, str], types: str, named: str
) -> None:
    code, _, stderr = await run_operations(
        "serve", env={**saga_module, "OPERATIONS_SAGA_TYPES": types, "OPERATIONS_PORT": "0"}
    )
    assert code == 2, stderr
    assert "invalid saga type in OPERATIONS_SAGA_TYPES" in stderr and named in stderr, stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OPERATIONS_SAGA_DEADLINE_SECONDS": "0"}, "OPERATIONS_SAGA_DEADLINE_SECONDS"),
        (
            {"OPERATIONS_SAGA_TYPES": "welcome:StrictSaga", "STRICT_LIMIT": "11"},
            "STRICT_LIMIT: must be between 1 and 10",
        ),
        ({"OPERATIONS_SAGA_TYPES": " , "}, "OPERATIONS_SAGA_TYPES: must name at least one"),
    ],
)
async def test_a_bad_setting_of_a_saga_type_stops_serve_with_exit_code_2(
    saga_module: dict[str, str], env: dict[str, str], named: str
) -> None:
    code, _, stderr = await run_operations(
        "serve", env={**saga_module, **env, "OPERATIONS_PORT": "0"}
    )
    assert code == 2, stderr
    assert "invalid setting" in stderr and named in stderr, stderr


def test_the_saga_queue_is_bound_to_the_loaded_types_messages() -> None:
    catalogue = Catalogue.load(DEFAULT_MESSAGES_FILE)
    types = SagaTypes.load([ORDER_MAKER], catalogue, {})
    bound = {(b.exchange, b.routing_key) for b in types.bindings()}
    assert bound == {(catalogue.lookup("", m).exchange, m) for m in OrderMakingSaga.steps}  # type: ignore[union-attr]
    assert ("ordermaker", "make_order") in bound and ("orders", "order_created") in bound
    with pytest.raises(SagaTypeError, match="is not one of its @start messages"):

        class Wrong(OrderMakingSaga):
            http_start = "order_created"

        SagaTypes([Wrong], catalogue)


async def test_serve_runs_a_saga_type_from_the_users_module(
    saga_module: dict[str, str],
    settings: Settings,
    redis_client: aioredis.Redis,
    amqp: AbstractRobustConnection,
    publisher: Publisher,
    token: Callable[..., str],
) -> None:
    """The user's saga next to the order-maker, in ``operations serve`` as a process: its start
    message reaches it (the saga queue is bound to it), its command is answered by a double of
    the customers service over the broker, it reads its own setting, and it completes."""
    env = {
        **saga_module,
        "OPERATIONS_SAGA_TYPES": f"welcome:WelcomeSaga, {ORDER_MAKER}, welcome:QuietSaga",
        "WELCOME_GREETING": "ahoy",
    }
    customers = [Answer("customers", "complete_customer_registration", "customer_created")]
    async with (
        serve_process(settings, env) as served,
        ServiceDouble(amqp, customers) as double,
        httpx.AsyncClient(base_url=served.url, timeout=10) as http,
    ):
        operation, user = str(uuid.uuid4()), "welcome-user"
        await publisher.publish(
            "sign_up", operation, user=user, saga="Pending", body={"email": "a@example.com"}
        )
        bearer = {"Authorization": f"Bearer {token(user)}"}

        async def finished() -> dict[str, object] | None:
            response = await http.get(f"/operations/{operation}/saga", headers=bearer)
            if response.status_code != 200 or response.json()["status"] != "completed":
                return None
            document: dict[str, object] = response.json()
            return document

        try:
            saga = await eventually(finished, "the welcome saga to complete", timeout=30)
        except AssertionError:
            one = await http.get(f"/operations/{operation}/saga", headers=bearer)
            op = await http.get(f"/operations/{operation}", headers=bearer)
            raise AssertionError(
                f"{one.text} {op.text} {double.received} {served.logs()}"
            ) from None
        assert saga["saga"] == "welcome"
        assert saga["data"] == {"email": "a@example.com", "greeting": "ahoy"}
        assert double.commands(operation) == ["complete_customer_registration"]

        async def completed() -> bool:
            response = await http.get(f"/operations/{operation}", headers=bearer)
            return response.status_code == 200 and response.json()["state"] == "completed"

        await eventually(completed, "the operation to complete", timeout=15)
        types = await http.get("/sagas/types", headers=bearer)
        assert [item["name"] for item in types.json()["items"]] == [
            "welcome",
            "order_making",
            "quiet",
        ]

        started = await http.post(
            "/sagas/welcome",
            json={"email": "b@example.com"},
            headers={**bearer, "Prefer": "wait=20"},
        )
        assert started.status_code == 200, started.text
        assert (started.json()["state"], started.json()["name"]) == ("completed", "signed_up")
        quiet = await http.post("/sagas/quiet", json={}, headers=bearer)
        assert (quiet.status_code, quiet.json()["code"]) == (404, "saga_not_found")


def test_the_path_shows_an_instances_progress() -> None:
    steps = [StepRecord("make_order", "m1", 1.0), StepRecord("order_created", "m2", 2.0)]
    record = SagaRecord("order_making", "s", SagaStatus.PENDING, {}, steps=steps)
    assert path_progress(OrderMakingSaga, record) == [
        {"message": "make_order", "status": "done"},
        {"message": "order_created", "status": "done"},
        {"message": "parcel_added_to_order", "status": "waiting"},
        {"message": "vehicle_assigned_to_order", "status": "remaining"},
        {"message": "order_approved", "status": "remaining"},
    ]
    steps[0].compensated = True
    record.status = SagaStatus.REJECTED
    assert [step["status"] for step in path_progress(OrderMakingSaga, record)] == [
        "compensated",
        "done",
        "remaining",
        "remaining",
        "remaining",
    ]


def test_the_order_maker_describes_its_shape() -> None:
    catalogue = Catalogue.load(DEFAULT_MESSAGES_FILE)
    (described,) = SagaTypes.load([ORDER_MAKER], catalogue, {}).describe()
    assert described == {
        "name": "order_making",
        "start": ["make_order"],
        "path": [
            "make_order",
            "order_created",
            "parcel_added_to_order",
            "vehicle_assigned_to_order",
            "order_approved",
        ],
        "compensations": ["make_order"],
        "httpStart": "make_order",
        "businessKeys": ["order_id", "customer_id"],
        "objectives": {
            "order_created": 30.0,
            "parcel_added_to_order": 30.0,
            "vehicle_assigned_to_order": 30.0,
            "order_approved": 30.0,
        },
    }


def test_a_subclass_keeps_its_parents_declared_path_and_a_plain_saga_gets_the_default() -> None:
    class Quicker(OrderMakingSaga):
        name = "quicker"

    assert Quicker.path == OrderMakingSaga.path

    class Plain(Saga[dict[str, str]]):
        name = "plain"

        @step("order_created")
        async def created(self, message: SagaMessage, context: SagaContext) -> None: ...

        @start("make_order")
        async def made(self, message: SagaMessage, context: SagaContext) -> None: ...

    assert Plain.path == ["make_order", "order_created"]


def test_a_types_plain_words_for_its_codes_come_with_its_sagas() -> None:
    """``Saga.reasons``: the order maker's words for Pacco's codes are served with the saga
    (``plainReason``), so the pages need not know them; a code it has no words for gets none."""
    from operations.sagas.http import saga_model

    record = SagaRecord.begun("order_making", str(uuid.uuid4()), {}, None, {}, {})
    record.status, record.code = SagaStatus.REJECTED, "reserve_resource_failed"
    shown = saga_model(record, OrderMakingSaga)
    assert shown.plain_reason == "The vehicle could not be reserved for the order."
    record.code = "something_else_failed"
    assert saga_model(record, OrderMakingSaga).plain_reason is msgspec.UNSET
    catalogue = Catalogue.load(DEFAULT_MESSAGES_FILE)
    with pytest.raises(SagaTypeError, match="its reasons must map codes to plain words"):

        class Wordless(OrderMakingSaga):
            reasons = {"create_order_failed": ""}  # noqa: RUF012

        SagaTypes([Wordless], catalogue)


def test_business_keys_and_objectives_are_checked_at_start_up() -> None:
    catalogue = Catalogue.load(DEFAULT_MESSAGES_FILE)

    class Keyless(OrderMakingSaga):
        name = "keyless"
        business_keys = ("order_id", "tracking_number")

    with pytest.raises(SagaTypeError, match=r"business_keys names fields .*tracking_number"):
        SagaTypes([Keyless], catalogue)

    class Hasty(OrderMakingSaga):
        name = "hasty"
        objective_seconds = -1.0

    with pytest.raises(SagaTypeError, match="objective_seconds must be a positive number"):
        SagaTypes([Hasty], catalogue)
    with pytest.raises(SagaTypeError, match=r"OPERATIONS_SAGA_OBJECTIVES names 'order_making\.x'"):
        SagaTypes([OrderMakingSaga], catalogue, objectives={"order_making.x": 3.0})
    with pytest.raises(ValueError, match="objective must be a positive number"):
        step("order_created", objective=0)
    types = SagaTypes([OrderMakingSaga], catalogue, objectives={"order_making.order_approved": 9})
    assert types.objectives.of("order_making", "order_approved") == 9.0
    assert types.objectives.of("order_making", "order_created") == 30.0
