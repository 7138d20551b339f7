"""The typed models (msgspec) of the saga routes: starting sagas (``POST /sagas/{name}``),
cancelling them, and reading them. They validate the routes' input and
feed the OpenAPI document, as :mod:`operations.http.models` does for the operations routes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from operations.sagas.records import SagaStatus
from operations.timestamps import Timestamp, rfc3339

MAX_BODY_BYTES = 65_536
MAX_WAIT_SECONDS = 60
MAX_LIMIT = 500
DEFAULT_LIMIT = 100
MAX_REASON = 500  # characters of a cancellation's reason

# POST /sagas/{name}: the start message's body, as it is.
SagaStartBody = Annotated[dict[str, Any], Meta(description="The start message's body, as it is.")]


class SagaStarted(msgspec.Struct, rename="camel"):
    operation_id: str


class Cancelled(msgspec.Struct, rename="camel"):
    operation_id: str
    cancelled: Annotated[bool, Meta(extra_json_schema={"const": True})] = True


class CancelRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The optional body of ``POST /operations/{id}/cancel``: why, in the canceller's words."""

    reason: (
        Annotated[
            str,
            Meta(
                max_length=MAX_REASON,
                description="Why, in the canceller's words: added to the saga's reason. One"
                " line of printable characters.",
            ),
        ]
        | None
    ) = None

    def __post_init__(self) -> None:
        if self.reason and self.reason.strip() and not self.reason.strip().isprintable():
            raise ValueError("reason must be one line of printable characters")


class ListSagas(msgspec.Struct):
    """The query of ``GET /sagas``."""

    status: SagaStatus | None = None
    limit: Annotated[int, Meta(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT


class SagaStep(msgspec.Struct, rename="camel"):
    """A step the saga took; ``compensated`` once undone, ``compensationError`` if undoing
    failed."""

    message: str
    message_id: str | None
    at: Timestamp
    body: dict[str, Any]
    compensated: bool
    compensation_error: str | None


class PathStep(msgspec.Struct):
    """A message of the saga type's happy path, and this instance's progress on it."""

    message: str
    status: Literal["done", "waiting", "remaining", "compensated"]


class SagaView(msgspec.Struct, rename="camel"):
    """A saga instance as it is shown. Times are RFC 3339 in UTC with milliseconds, as in every
    answer (:mod:`operations.timestamps`). ``messageContext`` holds the start message's user,
    name, resourceId and correlationId. ``path``, ``stepSeconds``, ``waitingFor`` and
    ``waitingSince`` are there for the saga types the service runs, and ``plainReason`` when its
    type has words for its code; ``cancellable`` only in ``GET /operations/{id}/saga``."""

    saga_name: str = msgspec.field(name="saga")
    id: str
    status: SagaStatus
    data: dict[str, Any]
    correlation_id: str | None
    message_context: dict[str, Any]
    steps: list[SagaStep]
    deadline: Timestamp | None
    reason: str | None
    code: str | None
    created_at: Timestamp
    updated_at: Timestamp
    path: list[PathStep] | UnsetType = UNSET
    step_seconds: (
        Annotated[
            dict[str, float],
            Meta(description="For each step taken: the seconds it took, by message name."),
        ]
        | UnsetType
    ) = UNSET
    waiting_for: (
        Annotated[str, Meta(description="The message a running saga waits for.")] | UnsetType | None
    ) = UNSET
    waiting_since: (
        Annotated[Timestamp, Meta(description="Since when it waits.")] | UnsetType | None
    ) = UNSET
    cancellable: (
        Annotated[bool, Meta(description="Whether a cancellation would be accepted now.")]
        | UnsetType
    ) = UNSET
    plain_reason: (
        Annotated[
            str,
            Meta(description="The saga type's plain words for its code, if it declares them."),
        ]
        | UnsetType
    ) = UNSET


class Sagas(msgspec.Struct):
    """Recent sagas, newest first."""

    items: list[SagaView]


class SagaTypeInfo(msgspec.Struct, rename="camel"):
    """A saga type, message names throughout."""

    name: str
    start: list[str]
    path: list[str]
    compensations: list[str]
    http_start: str | None = None


class SagaTypeList(msgspec.Struct):
    """``GET /sagas/types``: the saga types the service runs."""

    items: list[SagaTypeInfo]


_TIMES = ("createdAt", "updatedAt", "deadline", "waitingSince")


def shown_times(document: dict[str, Any]) -> dict[str, Any]:
    """A saga's JSON document (:meth:`SagaRecord.to_json`, times in seconds since the epoch, as
    stored) with its times in the one format, in place."""
    for name in _TIMES:
        if isinstance(document.get(name), int | float):
            document[name] = rfc3339(document[name])
    for step in document.get("steps") or ():
        if isinstance(step.get("at"), int | float):
            step["at"] = rfc3339(step["at"])
    return document
