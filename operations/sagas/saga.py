"""The saga: typed data, steps keyed by message name, and what a step may do.

A saga class declares its steps with decorators::

    class Shipping(Saga[ShippingData]):
        name = "shipping"
        data_type = ShippingData

        def resolve_id(self, message, context):
            return context.correlation_id

        @start("ship_parcel")
        async def ship(self, message, context):
            self.data.parcel_id = message.get("parcelId")
            self.publish("deliveries", "start_delivery", {"parcelId": self.data.parcel_id})

        @compensates("ship_parcel")
        async def unship(self, message, context):
            self.publish("deliveries", "fail_delivery", {"parcelId": self.data.parcel_id},
                         saga_state=State.REJECTED)

        @step("delivery_completed")
        async def delivered(self, message, context):
            self.complete()

A step does not publish directly: what it publishes is kept with the saga's new state and sent
only once that state is committed.

A saga type may also set ``http_start`` (the start message ``POST /sagas/{name}`` publishes),
``path`` (its happy path, message names in order), ``business_keys`` (fields of its data an
operator finds its sagas by: ``GET /sagas?key=``), ``objective_seconds`` (how long a running saga
should wait for any step, unless the step says: ``@step("delivery_completed", objective=30)``;
one waiting longer is overdue, see :mod:`operations.sagas.objectives`), override
:meth:`Saga.configure` to read its
own settings, and override :meth:`Saga.refuses_cancel` to refuse a cancellation it can no longer
undo. Its ``data_type`` is a dataclass that may hold nested dataclasses, lists, dicts, optionals,
enums and datetimes; it is stored as JSON and converted back by msgspec, so fields added later
take their defaults and fields removed later are ignored.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import msgspec

from operations.errors import SagaDataError
from operations.states import State

D = TypeVar("D")
Handler = Callable[[Any, "SagaMessage", "SagaContext"], Awaitable[None]]
_STEP = "__saga_step__"
_COMPENSATES = "__saga_compensates__"


@dataclass(frozen=True)
class SagaMessage:
    """A message as a saga sees it: its name (the routing key) and its JSON body."""

    name: str
    body: Mapping[str, Any] = field(default_factory=dict)
    message_id: str | None = None

    def get(self, key: str, default: Any = None) -> Any:
        """A body field by camelCase name; PascalCase keys are found too."""
        if key in self.body:
            return self.body[key]
        wanted = key.lower()
        for name, value in self.body.items():
            if name.lower() == wanted:
                return value
        return default


@dataclass(frozen=True)
class SagaContext:
    """Where a message comes from: its correlation id (the operation id) and the originating
    ``message_context`` (the user), which every message a saga publishes carries on."""

    correlation_id: str | None = None
    message_context: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> SagaContext:
        return cls()


@dataclass(frozen=True)
class Outgoing:
    exchange: str
    message: str
    body: Mapping[str, Any]
    saga_state: State
    message_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class Rejection:
    reason: str
    code: str | None = None


@dataclass(frozen=True)
class StepSpec:
    message: str
    starts: bool
    handler: str
    compensation: str | None = None
    objective: float | None = None
    """Seconds a running saga should wait for this step at most (None: the type's)."""


def start(message: str) -> Callable[[Handler], Handler]:
    """Mark a method as the step that starts a new saga on ``message``."""
    return _mark(message, starts=True)


def step(message: str, objective: float | None = None) -> Callable[[Handler], Handler]:
    """Mark a method as the step that handles ``message`` in a running saga; a saga waiting
    longer than ``objective`` seconds for it is overdue."""
    if objective is not None and not objective > 0:
        raise ValueError(f"step {message!r}: objective must be a positive number of seconds")
    return _mark(message, starts=False, objective=objective)


def compensates(message: str) -> Callable[[Handler], Handler]:
    """Mark a method as the compensation of the step for ``message``."""

    def mark(function: Handler) -> Handler:
        setattr(function, _COMPENSATES, message)
        return function

    return mark


def _mark(
    message: str, starts: bool, objective: float | None = None
) -> Callable[[Handler], Handler]:
    def mark(function: Handler) -> Handler:
        setattr(function, _STEP, (message, starts, objective))
        return function

    return mark


class Saga(Generic[D]):
    name: ClassVar[str]
    data_type: ClassVar[type[Any]]
    steps: ClassVar[dict[str, StepSpec]] = {}
    http_start: ClassVar[str | None] = None
    path: ClassVar[list[str]] = []
    # Plain words for the codes its sagas may end rejected with, shown to their users.
    reasons: ClassVar[dict[str, str]] = {}
    business_keys: ClassVar[tuple[str, ...]] = ()
    objective_seconds: ClassVar[float | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[str, tuple[str, bool, float | None]] = {}
        compensations: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for attribute, value in vars(klass).items():
                if hasattr(value, _STEP):
                    message, starts, objective = getattr(value, _STEP)
                    handlers[message] = (attribute, starts, objective)
                if hasattr(value, _COMPENSATES):
                    compensations[getattr(value, _COMPENSATES)] = attribute
        unknown = set(compensations) - set(handlers)
        if unknown:
            raise TypeError(f"{cls.__name__} compensates steps it does not have: {unknown}")
        cls.steps = {
            message: StepSpec(message, starts, attribute, compensations.get(message), objective)
            for message, (attribute, starts, objective) in handlers.items()
        }
        if not any("path" in vars(klass) for klass in cls.__mro__ if klass is not Saga):
            starts_first = sorted(cls.steps.values(), key=lambda spec: not spec.starts)
            cls.path = [spec.message for spec in starts_first]

    def __init__(self, saga_id: str, data: D, settings: Any = None) -> None:
        self.id = saga_id
        self.data = data
        self.settings = settings
        self.deadline: float | None = None
        self.outbox: list[Outgoing] = []
        self.completed = False
        self.rejection: Rejection | None = None

    @classmethod
    def new_data(cls) -> D:
        return cls.data_type()  # type: ignore[no-any-return]

    @classmethod
    def load_data(cls, document: Mapping[str, Any]) -> D:
        """The typed data from its stored JSON form: fields it lacks take their defaults, fields
        the class no longer has are ignored."""
        try:
            return msgspec.convert(dict(document), cls.data_type)  # type: ignore[no-any-return]
        except msgspec.ValidationError as error:
            raise SagaDataError(f"saga {cls.name}: stored data does not fit: {error}") from None

    def dump_data(self) -> dict[str, Any]:
        dumped = msgspec.to_builtins(self.data)
        if not isinstance(dumped, dict):
            raise TypeError(f"saga {self.name}: data must be a dataclass, not {type(dumped)}")
        return dumped

    @classmethod
    def configure(cls, environ: Mapping[str, str]) -> Any:
        """Read this saga type's own settings from the environment, once at start-up; what it
        returns is every instance's ``settings``. Raise ``SettingsError`` naming the variable
        for a bad value."""
        return None

    def refuses_cancel(self) -> str | None:
        """Why this saga can no longer be cancelled in its present state, or None if it can."""
        return None

    def resolve_id(self, message: SagaMessage, context: SagaContext) -> str | None:
        """The id of the saga instance this message belongs to, or None if it is not for us."""
        return context.correlation_id

    def publish(
        self,
        exchange: str,
        message: str,
        body: Mapping[str, Any],
        saga_state: State = State.PENDING,
    ) -> None:
        self.outbox.append(Outgoing(exchange, message, dict(body), saga_state))

    def complete(self) -> None:
        self.completed = True

    def reject(self, reason: str, code: str | None = None) -> None:
        self.rejection = Rejection(reason, code)

    def set_deadline(self, seconds: float, now: float | None = None) -> None:
        """Reject and compensate the saga if it has not finished ``seconds`` from now."""
        self.deadline = (time.time() if now is None else now) + seconds

    async def on_rejected(self, rejection: Rejection, context: SagaContext) -> None:
        """Called after compensation (also when a compensation failed); may publish, e.g. the
        final rejected event."""
