"""Where sagas stand on their type's path: one instance's timings step by step (for the saga
diagram), and a whole type's load (``GET /sagas/types/{name}/steps``): how many instances wait at
each step now, and the median time instances spent getting through each step.

The time a step took is the time from the previous step of the path to this one's message (its
last one, when a step takes several messages, one per parcel for instance); the start step took
none. The load is computed from the sagas the store still holds, at most ``SAMPLE_CAP`` of each
status, so one request costs a bounded number of reads however many sagas there are."""

from __future__ import annotations

import statistics
import time

import msgspec

from operations.sagas.objectives import Objectives, waiting_for, waiting_since
from operations.sagas.records import SagaRecord, SagaStatus
from operations.sagas.registry import SagaType
from operations.sagas.store import SagaStore
from operations.timestamps import Timestamp, rfc3339

SAMPLE_CAP = 200


class StepLoad(msgspec.Struct, rename="camel"):
    """One step of a type's path: how many running instances wait for it now (``overdue``: of
    them, how many longer than its objective, counted exactly), since when the longest of them
    has waited, and how long instances took over it (median, over ``samples``)."""

    message: str
    waiting: int
    longest_wait_seconds: float | None
    median_seconds: float | None
    samples: int
    overdue: int = 0
    objective_seconds: float | None = None


class TypeSteps(msgspec.Struct, rename="camel"):
    """``GET /sagas/types/{name}/steps``: the type's path with its load, over ``sampled`` sagas;
    ``capped`` when some statuses held more than the sample took; ``at``: when it was counted."""

    saga_name: str = msgspec.field(name="saga")
    sampled: int
    capped: bool
    compensating: int
    steps: list[StepLoad]
    at: Timestamp


def _last_at(record: SagaRecord) -> dict[str, float]:
    last: dict[str, float] = {}
    for step in record.steps:
        last[step.message] = max(step.at, last.get(step.message, step.at))
    return last


def step_seconds(saga_type: SagaType, record: SagaRecord) -> dict[str, float]:
    """The time each step of the path this instance has taken took, by message."""
    last, took = _last_at(record), {}
    previous: float | None = None
    for message in saga_type.path:
        at = last.get(message)
        if at is None:
            continue
        took[message] = 0.0 if previous is None else max(0.0, at - previous)
        previous = at
    return took


async def type_steps(store: SagaStore, saga_type: SagaType, objectives: Objectives) -> TypeSteps:
    now = time.time()
    counted = await store.overdue_counts(
        [(saga_type.name, step) for step in objectives.of_type(saga_type.name)]
    )
    overdue = {step: count for (_, step), count in counted.items()}
    sampled, capped, compensating = 0, False, 0
    waiting = {message: 0 for message in saga_type.path}
    longest: dict[str, float] = {}
    durations: dict[str, list[float]] = {message: [] for message in saga_type.path}
    for status in SagaStatus:
        records = await store.recent(SAMPLE_CAP, status, saga_type.name)
        sampled += len(records)
        capped = capped or len(records) >= SAMPLE_CAP
        for record in records:
            if record.status is SagaStatus.COMPENSATING:
                compensating += 1
            awaited = waiting_for(saga_type, record)
            if awaited is not None:
                waiting[awaited] += 1
                since = waiting_since(record) or now
                longest[awaited] = max(longest.get(awaited, 0.0), now - since)
            for message, seconds in step_seconds(saga_type, record).items():
                durations[message].append(seconds)
    steps = [
        StepLoad(
            message=message,
            waiting=waiting[message],
            longest_wait_seconds=longest.get(message),
            median_seconds=statistics.median(durations[message]) if durations[message] else None,
            samples=len(durations[message]),
            overdue=overdue.get(message, 0),
            objective_seconds=objectives.of(saga_type.name, message),
        )
        for message in saga_type.path
    ]
    return TypeSteps(saga_type.name, sampled, capped, compensating, steps, rfc3339(now))
