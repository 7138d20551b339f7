"""Service-level objectives: how long a running saga should wait for its next step.

A step declares its objective (``@step("order_approved", objective=60)``), or its type gives one
for every step (``objective_seconds``); the operator may set either with
``OPERATIONS_SAGA_OBJECTIVES`` (``order_making=30,order_making.order_approved=120``), which wins
over what the code declares. A running saga that has waited for the step it waits for longer
than that step's objective is *overdue*: flagged, counted and listed, never rejected (that is
its deadline's work).

What a saga waits for is the first message of its type's path it has not taken yet, since its
last step (or its start).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from operations.errors import SagaTypeError
from operations.sagas.records import SagaRecord, SagaStatus

if TYPE_CHECKING:
    from operations.sagas.saga import Saga


def waiting_since(record: SagaRecord) -> float | None:
    """Since when a running saga waits for its next message: its last step, or its start."""
    if record.status is not SagaStatus.PENDING:
        return None
    return max((step.at for step in record.steps), default=record.created_at)


def waiting_for(saga_type: type[Saga[Any]], record: SagaRecord) -> str | None:
    """The step of the path a running instance waits for next, if any."""
    if record.status is not SagaStatus.PENDING:
        return None
    taken = {step.message for step in record.steps}
    return next((message for message in saga_type.path if message not in taken), None)


class Objectives:
    """Every step's objective, for the saga types the service runs."""

    def __init__(
        self, saga_types: Iterable[type[Saga[Any]]], operator: Mapping[str, float]
    ) -> None:
        """``operator``: seconds by ``type`` or ``type.step``; a name that is no saga type or
        no step of its path raises :class:`SagaTypeError`."""
        self._of: dict[tuple[str, str], float] = {}
        types = {saga_type.name: saga_type for saga_type in saga_types}
        for name in operator:
            saga_name, _, message = name.partition(".")
            saga_type = types.get(saga_name)
            if saga_type is None or (message and message not in saga_type.path):
                raise SagaTypeError(
                    f"OPERATIONS_SAGA_OBJECTIVES names {name!r}, which is no saga type the"
                    " service runs, nor a step of one's path"
                )
        for saga_type in types.values():
            for message in saga_type.path:
                spec = saga_type.steps.get(message)
                if spec is None or spec.starts:
                    continue  # a start is never waited for
                seconds = _first(
                    operator.get(f"{saga_type.name}.{message}"),
                    operator.get(saga_type.name),
                    spec.objective,
                    saga_type.objective_seconds,
                )
                if seconds is not None:
                    self._of[saga_type.name, message] = float(seconds)

    def of(self, saga_name: str, message: str) -> float | None:
        return self._of.get((saga_name, message))

    def of_type(self, saga_name: str) -> dict[str, float]:
        return {step: seconds for (name, step), seconds in self._of.items() if name == saga_name}

    @property
    def steps(self) -> list[tuple[str, str]]:
        """Every (saga type, step) that has an objective."""
        return list(self._of)

    def overdue_at(
        self, saga_type: type[Saga[Any]], record: SagaRecord
    ) -> tuple[str, float] | None:
        """The step a running saga waits for and when it becomes overdue there, if that step
        has an objective."""
        message = waiting_for(saga_type, record)
        since = waiting_since(record)
        if message is None or since is None:
            return None
        seconds = self.of(saga_type.name, message)
        return None if seconds is None else (message, since + seconds)


def _first(*candidates: float | None) -> float | None:
    return next((value for value in candidates if value is not None), None)
